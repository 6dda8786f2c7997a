"""Private results asked for in /settings make the member's jobs not delivered yet private, in
every server, and only those (AUD7, H1): the dashboard, buttons and /show read ``jobs.private``.
Real SQLite."""

from __future__ import annotations

import aiosqlite

from bot.policy.member_settings import MemberSettings
from db import jobs as journal
from inference.types import RenderRequest

MEMBER, OTHER_MEMBER = 11, 12
GUILD, OTHER_GUILD = 21, 22
NOW = 1_000.0


async def journaled(
    conn: aiosqlite.Connection,
    job_id: str,
    *,
    user_id: int = MEMBER,
    guild_id: int | None = GUILD,
    private: bool = False,
) -> str:
    request = RenderRequest("my diary", seed=1, steps=2).to_json()
    await journal.insert_job(
        conn,
        journal.NewJob(job_id, "imagine", user_id, guild_id, 31, request, NOW, private=private),
    )
    return job_id


async def privacy(conn: aiosqlite.Connection, job_id: str) -> tuple[bool, bool]:
    """The job's ``private`` and ``private_since_submit``."""
    job = await journal.get_job(conn, job_id)
    assert job is not None
    return job.private, job.private_since_submit


async def test_private_results_make_the_members_undelivered_server_jobs_private(
    conn: aiosqlite.Connection,
) -> None:
    queued = await journaled(conn, "a" * 16)
    running = await journaled(conn, "b" * 16, guild_id=OTHER_GUILD)  # settings are the member's
    await journal.mark_running(conn, [running], NOW)
    ended = await journaled(conn, "c" * 16)  # rendered, its result not posted yet
    await journal.mark_done(conn, ended, [], 0.1, NOW)
    failed = await journaled(conn, "d" * 16)  # its failure not posted yet
    await journal.mark_failed(conn, failed, "out of memory", NOW)
    delivered = await journaled(conn, "e" * 16)  # posted in the open: stays as posted
    await journal.mark_done(conn, delivered, [], 0.1, NOW)
    await journal.mark_delivered(conn, delivered, NOW)
    direct = await journaled(conn, "f" * 16, guild_id=None)  # direct messages: no one else's
    submitted_private = await journaled(conn, "0" * 16, private=True)
    others = await journaled(conn, "1" * 16, user_id=OTHER_MEMBER)
    settings = MemberSettings(conn, clock=lambda: NOW)

    await settings.update(MEMBER, {"steps": 20})  # private results not asked for: nothing
    assert await privacy(conn, queued) == (False, False)
    await settings.update(MEMBER, {"private_results": True})
    for job_id in (queued, running, ended, failed):
        assert await privacy(conn, job_id) == (True, True), job_id
    assert await privacy(conn, submitted_private) == (True, False)  # its response was private
    for job_id in (delivered, direct, others):
        assert await privacy(conn, job_id) == (False, False), job_id

    await settings.update(MEMBER, {"private_results": False})  # private once, private for good
    assert await privacy(conn, queued) == (True, True)
    assert (await settings.get(MEMBER)).private_results is False


async def test_a_job_journaled_after_the_setting_is_made_private_alone(
    conn: aiosqlite.Connection,
) -> None:
    """At its delivery (``History.made_private``, a fallback: the save and the admission mark
    such jobs): that one job, once, as the setting would."""
    late = await journaled(conn, "a" * 16)
    beside = await journaled(conn, "b" * 16)
    await journal.make_private(conn, late)
    assert await privacy(conn, late) == (True, True)
    assert await privacy(conn, beside) == (False, False)


async def test_a_job_journaled_after_the_save_is_made_private_by_its_admission(
    conn: aiosqlite.Connection,
) -> None:
    """Journaled public after its maker's save of private results (its submit read them
    before): private as the save made the others; not another member's, nor a direct
    message's, nor one of a member who keeps results public."""
    settings = MemberSettings(conn, clock=lambda: NOW)
    await settings.update(MEMBER, {"private_results": True})
    late = await journaled(conn, "a" * 16)
    direct = await journaled(conn, "b" * 16, guild_id=None)
    others = await journaled(conn, "c" * 16, user_id=OTHER_MEMBER)
    for job_id in (late, direct, others):
        await journal.make_private_if_kept(conn, job_id)
    assert await privacy(conn, late) == (True, True)
    assert await privacy(conn, direct) == (False, False)
    assert await privacy(conn, others) == (False, False)
    await settings.update(MEMBER, {"private_results": False})
    kept_public = await journaled(conn, "d" * 16)
    await journal.make_private_if_kept(conn, kept_public)
    assert await privacy(conn, kept_public) == (False, False)


async def test_a_delivery_posted_in_the_channel_makes_a_job_made_private_public_again(
    conn: aiosqlite.Connection,
) -> None:
    """Made private by a save that landed as its result was posted in the open: its row says
    what everyone sees. A result posted privately, or a job submitted private, stays so."""
    in_the_open, privately, submitted = (
        await journaled(conn, "a" * 16),
        await journaled(conn, "b" * 16),
        await journaled(conn, "c" * 16, private=True),
    )
    await MemberSettings(conn, clock=lambda: NOW).update(MEMBER, {"private_results": True})
    assert await journal.mark_delivered(conn, in_the_open, NOW, posted_in_channel=True)
    assert await journal.mark_delivered(conn, privately, NOW)
    assert await journal.mark_delivered(conn, submitted, NOW, posted_in_channel=True)
    assert await privacy(conn, in_the_open) == (False, False)
    assert await journal.is_private(conn, privately) and await journal.is_private(conn, submitted)
    assert await privacy(conn, privately) == (True, True)
    assert await privacy(conn, submitted) == (True, False)
