"""Refusals kept for a server's dashboard (``bot.refusals``, ``db.refusals``) on a real SQLite
file: per server, without the sentence of a member who keeps results private, never raising,
erased by /forget-me and pruned by retention."""

from __future__ import annotations

from pathlib import Path

import aiosqlite
import pytest

from bot.history import History
from bot.jobs.retention import Pruned, Retention
from bot.metrics import METRICS_REGISTRY as REGISTRY
from bot.policy.member_settings import MemberSettings
from bot.refusals import MAX_SENTENCE_CHARS, RefusalLog
from bot.user_errors import Reason
from db import refusals
from db.database import connect
from db.history import count_rows_of_user

NOW = 1_800_000_000.0
DAY = 86400.0
GUILD, OTHER_GUILD, CHANNEL = 5, 6, 9
MEMBER, PRIVATE_MEMBER = 7, 8


def counted(reason: Reason) -> float:
    return REGISTRY.get_sample_value("easel_refusals_total", {"reason": reason.value}) or 0.0


async def test_refusals_are_kept_per_server_without_a_private_members_sentence(
    conn: aiosqlite.Connection,
) -> None:
    settings = MemberSettings(conn)
    await settings.update(PRIVATE_MEMBER, {"private_results": True})
    clock = iter([NOW - 2 * DAY, NOW - 3, NOW - 2, NOW - 1, NOW])
    log = RefusalLog(conn, settings, clock=lambda: next(clock))
    quota_before = counted(Reason.QUOTA)

    await log.record(GUILD, CHANNEL, MEMBER, Reason.QUOTA, "Yesterday's refusal.")
    await log.record(GUILD, CHANNEL, MEMBER, Reason.BANNED_WORD, "x" * 1000)
    await log.record(GUILD, None, PRIVATE_MEMBER, Reason.QUOTA, "Over your quota, private.")
    await log.record(OTHER_GUILD, CHANNEL, MEMBER, Reason.MODEL, "Another server's refusal.")
    await log.record(None, CHANNEL, MEMBER, Reason.QUOTA, "A direct message's refusal.")

    kept = await refusals.latest(conn, GUILD, 10)
    assert [(r.user_id, r.channel_id, r.reason, r.sentence) for r in kept] == [
        (PRIVATE_MEMBER, None, "quota", None),
        (MEMBER, CHANNEL, "banned_word", "x" * MAX_SENTENCE_CHARS),
        (MEMBER, CHANNEL, "quota", "Yesterday's refusal."),
    ]
    assert [r.reason for r in await refusals.latest(conn, OTHER_GUILD, 10)] == ["model"]
    assert await refusals.latest(conn, GUILD, 1) == kept[:1]
    assert await refusals.counts_by_reason(conn, GUILD, since=NOW - DAY) == {
        "banned_word": 1,
        "quota": 1,
    }
    assert counted(Reason.QUOTA) == quota_before + 2  # nor is a direct message's counted
    async with conn.execute("SELECT COUNT(*) FROM refusals") as cursor:
        row = await cursor.fetchone()
    assert row is not None and row[0] == 4  # nothing for the direct message


async def test_a_refusal_that_cannot_be_written_is_logged_and_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conn = await connect(tmp_path / "easel.sqlite3")
    settings = MemberSettings(conn)
    await settings.get(MEMBER)  # in memory: the write itself is what fails
    await conn.execute("DROP TABLE refusals")
    await RefusalLog(conn, settings).record(GUILD, CHANNEL, MEMBER, Reason.LIMITS, "Too big.")
    await conn.close()
    assert f"could not record a refusal (limits) for user {MEMBER}" in caplog.text


async def test_forget_me_erases_the_members_refusals_in_every_server(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    settings = MemberSettings(conn)
    log = RefusalLog(conn, settings, clock=lambda: NOW)
    for guild in (GUILD, OTHER_GUILD):
        await log.record(guild, CHANNEL, MEMBER, Reason.INPUT, "A bad size.")
    await log.record(GUILD, CHANNEL, PRIVATE_MEMBER, Reason.INPUT, "Someone else's.")
    history = History(conn, tmp_path / "images", tmp_path / "inputs", settings, clock=lambda: NOW)
    assert await count_rows_of_user(conn, MEMBER) == 2

    await history.forget(MEMBER)

    assert await count_rows_of_user(conn, MEMBER) == 0
    assert await refusals.latest(conn, OTHER_GUILD, 10) == []
    assert [r.user_id for r in await refusals.latest(conn, GUILD, 10)] == [PRIVATE_MEMBER]


async def test_retention_prunes_refusals_older_than_it_keeps(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    at = iter([NOW - 3 * DAY, NOW - 3600])
    log = RefusalLog(conn, MemberSettings(conn), clock=lambda: next(at))
    await log.record(GUILD, CHANNEL, MEMBER, Reason.QUOTA, "Old.")
    await log.record(GUILD, CHANNEL, MEMBER, Reason.QUOTA, "Fresh.")
    images, inputs = tmp_path / "images", tmp_path / "inputs"

    assert await Retention(conn, images, inputs, 0, clock=lambda: NOW).prune() == Pruned()
    assert len(await refusals.latest(conn, GUILD, 10)) == 2  # 0 days: kept forever

    assert await Retention(conn, images, inputs, 1, clock=lambda: NOW).prune() == Pruned(refusals=1)
    assert [r.sentence for r in await refusals.latest(conn, GUILD, 10)] == ["Fresh."]
