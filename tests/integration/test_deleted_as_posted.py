"""A post of a job deleted in the moment before Easel records it (its deletion's event matches
no job yet) still withdraws the job: the result's post is recorded before the copy by DM is
sent, and a deletion is remembered a while, in its channel, for a post recorded after it.
Real SQLite."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiosqlite
import pytest

from bot.history import DELETIONS_KEPT, DELETIONS_KEPT_S, History
from bot.jobs.queue import FinishedJob
from bot.policy.member_settings import MemberSettings
from cogs.results.posting import DiscordResults
from db import jobs as journal
from inference.types import RenderRequest
from tests.integration.test_withdrawn_results import (
    CHANNEL,
    GUILD,
    MEMBER,
    NOW,
    OTHER_CHANNEL,
    history,
    stored,
)
from tests.unit.test_banned_results import Channel, done

__all__ = ["history"]  # the module's fixture, used here

RESULT = 100


async def finished(conn: aiosqlite.Connection, job_id: str) -> None:
    """A job rendered, not yet posted."""
    request = RenderRequest("a dog", seed=1, steps=2)
    new = journal.NewJob(job_id, "imagine", MEMBER, GUILD, CHANNEL, request.to_json(), NOW)
    await journal.insert_job(conn, new)
    await journal.mark_done(conn, job_id, [], 0.1, NOW)


async def withdrawn(history: History, job_id: str) -> bool:
    return (await stored(history, job_id)).withdrawn


async def test_a_post_deleted_before_it_was_recorded_withdraws_its_job(
    conn: aiosqlite.Connection, history: History
) -> None:
    """Its result, a /show post: deleted first (matching nothing), recorded next."""
    await finished(conn, "a" * 16)
    await finished(conn, "b" * 16)
    assert await history.withdraw_deleted(GUILD, CHANNEL, [RESULT]) == []
    assert not await history.result_posted("a" * 16, GUILD, CHANNEL, RESULT)  # not to show
    assert await withdrawn(history, "a" * 16)
    assert await history.withdraw_deleted(GUILD, OTHER_CHANNEL, [201]) == []
    assert await history.posted_again(await stored(history, "b" * 16), OTHER_CHANNEL, 201)
    assert await withdrawn(history, "b" * 16)


async def test_only_a_recent_deletion_in_the_posts_own_channel_withdraws(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    now = [NOW]
    history = History(conn, tmp_path, tmp_path, MemberSettings(conn), clock=lambda: now[0])
    for job_id in ("a" * 16, "b" * 16, "c" * 16):
        await finished(conn, job_id)
    await history.withdraw_deleted(GUILD, OTHER_CHANNEL, [101])  # the same id, elsewhere
    await history.result_posted("a" * 16, GUILD, CHANNEL, 101)
    await history.withdraw_deleted(GUILD, CHANNEL, [102])
    now[0] += DELETIONS_KEPT_S  # forgotten: a post is recorded within seconds of its delete
    await history.result_posted("b" * 16, GUILD, CHANNEL, 102)
    # At most DELETIONS_KEPT are kept, the oldest going first.
    await history.withdraw_deleted(GUILD, CHANNEL, range(1000, 1001 + DELETIONS_KEPT))
    await history.result_posted("c" * 16, GUILD, CHANNEL, 1000)
    assert [await withdrawn(history, j) for j in ("a" * 16, "b" * 16, "c" * 16)] == [False] * 3
    await history.result_posted("c" * 16, GUILD, CHANNEL, 1001)  # the oldest kept
    assert await withdrawn(history, "c" * 16)


def copying_results(
    history: History, monkeypatch: pytest.MonkeyPatch, send_copy: Callable[[str], Awaitable[None]]
) -> DiscordResults:
    """Results posted in the channel (as message 901), each also copied to its maker's DMs
    by ``send_copy(job id)``."""
    client = SimpleNamespace(
        get_partial_messageable=lambda _channel_id: Channel(), get_guild=lambda _guild_id: None
    )
    results = DiscordResults(cast(Any, client))
    results.history = history

    async def wants_copy(job: FinishedJob) -> bool:
        return True

    async def copy(job: FinishedJob, png: bytes) -> None:
        await send_copy(job.job_id)

    monkeypatch.setattr(results, "_wants_copy", wants_copy)
    monkeypatch.setattr(results, "_send_copy", copy)
    return results


async def test_the_result_is_recorded_before_its_copy_by_dm_is_sent(
    conn: aiosqlite.Connection, history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A moderator deletes the result while its copy goes to its maker's DMs (seconds), and
    before the queue records the delivery: the deletion's event finds the job."""
    job = done(MEMBER, GUILD)  # posted in the channel, as message 901
    await finished(conn, job.job_id)
    during_the_copy: list[list[str]] = []

    async def send_copy(_job_id: str) -> None:
        during_the_copy.append(await history.withdraw_deleted(GUILD, CHANNEL, [901]))

    results = copying_results(history, monkeypatch, send_copy)
    assert await results.deliver(job) == 901
    assert during_the_copy == [[job.job_id]]


async def _delete_the_post_first(history: History) -> None:
    assert await history.withdraw_deleted(GUILD, CHANNEL, [901]) == []  # matches no job yet


async def _forget_its_maker(history: History) -> None:
    await history.forget(MEMBER)


@pytest.mark.parametrize("meanwhile", [_delete_the_post_first, _forget_its_maker])
async def test_no_copy_by_dm_of_a_job_withdrawn_or_erased_as_it_was_posted(
    conn: aiosqlite.Connection,
    history: History,
    monkeypatch: pytest.MonkeyPatch,
    meanwhile: Callable[[History], Awaitable[None]],
) -> None:
    """Its post deleted before it was recorded (the job withdrawn as it is recorded), or its
    maker's /forget-me erasing it while it was posted: its pictures go to no one's DMs."""
    job = done(MEMBER, GUILD)
    await finished(conn, job.job_id)
    copies: list[str] = []

    async def send_copy(job_id: str) -> None:
        copies.append(job_id)

    results = copying_results(history, monkeypatch, send_copy)
    await meanwhile(history)
    assert await results.deliver(job) == 901  # its post: withdrawn, or the queue's to retract
    assert copies == []
