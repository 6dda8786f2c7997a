"""The start's read-ahead reads in pages, each its own query resuming after the last row: a
member's read sent meanwhile waits on one page, not on the whole read (docs/performance.md).
The pages together give each row once, a member's guilds split across pages included."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from bot.policy.member_settings import MemberSettings, UserSettings
from db import quotas, user_settings
from db.database import connect, migrate


@pytest.fixture
async def conn(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    connection = await connect(tmp_path / "easel.sqlite3")
    await migrate(connection)
    try:
        yield connection
    finally:
        await connection.close()


async def test_spenders_come_in_pages_each_once_direct_messages_included(
    conn: aiosqlite.Connection,
) -> None:
    """Each with the time of their latest reservation (a quota period's start later, those
    whose latest is older spent nothing in it)."""
    spent = [(1, None), (1, 5), (1, 7), (2, None), (3, 4), (3, 4)]
    rows = [(f"j{i}", user, guild, 100.0 + i) for i, (user, guild) in enumerate(spent)]
    rows.append(("old", 9, 9, 10.0))  # before the periods read: not a spender
    rows.append(("older", 3, 4, 10.0))  # theirs not counted either
    await conn.executemany(
        "INSERT INTO quota_ledger (job_id, kind, user_id, guild_id, images, gpu_seconds, at)"
        " VALUES (?, 'reserve', ?, ?, 1, 1.0, ?)",
        rows,
    )
    pages = [page async for page in quotas.spenders_since(conn, 50.0, 2)]
    assert pages == [
        [((1, None), 100.0), ((1, 5), 101.0)],
        [((1, 7), 102.0), ((2, None), 103.0)],
        [((3, 4), 105.0)],
    ]


async def test_members_with_settings_come_in_pages_each_once(
    conn: aiosqlite.Connection,
) -> None:
    for user_id in (5, 3, 8, 1):
        await user_settings.put(conn, user_id, UserSettings(steps=20), 0.0)
    pages = [page async for page in user_settings.members_with_settings(conn, 2)]
    assert pages == [[1, 3], [5, 8]]


async def test_who_saved_settings_is_kept_without_a_time_each(conn: aiosqlite.Connection) -> None:
    """Settings are asked of a member, never of a time, so the read-ahead keeps their ids and
    one shared time (``memo.UNDATED``), not each one's: no more than a table of the ids alone
    (review R_L2: each one's ``updated_at`` kept too, 10.3 MiB at 99,744 members against 8.1
    MiB)."""
    ids = range(10**17, 10**17 + 20_000)
    await conn.executemany(
        "INSERT INTO user_settings (user_id, steps, updated_at) VALUES (?, 20, ?)",
        [(user_id, 1.7e9 + index) for index, user_id in enumerate(ids)],
    )
    settings = MemberSettings(conn)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await settings.read_ahead()
        kept = tracemalloc.get_traced_memory()[0] - before
        before = tracemalloc.get_traced_memory()[0]
        ids_alone = dict.fromkeys(int(str(user_id)) for user_id in ids)  # fresh, as read
        as_ids_alone = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(ids_alone) == 20_000
    # A little over for what the read leaves behind (8 % here); each one's time was 44 %.
    assert 0.9 * as_ids_alone < kept < 1.25 * as_ids_alone, (kept, as_ids_alone)
