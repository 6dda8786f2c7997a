"""Bans, kicks and timeouts made while Easel was offline: Discord sends none of them to a new
session, so at start-up Easel asks about each member with restored work in a server, before any
of it renders or is delivered. Real SQLite file, closed and opened again (the restart)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aiosqlite

from bot.bans import (
    RESTORED_CHECK_TIMEOUT_S,
    RESTORED_CHECKS_AT_ONCE,
    MemberStops,
    Standing,
    StopCause,
    StoppedMembers,
)
from bot.history import History
from bot.jobs import accounting
from bot.jobs.queue import FinishedJob, JobQueue, Submission
from bot.policy.member_settings import MemberSettings
from bot.policy.quota import Period
from db import guild_settings as settings_audit
from db import jobs as journal
from db.database import connect
from inference.types import RenderRequest
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine
from tests.support.sinks import RecordingSink

GUILD, EASEL = 5, 999
KICKED, TIMED_OUT, UNCLEAR, STAYING = 71, 72, 73, 74


def job(user_id: int, prompt: str, guild_id: int | None = GUILD) -> Submission:
    return Submission("imagine", RenderRequest(prompt, seed=user_id, steps=2), user_id, guild_id)


class UndeliverableSink(RecordingSink):
    """Discord was unreachable when the result was finished: it stays undelivered."""

    async def deliver(self, job: FinishedJob) -> int | None:
        self.arrived.set()
        raise ConnectionError("discord is down")


class StoppedAwareSink(RecordingSink):
    """Records, with each delivery, whether its maker was stopped in its server by then (what
    ``DiscordResults.deliver`` reads to post nothing)."""

    def __init__(self, stopped: StoppedMembers) -> None:
        super().__init__()
        self.stopped = stopped
        self.maker_stopped: dict[str, bool] = {}

    async def deliver(self, job: FinishedJob) -> int | None:
        self.maker_stopped[job.job_id] = self.stopped.holds(
            job.guild_id, job.user_id, began_at=job.created_at
        )
        return await super().deliver(job)


async def test_members_gone_or_timed_out_while_offline_lose_their_restored_jobs(
    tmp_path: Path,
) -> None:
    database, images = tmp_path / "easel.sqlite3", tmp_path / "images"
    # The previous process: one result finished but never delivered, jobs still queued.
    conn = await connect(database)
    before = JobQueue(conn, [DeviceWorker("cpu", lambda _: InstantEngine())], images)
    undeliverable = UndeliverableSink()
    before.set_sink(undeliverable)
    await before.start()
    rendered_before = await before.submit(job(KICKED, "finished before the kick"))
    async with asyncio.timeout(20):
        await undeliverable.arrived.wait()
    await before.stop()
    left_queued = JobQueue(conn, [], images)  # not started: its jobs stay queued
    queued = {
        user: await left_queued.submit(job(user, f"queued by {user}"))
        for user in (KICKED, TIMED_OUT, UNCLEAR, STAYING)
    }
    in_dm = await left_queued.submit(job(KICKED, "in a DM", guild_id=None))
    await conn.close()

    # The restart. Discord is asked about each member with work in the server, at once.
    restarted_at = time.time()  # the stops found at start-up come after it
    conn = await connect(database)
    engine = InstantEngine()
    queue = JobQueue(conn, [DeviceWorker("cpu", lambda _: engine)], images)
    stopped = StoppedMembers()
    sink = StoppedAwareSink(stopped)
    queue.set_sink(sink)
    history = History(conn, images, tmp_path / "inputs", MemberSettings(conn))
    stops = MemberStops(conn, queue, history, stopped)
    asked: list[tuple[int, int]] = []
    all_asked, answers_given = asyncio.Event(), asyncio.Event()
    timeout_ends = time.time() + 600.0

    async def standing(guild_id: int, user_id: int) -> Standing:
        asked.append((guild_id, user_id))
        if len(asked) == 4:
            all_asked.set()
        await answers_given.wait()
        if user_id == UNCLEAR:
            raise ConnectionError("503 Service Unavailable")  # no clear answer: kept
        return Standing(
            gone=user_id == KICKED,
            timed_out_until=timeout_ends if user_id == TIMED_OUT else None,
        )

    starting = asyncio.create_task(
        queue.start(before_delivery=lambda: stops.check_restored_jobs(standing, easel_id=EASEL))
    )
    try:
        await asyncio.wait_for(all_asked.wait(), 20)
        await asyncio.sleep(0.2)  # a dispatcher started too soon would render meanwhile
        # Undecided: nothing rendered, nothing delivered.
        assert engine.rendered == [] and sink.delivered == []
        answers_given.set()
        await starting
        await sink.wait_for(6)  # two cancelled, the withheld result and three rendered
    finally:
        answers_given.set()
        await queue.stop()
        await conn.close()

    conn = await connect(database)
    try:
        assert sorted(asked) == [(GUILD, user) for user in (KICKED, TIMED_OUT, UNCLEAR, STAYING)]
        statuses = {
            job_id: record.status
            for job_id in [*queued.values(), in_dm, rendered_before]
            if (record := await journal.get_job(conn, job_id)) is not None
        }
        assert statuses == {
            queued[KICKED]: journal.JobStatus.CANCELLED,
            queued[TIMED_OUT]: journal.JobStatus.CANCELLED,
            queued[UNCLEAR]: journal.JobStatus.DONE,
            queued[STAYING]: journal.JobStatus.DONE,
            in_dm: journal.JobStatus.DONE,  # a DM concerns no server
            rendered_before: journal.JobStatus.DONE,
        }
        # The result finished before the kick is delivered with its maker held as stopped:
        # Discord's results post nothing of it.
        assert sink.maker_stopped[rendered_before]
        assert not sink.maker_stopped[queued[STAYING]]
        assert sorted(r.prompt for r in engine.rendered) == [
            "in a DM",
            f"queued by {UNCLEAR}",
            f"queued by {STAYING}",
        ]
        audit = {entry.setting: entry for entry in await settings_audit.audit_log(conn, GUILD, 10)}
        assert set(audit) == {StopCause.GONE.audited_as, StopCause.TIMEOUT.audited_as}
        assert audit[StopCause.GONE.audited_as].new_value == f"<@{KICKED}>: {queued[KICKED]}"
        timed_out = audit[StopCause.TIMEOUT.audited_as]
        assert (timed_out.user_id, timed_out.new_value) == (
            EASEL,
            f"<@{TIMED_OUT}>: {queued[TIMED_OUT]}",
        )
        # Refunded: the timed-out member's quota counts none of their cancelled picture.
        spent = await accounting.usage_by_period(conn, TIMED_OUT, GUILD, time.time())
        assert spent[Period.DAY].images == 0
        kept = await accounting.usage_by_period(conn, STAYING, GUILD, time.time())
        assert kept[Period.DAY].images == 1
    finally:
        await conn.close()
    # Until the timeout ends, the member's work begun before the start stays stopped there.
    assert stopped.holds(GUILD, TIMED_OUT, began_at=restarted_at)
    assert not stopped.holds(GUILD, STAYING, began_at=restarted_at)


async def stops_over(
    tmp_path: Path, stopped: StoppedMembers, clock: Callable[[], float] = time.time
) -> tuple[MemberStops, JobQueue, aiosqlite.Connection]:
    """A queue left unstarted (its jobs stay queued) and the stops over it."""
    conn = await connect(tmp_path / "easel.sqlite3")
    queue = JobQueue(conn, [], tmp_path / "images")
    history = History(conn, tmp_path / "images", tmp_path / "inputs", MemberSettings(conn))
    return MemberStops(conn, queue, history, stopped, clock=clock), queue, conn


async def test_the_check_gives_up_at_its_deadline_and_keeps_the_undecided_jobs(
    tmp_path: Path,
) -> None:
    """Discord hangs: the check ends at its deadline (Easel is offline until it does), not
    after 10 s per batch of members; the members it did not decide keep their jobs."""
    stops, queue, conn = await stops_over(tmp_path, StoppedMembers())
    members = range(100, 100 + 2 * RESTORED_CHECKS_AT_ONCE)
    queued = [await queue.submit(job(user, f"queued by {user}")) for user in members]
    asked: list[int] = []

    async def hangs(guild_id: int, user_id: int) -> Standing:
        asked.append(user_id)
        await asyncio.Event().wait()  # never answered
        raise AssertionError("unreachable")

    try:
        # Without the deadline: two batches of 10 s each.
        async with asyncio.timeout(RESTORED_CHECK_TIMEOUT_S):
            await stops.check_restored_jobs(hangs, easel_id=EASEL, deadline_s=0.5)
        assert len(asked) == RESTORED_CHECKS_AT_ONCE  # the second batch was never asked
        for job_id in queued:
            record = await journal.get_job(conn, job_id)
            assert record is not None and record.status is journal.JobStatus.QUEUED
    finally:
        await conn.close()


async def test_a_deleted_servers_restored_jobs_are_cancelled_refunded_and_not_audited(
    tmp_path: Path,
) -> None:
    gone_guild = GUILD + 1
    stops, queue, conn = await stops_over(tmp_path, StoppedMembers())
    in_gone = [await queue.submit(job(user, "lost", guild_id=gone_guild)) for user in (71, 72)]
    staying = await queue.submit(job(STAYING, "kept"))

    async def standing(guild_id: int, user_id: int) -> Standing:
        return Standing(server_gone=guild_id == gone_guild)  # 404 Unknown Guild

    try:
        await stops.check_restored_jobs(standing, easel_id=EASEL)
        statuses = [
            record.status
            for job_id in [*in_gone, staying]
            if (record := await journal.get_job(conn, job_id)) is not None
        ]
        cancelled = journal.JobStatus.CANCELLED
        assert statuses == [cancelled, cancelled, journal.JobStatus.QUEUED]
        spent = await accounting.usage_by_period(conn, 71, gone_guild, time.time())
        assert spent[Period.DAY].images == 0
        assert await settings_audit.audit_log(conn, gone_guild, 10) == []
    finally:
        await conn.close()


async def test_an_automod_timeout_holds_until_the_end_discord_gives(tmp_path: Path) -> None:
    """AutoMod's audit entry names no end: the jobs are cancelled at once, then the hold
    follows the end Discord gives (a week here, past a ban's hour); unanswered, the hour."""
    now = [time.time()]
    stopped = StoppedMembers(ttl_s=3600.0, clock=lambda: now[0])
    stops, queue, conn = await stops_over(tmp_path, stopped, lambda: now[0])
    spam = await queue.submit(job(TIMED_OUT, "spam"))
    week_end = now[0] + 7 * 86400

    async def standing(guild_id: int, user_id: int) -> Standing:
        if user_id == UNCLEAR:
            raise ConnectionError("503 Service Unavailable")
        return Standing(timed_out_until=week_end)

    try:
        begun = now[0] - 1.0
        for member in (TIMED_OUT, UNCLEAR):
            await stops.cancel_for_automod_timeout(GUILD, member, standing, easel_id=EASEL)
        record = await journal.get_job(conn, spam)
        assert record is not None and record.status is journal.JobStatus.CANCELLED
        now[0] += 2 * 3600.0
        assert stopped.holds(GUILD, TIMED_OUT, began_at=begun)
        assert not stopped.holds(GUILD, UNCLEAR, began_at=begun)
        now[0] = week_end
        assert not stopped.holds(GUILD, TIMED_OUT, began_at=begun)
    finally:
        await conn.close()
