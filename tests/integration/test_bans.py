"""A ban stops the banned member's jobs in that server: the running one at once, not after
the queued ones' "Cancelled" messages went out one by one; their work still under way when
the ban came queues nothing more; and a job the ban's cancels missed ends at its start, not
rendered. Real SQLite journal and audit."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiosqlite
import discord
import pytest

from bot import bans
from bot.bans import MemberStops, Standing, StopCause, StoppedMembers
from bot.history import History
from bot.jobs import accounting
from bot.jobs.queue import FinishedJob, JobQueue, Submission
from bot.policy.member_settings import MemberSettings
from bot.services import Services
from cogs.common import submit_unless_stopped
from cogs.results.posting import DiscordResults
from db import guild_settings as settings_audit
from db import jobs as journal
from db.jobs import JobStatus
from inference.types import RenderRequest
from inference.worker import DeviceWorker
from tests.conftest import ErrorLogs
from tests.integration.test_job_end_written import ledger_kinds
from tests.support.engines import InstantEngine
from tests.support.sinks import RecordingSink

GUILD, RAIDER, EASEL = 5, 77, 999


class HeldDeliveries(RecordingSink):
    """Each delivery (one REST call to Discord, rate-limited) waits until ``opened``;
    ``attempted`` records the jobs as their delivery starts."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = asyncio.Event()
        self.attempted: list[FinishedJob] = []
        self.attempt = asyncio.Event()

    async def deliver(self, job: FinishedJob) -> int | None:
        self.attempted.append(job)
        self.attempt.set()
        await self.opened.wait()
        return await super().deliver(job)

    async def wait_for_attempt(self, job_id: str) -> FinishedJob:
        async with asyncio.timeout(20):
            while not any(job.job_id == job_id for job in self.attempted):
                self.attempt.clear()
                await self.attempt.wait()
        return next(job for job in self.attempted if job.job_id == job_id)


def raid(n: int) -> Submission:
    # Sizes apart, so that no two render as one batch.
    request = RenderRequest(f"raid {n}", seed=n, steps=60, width=256 + 64 * n)
    return Submission("imagine", request, RAIDER, GUILD)


def banned_members(conn: aiosqlite.Connection, queue: JobQueue, tmp_path: Path) -> MemberStops:
    history = History(conn, tmp_path / "images", tmp_path / "inputs", MemberSettings(conn))
    return MemberStops(conn, queue, history, StoppedMembers())


async def test_a_ban_stops_the_running_job_before_the_queued_ones_are_told(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """The queued jobs' "Cancelled" deliveries are held: the running job must be stopped
    (delivered unsuccessful) while they wait, or it would finish and post meanwhile."""
    engine = InstantEngine(seconds=30.0)  # 0.5 s a step: a cancel stops it within one
    queue = JobQueue(conn, [DeviceWorker("cpu", lambda _: engine)], tmp_path / "images")
    sink = HeldDeliveries()
    queue.set_sink(sink)
    stepped = asyncio.Event()
    queue.set_progress_listener(lambda _job_id, _step: stepped.set())
    await queue.start()
    try:
        ids = [await queue.submit(raid(n)) for n in range(4)]
        await asyncio.wait_for(stepped.wait(), 20)
        banning = asyncio.create_task(
            banned_members(conn, queue, tmp_path).cancel_jobs(
                GUILD, RAIDER, StopCause.BAN, easel_id=EASEL
            )
        )
        running = await sink.wait_for_attempt(ids[0])
        assert not running.succeeded
        sink.opened.set()
        cancelled = await banning
    finally:
        sink.opened.set()
        await queue.stop()
    assert sorted(cancelled) == sorted(ids)
    assert not engine.rendered
    # Easel made the change; the banned member is named in what it did.
    [entry] = await settings_audit.audit_log(conn, GUILD, 10)
    assert (entry.user_id, entry.setting) == (EASEL, StopCause.BAN.audited_as)
    assert entry.new_value == f"<@{RAIDER}>: " + ", ".join(cancelled)


async def test_work_under_way_when_the_ban_came_queues_nothing_more(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """A ``--repeat``'s later jobs and a mask found in words are submitted after the
    acknowledgement: once the member is banned there they queue nothing; one journaling while
    the ban comes is cancelled on its way out. Other servers and DMs are not concerned, nor
    work begun after the ban (a kicked member who joined again)."""
    # Not started: what is journaled stays queued, for ``unfinished`` to list.
    queue = JobQueue(conn, [DeviceWorker("cpu", lambda _: InstantEngine())], tmp_path / "i")
    queue.set_sink(RecordingSink())
    now = [1000.0]
    recent = StoppedMembers(clock=lambda: now[0])
    services = cast(Services, SimpleNamespace(stopped_members=recent))
    history = History(conn, tmp_path / "i", tmp_path / "in", MemberSettings(conn))
    acknowledged_at = now[0] - 5.0  # the command, acknowledged before the ban
    recent.add(GUILD, RAIDER)
    assert await submit_unless_stopped(services, queue, raid(0), began_at=acknowledged_at) is None
    assert await history.unfinished(RAIDER, guild_id=GUILD) == []
    elsewhere = Submission("imagine", raid(1).request, RAIDER, GUILD + 1)
    assert await submit_unless_stopped(services, queue, elsewhere, began_at=acknowledged_at)

    recent.forget(GUILD, RAIDER)
    journal_then_ban = queue.submit

    async def banned_while_journaling(submission: Submission) -> str:
        job_id = await journal_then_ban(submission)
        recent.add(GUILD, RAIDER)  # the ban's handler ran during the submit's awaits
        return job_id

    queue.submit = banned_while_journaling  # type: ignore[method-assign]
    journaled = await submit_unless_stopped(services, queue, raid(2), began_at=acknowledged_at)
    assert journaled is not None
    assert await history.unfinished(RAIDER, guild_id=GUILD) == []
    state = await queue.state(journaled)
    assert state is not None and state.status is JobStatus.CANCELLED

    queue.submit = journal_then_ban  # type: ignore[method-assign]
    now[0] += 60.0
    after_the_ban = await submit_unless_stopped(services, queue, raid(3), began_at=now[0])
    assert [line.job_id for line in await history.unfinished(RAIDER, guild_id=GUILD)] == [
        after_the_ban
    ]


class StartsAJobAtTheSecondRead:
    """A connection on which ``job_id`` moves from queued to running (its device picked it
    up) just before the second statement runs: an interleaving of a reader's awaits with the
    device's ``mark_running``."""

    def __init__(self, conn: aiosqlite.Connection, job_id: str) -> None:
        self._conn = conn
        self._job_id = job_id
        self.statements = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    @contextlib.asynccontextmanager
    async def execute(self, sql: str, parameters: Any = ()) -> AsyncIterator[aiosqlite.Cursor]:
        self.statements += 1
        if self.statements == 2:
            await journal.mark_running(self._conn, [self._job_id], time.time())
        async with self._conn.execute(sql, parameters) as cursor:
            yield cursor


async def test_the_ban_reads_the_members_jobs_at_one_instant(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """The member's unfinished jobs (which the ban cancels) are read in one statement: a job
    that moves from queued to running between two reads would be in neither."""
    queue = JobQueue(conn, [DeviceWorker("cpu", lambda _: InstantEngine())], tmp_path / "i")
    job_id = await queue.submit(raid(0))
    starting = StartsAJobAtTheSecondRead(conn, job_id)
    history = History(
        cast(aiosqlite.Connection, starting), tmp_path / "i", tmp_path / "in", MemberSettings(conn)
    )
    assert [line.job_id for line in await history.unfinished(RAIDER, guild_id=GUILD)] == [job_id]


@pytest.mark.parametrize("moderator_end_h", [3.0, 0.5], ids=["lengthened", "shortened"])
async def test_a_moderators_timeout_heard_while_automods_end_is_asked_holds_over_the_answer(
    conn: aiosqlite.Connection, tmp_path: Path, moderator_end_h: float
) -> None:
    """AutoMod times the raider out for an hour; while Easel asks Discord when that ends, a
    moderator's timeout of the raider is heard: Discord's answer (read before it) leaves the
    moderator's end as it is, longer or shorter."""
    now = time.time()
    clock = [now]
    stopped = StoppedMembers(clock=lambda: clock[0])
    queue = JobQueue(conn, [DeviceWorker("cpu", lambda _: InstantEngine())], tmp_path / "images")
    history = History(conn, tmp_path / "images", tmp_path / "inputs", MemberSettings(conn))
    stops = MemberStops(conn, queue, history, stopped)
    automod_end, moderator_end = now + 3600, now + moderator_end_h * 3600

    async def asked(guild_id: int, user_id: int) -> Standing:
        await stops.cancel_jobs(
            guild_id, user_id, StopCause.TIMEOUT, easel_id=EASEL, until=moderator_end
        )
        return Standing(timed_out_until=automod_end)

    await stops.cancel_for_automod_timeout(GUILD, RAIDER, asked, easel_id=EASEL)
    earlier_work = now - 1
    for at, held in ((moderator_end - 1, True), (moderator_end + 1, False)):
        clock[0] = at
        assert stopped.holds(GUILD, RAIDER, began_at=earlier_work) is held


async def test_a_ban_whose_cancel_of_one_job_raises_cancels_and_audits_the_others(
    conn: aiosqlite.Connection, tmp_path: Path, error_logs: ErrorLogs
) -> None:
    """One cancel that raises (its notice refused) must not lose the others' outcomes, nor
    the audit entry naming them; it is logged."""
    error_logs.expect("not cancelled")
    queue = JobQueue(conn, [], tmp_path / "i")  # no device: the jobs stay queued
    queue.set_sink(RecordingSink())
    refused, other = [await queue.submit(raid(n)) for n in (0, 1)]
    cancel = queue.cancel

    async def refusing(job_id: str, by: accounting.Member, *, imposed: bool = False) -> Any:
        if job_id == refused:
            raise aiosqlite.OperationalError("database is locked")
        return await cancel(job_id, by, imposed=imposed)

    queue.cancel = refusing  # type: ignore[method-assign]
    stops = banned_members(conn, queue, tmp_path)
    assert await stops.cancel_jobs(GUILD, RAIDER, StopCause.BAN, easel_id=EASEL) == [other]
    audit = await settings_audit.audit_log(conn, GUILD, 10)
    assert [entry.new_value for entry in audit] == [f"<@{RAIDER}>: {other}"]


def gated_queue(
    conn: aiosqlite.Connection, tmp_path: Path, engine: InstantEngine
) -> tuple[JobQueue, RecordingSink, StoppedMembers, DiscordResults]:
    """A queue rendering on ``engine`` whose start gate reads the stops; a ban is heard a
    second after the jobs were journaled."""
    queue = JobQueue(conn, [DeviceWorker("cpu", lambda _: engine)], tmp_path / "i")
    sink = RecordingSink(conn)
    queue.set_sink(sink)
    stopped = StoppedMembers(clock=lambda: time.time() + 1.0)
    gate = DiscordResults(cast(discord.Client, None))
    gate.stopped_members = stopped
    queue.set_start_gate(gate)
    return queue, sink, stopped, gate


async def test_a_job_the_bans_cancels_missed_ends_at_its_start_unrendered(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    error_logs: ErrorLogs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ban's cancel of one job raised (logged), so it goes on: the start gate reads the
    stop and ends it as the ban's cancels end theirs (refunded whole, answered "Cancelled"),
    rather than renders it, GPU time spent, for its delivery to withhold. The member's job in
    another server renders."""
    error_logs.expect("not cancelled")
    engine = InstantEngine()
    queue, sink, stopped, gate = gated_queue(conn, tmp_path, engine)
    # Each start waits at the gate until the ban is done.
    banned, why_not_started = asyncio.Event(), gate.why_not_started

    async def after_the_ban(job: FinishedJob) -> str | None:
        await banned.wait()
        return await why_not_started(job)

    monkeypatch.setattr(gate, "why_not_started", after_the_ban)
    cancel = queue.cancel
    await queue.start()
    try:
        missed = await queue.submit(raid(0))
        elsewhere = await queue.submit(Submission("imagine", raid(1).request, RAIDER, GUILD + 1))

        async def refusing(job_id: str, by: accounting.Member, *, imposed: bool = False) -> Any:
            if job_id == missed:
                raise aiosqlite.OperationalError("database is locked")
            return await cancel(job_id, by, imposed=imposed)

        monkeypatch.setattr(queue, "cancel", refusing)
        history = History(conn, tmp_path / "i", tmp_path / "in", MemberSettings(conn))
        stops = MemberStops(conn, queue, history, stopped)
        assert await stops.cancel_jobs(GUILD, RAIDER, StopCause.BAN, easel_id=EASEL) == []
        banned.set()
        await sink.wait_for(2)
    finally:
        banned.set()
        await queue.stop()
    assert [request.prompt for request in engine.rendered] == [raid(1).request.prompt]
    outcomes = {job.job_id: (job.succeeded, job.error, job.withheld) for job in sink.delivered}
    assert outcomes == {missed: (False, "cancelled", None), elsewhere: (True, None, None)}
    assert await ledger_kinds(conn, missed) == ["reserve", "refund"]


@pytest.mark.parametrize("its_end", ["being written", "written", "a ban heard after the gate"])
async def test_a_job_the_start_gate_ends_before_the_bans_cancel_reaches_it_is_the_bans(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, its_end: str
) -> None:
    """The ban reads the member's jobs; before its cancel reaches the queued one, another
    member's job frees the device and the queued one starts: the start gate reads the ban and
    ends it, unrendered. The ban's own cancel then finds it ended (its end being written, or
    written and delivered), yet the ban ended it: it is among the ban's cancels, its audit
    entry and its log line, as a job the ban stopped. So for a timeout's, though a ban heard
    seconds later (as the timeout's cancels run) replaced the member's stop: the job the gate
    ended for the timeout is the timeout's, not lost between the two."""
    ban_after_a_timeout = its_end == "a ban heard after the gate"
    engine = InstantEngine(seconds=30.0)
    queue, sink, stopped, gate = gated_queue(conn, tmp_path, engine)
    rendering = asyncio.Event()
    queue.set_progress_listener(lambda _job, _step: rendering.set())
    gated, why_not_started = asyncio.Event(), gate.why_not_started

    async def telling(job: FinishedJob) -> str | None:
        why = await why_not_started(job)
        if job.user_id == RAIDER:
            gated.set()  # the queue leaves it out before it next awaits
        return why

    monkeypatch.setattr(gate, "why_not_started", telling)
    await queue.start()
    try:
        other = Submission("imagine", RenderRequest("other", seed=9, steps=60), RAIDER + 1, GUILD)
        other_job = await queue.submit(other)
        await asyncio.wait_for(rendering.wait(), 20)
        queued = await queue.submit(raid(0))
        history = History(conn, tmp_path / "i", tmp_path / "in", MemberSettings(conn))
        read = history.unfinished

        async def then_started(user_id: int, *, guild_id: int | None) -> Any:
            lines = await read(user_id, guild_id=guild_id)
            # Meanwhile: the device frees, and the queued job starts at the gate.
            await queue.cancel(other_job, accounting.Member(RAIDER + 1, GUILD))
            await asyncio.wait_for(gated.wait(), 20)
            if its_end == "written":
                await sink.wait_for(2)  # the other job's end, and the queued one's
            if ban_after_a_timeout:  # it finds the job ended, not by itself
                plain = History(conn, tmp_path / "i", tmp_path / "in", MemberSettings(conn))
                ban = MemberStops(conn, queue, plain, stopped)
                assert await ban.cancel_jobs(GUILD, RAIDER, StopCause.BAN, easel_id=EASEL) == []
            return lines

        monkeypatch.setattr(history, "unfinished", then_started)
        stops = MemberStops(conn, queue, history, stopped)
        cause = StopCause.TIMEOUT if ban_after_a_timeout else StopCause.BAN
        cancelled = await stops.cancel_jobs(GUILD, RAIDER, cause, easel_id=EASEL)
        await sink.wait_for(2)
    finally:
        await queue.stop()
    assert cancelled == [queued]
    [entry] = await settings_audit.audit_log(conn, GUILD, 10)
    assert (entry.setting, entry.new_value) == (cause.audited_as, f"<@{RAIDER}>: {queued}")
    assert raid(0).request.prompt not in [request.prompt for request in engine.rendered]
    outcomes = {job.job_id: (job.succeeded, job.error) for job in sink.delivered}
    assert outcomes[queued] == (False, "cancelled")
    assert await ledger_kinds(conn, queued) == ["reserve", "refund"]


async def test_work_an_earlier_check_left_waiting_waits_for_the_new_sessions_answer() -> None:
    """A new gateway session's check cuts the one going on short: a member it had not answered
    yet is asked about again, and their work already waiting is freed by that answer."""
    stopped = StoppedMembers()
    stopped.await_answers([("restored", 1, 7)])
    waiting = asyncio.create_task(stopped.wait_for_answer(1, 7))
    await asyncio.sleep(0)  # the restored job's wait begins
    assert stopped.await_answers([("restored", 1, 7), ("since", 1, 7)]) == [(1, 7)]
    assert stopped.answer_awaited(1, 7, "restored") and stopped.answer_awaited(1, 7, "since")
    stopped.answered(1, 7)
    await asyncio.wait_for(waiting, 5)


async def test_a_job_started_between_the_new_sessions_reads_waits_for_the_answer(
    conn: aiosqlite.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = RenderRequest("raid", seed=1).to_json()
    await journal.insert_job(
        conn, journal.NewJob("started", "imagine", RAIDER, GUILD, 9, request, time.time())
    )
    reads = journal.jobs_with_status

    async def started_meanwhile(
        conn: aiosqlite.Connection, status: JobStatus
    ) -> list[journal.JobRecord]:
        if status is JobStatus.QUEUED:  # the queue starts it just before this read
            await journal.mark_running(conn, ["started"], time.time())
        return await reads(conn, status)

    monkeypatch.setattr(journal, "jobs_with_status", started_meanwhile)
    stopped = StoppedMembers()
    stops = MemberStops(conn, cast(Any, None), cast(Any, None), stopped)
    assert await stops.await_restored_answers(running=True) == [(GUILD, RAIDER)]
    assert stopped.answer_awaited(GUILD, RAIDER, "started")


async def test_a_new_sessions_failed_read_leaves_the_check_going_on(
    monkeypatch: pytest.MonkeyPatch, error_logs: ErrorLogs
) -> None:
    """The check going on is cut short only once the new one knows whom to ask: the first
    check's member, asked already, is freed by that check's answer."""
    stopped = StoppedMembers()
    stops = MemberStops(cast(Any, None), cast(Any, None), cast(Any, None), stopped)
    reads, failed = 0, asyncio.Event()

    async def read(*, running: bool = False) -> list[tuple[int, int]]:
        nonlocal reads
        reads += 1
        if reads == 2:
            failed.set()
            raise OSError("disk I/O error")
        return stopped.await_answers([("restored", GUILD, RAIDER)])

    monkeypatch.setattr(stops, "await_restored_answers", read)
    error_logs.expect("new gateway session: the jobs to ask about were not read")
    asked, answer = asyncio.Event(), asyncio.Event()

    async def lookup(guild_id: int, user_id: int) -> Standing:
        asked.set()
        await answer.wait()
        return Standing()

    stops.start_session_checks(lookup, easel_id=EASEL)
    await asyncio.wait_for(asked.wait(), 5)
    stops.start_session_checks(lookup, easel_id=EASEL)  # its read fails
    await asyncio.wait_for(failed.wait(), 5)
    waiting = asyncio.create_task(stopped.wait_for_answer(GUILD, RAIDER))
    answer.set()
    await asyncio.wait_for(waiting, 5)
    assert not stopped.awaiting_answer(GUILD, RAIDER)
    await stops.stop_restored_checks()


async def test_a_storm_of_new_sessions_frees_a_member_by_their_first_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each new session's check asks again, but a member the first asked about waits no
    longer than that check's deadline (undecided: their work goes on), however many follow."""
    monkeypatch.setattr(bans, "RESTORED_CHECKS_DEADLINE_S", 0.5)
    stopped = StoppedMembers()
    stops = MemberStops(cast(Any, None), cast(Any, None), cast(Any, None), stopped)

    read = asyncio.Event()

    async def awaited(*, running: bool = False) -> list[tuple[int, int]]:
        read.set()
        return stopped.await_answers([("restored", GUILD, RAIDER)])

    monkeypatch.setattr(stops, "await_restored_answers", awaited)

    async def slow(guild_id: int, user_id: int) -> Standing:
        await asyncio.sleep(3600)  # Discord never answers (bounded by the check's timeout)
        return Standing()

    loop = asyncio.get_running_loop()
    stops.start_session_checks(slow, easel_id=EASEL)
    await asyncio.wait_for(read.wait(), 5)
    began = loop.time()
    waiting = asyncio.create_task(stopped.wait_for_answer(GUILD, RAIDER))
    while not waiting.done() and loop.time() - began < 3.0:  # a READY every 0.1 s
        stops.start_session_checks(slow, easel_id=EASEL)
        await asyncio.sleep(0.1)
    assert waiting.done() and loop.time() - began < 1.0
    assert not stopped.holds(GUILD, RAIDER, began_at=0.0)
    await stops.stop_restored_checks()


def test_members_a_cut_short_check_left_waiting_are_asked_first() -> None:
    stopped = StoppedMembers()
    assert stopped.await_answers([("a", GUILD, 1), ("b", GUILD, 2)]) == [(GUILD, 1), (GUILD, 2)]
    stopped.answered(GUILD, 1)
    assert stopped.await_answers([("a", GUILD, 1), ("b", GUILD, 2)]) == [(GUILD, 2), (GUILD, 1)]
