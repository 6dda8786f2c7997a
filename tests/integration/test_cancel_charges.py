"""A cancel refunds the pictures, not the GPU time already spent: a job its owner stops while
running (alone, or beside a batch partner that goes on) is charged what it used until the
stop; one cancelled while it waits costs nothing, and so does a stop its owner did not choose
(an admin's, a ban's). Real SQLite ledger."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bot.jobs.accounting import Member
from bot.jobs.queue import CancelOutcome, FinishedJob, JobQueue, Submission
from bot.policy.quota import Period, period_start
from bot.user_errors import UserError
from db import jobs as journal
from db import quotas as ledger
from inference.types import RenderRequest, StepProgress
from inference.worker import DeviceWorker
from tests.support.engines import HeldEngine, InstantEngine, SharedBatchEngine
from tests.support.scheduler_finishes import noted_finishes
from tests.support.sinks import RecordingSink, started_queue

GUILD = 5
LONE, WAITING, STOPPED_IN_BATCH, PARTNER = 1, 2, 3, 4
STOPPED_BY_ADMIN, STOPPED_BY_BAN, ADMIN = 6, 7, 8
LEFT_ALONE, REFUSED = 9, 10
REFUSED_NOW = "the rules of now refuse it"


def submission(user_id: int, width: int = 512) -> Submission:
    request = RenderRequest(f"job of {user_id}", seed=user_id, steps=20, width=width)
    return Submission("imagine", request, user_id, GUILD)


async def spent_today(conn: aiosqlite.Connection, user_id: int) -> ledger.Usage:
    return await ledger.usage(conn, user_id, GUILD, period_start(Period.DAY, time.time()))


async def stepping_queue(
    conn: aiosqlite.Connection, tmp_path: Path
) -> tuple[JobQueue, RecordingSink, InstantEngine, Callable[[str], Awaitable[None]]]:
    """A started queue on one device (0.1 s a step), its sink and engine, and a wait until a
    job reported its first step."""
    engine = InstantEngine(seconds=2.0)
    queue, sink = await started_queue(
        conn, [DeviceWorker("cpu", lambda _: engine)], tmp_path / "images"
    )
    stepped: dict[str, asyncio.Event] = {}

    def on_progress(job_id: str, _step: StepProgress) -> None:
        stepped.setdefault(job_id, asyncio.Event()).set()

    async def running(job_id: str) -> None:
        async with asyncio.timeout(20):
            await stepped.setdefault(job_id, asyncio.Event()).wait()

    queue.set_progress_listener(on_progress)
    return queue, sink, engine, running


async def test_a_cancelled_running_job_pays_its_gpu_time_and_a_waiting_one_nothing(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    queue, sink, engine, running = await stepping_queue(conn, tmp_path)

    async def cancel_once_running(job_id: str, by: Member, outcome: CancelOutcome) -> None:
        await running(job_id)
        assert await queue.cancel(job_id, by) is outcome

    try:
        lone = await queue.submit(submission(LONE, width=256))
        # These wait behind it; the two of one size then render as one batch.
        waiting = await queue.submit(submission(WAITING))
        stopped = await queue.submit(submission(STOPPED_IN_BATCH))
        await queue.submit(submission(PARTNER))
        assert await queue.cancel(waiting, Member(WAITING, GUILD)) is CancelOutcome.CANCELLED
        await cancel_once_running(lone, Member(LONE, GUILD), CancelOutcome.STOPPING)
        # An admin stopping their own job chose the stop: charged like anyone. Its partner's
        # picture renders on in the same call: it is stopped for its owner alone.
        await cancel_once_running(
            stopped,
            Member(STOPPED_IN_BATCH, GUILD, is_admin=True),
            CancelOutcome.STOPPED_IN_BATCH,
        )
        await sink.wait_for(4)
    finally:
        await queue.stop()
    assert engine.batches == [2]  # the lone job stopped; the two others rendered together
    outcomes = {job.user_id: (job.succeeded, job.error) for job in sink.delivered}
    assert outcomes == {
        LONE: (False, "cancelled"),
        WAITING: (False, "cancelled"),
        STOPPED_IN_BATCH: (False, "cancelled"),
        PARTNER: (True, None),
    }
    for user_id in (LONE, STOPPED_IN_BATCH):
        used = await spent_today(conn, user_id)
        assert used.images == 0 and used.gpu_seconds > 0
    assert await spent_today(conn, WAITING) == ledger.Usage(images=0, gpu_seconds=0.0)
    partner = await spent_today(conn, PARTNER)
    assert partner.images == 1 and partner.gpu_seconds > 0
    # Stopped at its first step of 20, it pays its share of the render until then, not the
    # share of its partner, who got the picture.
    assert (await spent_today(conn, STOPPED_IN_BATCH)).gpu_seconds < partner.gpu_seconds


async def test_a_stop_the_owner_did_not_choose_is_refunded_whole(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    queue, sink, _engine, running = await stepping_queue(conn, tmp_path)
    admin = Member(ADMIN, GUILD, is_admin=True)
    try:
        by_admin = await queue.submit(submission(STOPPED_BY_ADMIN))
        by_ban = await queue.submit(submission(STOPPED_BY_BAN, width=256))
        await running(by_admin)
        assert await queue.cancel(by_admin, admin) is CancelOutcome.STOPPING_FREE
        await running(by_ban)
        # A ban cancels as the member, but the member did not choose it.
        stop = await queue.cancel(by_ban, Member(STOPPED_BY_BAN, GUILD), imposed=True)
        assert stop is CancelOutcome.STOPPING_FREE
        await sink.wait_for(2)
    finally:
        await queue.stop()
    assert [job.error for job in sink.delivered] == ["cancelled", "cancelled"]
    for user_id in (STOPPED_BY_ADMIN, STOPPED_BY_BAN):
        assert await spent_today(conn, user_id) == ledger.Usage(images=0, gpu_seconds=0.0)


async def stopping_by(queue: JobQueue, job_id: str) -> journal.StoppedBy | None:
    """Who stopped ``job_id`` as /queue shows it, asserted stopping (its end not written)."""
    state = await queue.state(job_id)
    assert state is not None and state.stopping
    return state.stopped_by


@dataclass
class RenderingBeside:
    """A started queue whose device renders a job of ``STOPPED_IN_BATCH`` and one of
    ``PARTNER`` as one batch (after one of ``LONE``), held before its last step
    (``SharedBatchEngine.finish_batch``)."""

    queue: JobQueue
    sink: RecordingSink
    stopped: str  # the job of STOPPED_IN_BATCH
    partner: str
    reports: list[tuple[str, int]]  # (job, step) of each progress report
    told_stopped: list[tuple[str, bool]]  # what the queue's stopped listener was told

    @classmethod
    async def started(
        cls,
        conn: aiosqlite.Connection,
        tmp_path: Path,
        engine: SharedBatchEngine,
    ) -> RenderingBeside:
        """Once the stopped job reported its first step (stop the queue when done)."""
        engine.finish_lone.clear()  # the first held until the two after it are queued
        queue, sink = await started_queue(
            conn, [DeviceWorker("cpu", lambda _: engine)], tmp_path / "images"
        )
        reports: list[tuple[str, int]] = []
        told_stopped: list[tuple[str, bool]] = []
        stepped = asyncio.Event()

        def on_progress(job_id: str, step: StepProgress) -> None:
            reports.append((job_id, step.step))
            stepped.set()

        queue.set_progress_listener(on_progress, lambda *told: told_stopped.append(told))
        try:
            await queue.submit(submission(LONE, width=256))  # the two after it wait, and batch
            stopped = await queue.submit(submission(STOPPED_IN_BATCH))
            partner = await queue.submit(submission(PARTNER))
            engine.finish_lone.set()
            async with asyncio.timeout(20):
                while (stopped, 1) not in reports:
                    stepped.clear()
                    await stepped.wait()
        except BaseException:
            await queue.stop()
            raise
        return cls(queue, sink, stopped, partner, reports, told_stopped)


async def test_a_job_stopped_beside_a_partner_ends_at_once_and_its_partner_renders_on(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped in a shared render, a job is shown no more and ends at once (the journal,
    /queue, its notice, its charge, its scheduler slot paid as measured), while its partner's
    picture still renders; the render's end records and tells nothing more of it."""
    finished = noted_finishes(monkeypatch)
    with SharedBatchEngine(seconds=2.0, preview=b"a preview") as engine:
        batch = await RenderingBeside.started(conn, tmp_path, engine)
        queue, sink, stopped, partner = batch.queue, batch.sink, batch.stopped, batch.partner
        reports, told_stopped = batch.reports, batch.told_stopped
        try:
            outcome = await queue.cancel(stopped, Member(STOPPED_IN_BATCH, GUILD))
            after_cancel = len(reports)
            assert outcome is CancelOutcome.STOPPED_IN_BATCH
            assert told_stopped == [(stopped, True)]  # at once, not when the batch ends
            # Ended already, the batch held before its last step until now:
            record = await journal.get_job(conn, stopped)
            assert record is not None and record.status is journal.JobStatus.CANCELLED
            assert {r.job.job_id for r in queue.snapshot().running} == {partner}
            await sink.wait_for(2)  # the lone job's picture, then its notice
            assert sink.delivered[-1].job_id == stopped
            charged = await spent_today(conn, STOPPED_IN_BATCH)
            engine.finish_batch.set()
            await sink.wait_for(3)
        finally:
            await queue.stop()
    assert [job.job_id for job in sink.delivered].count(stopped) == 1
    assert await spent_today(conn, STOPPED_IN_BATCH) == charged  # charged once, at its stop
    assert charged.images == 0 and charged.gpu_seconds > 0
    # Its fair turn is paid what it used, as its charge, not its estimate.
    assert finished[stopped] == pytest.approx(charged.gpu_seconds)
    assert engine.batches[-1] == 2
    heard_after = [job_id for job_id, _step in reports[after_cancel:]]
    assert stopped not in heard_after
    assert heard_after.count(partner) >= 1 and (partner, 20) in reports  # it rendered on
    outcomes = {job.user_id: (job.succeeded, job.error) for job in sink.delivered}
    assert outcomes[STOPPED_IN_BATCH] == (False, "cancelled")
    assert outcomes[PARTNER] == (True, None)


async def test_an_imposed_stop_in_a_shared_batch_tries_its_end_once_and_a_click_meanwhile_waits(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ban's stop of a job rendering beside a partner ends it at once, its end tried once
    (a busy database kept for the sweep, not tried for minutes while the ban waits); while
    that end is written, its member's click is told it is being cancelled, not finished."""
    tries: list[str] = []
    writing = asyncio.Event()
    refused = asyncio.Event()  # the first try of the stopped job's end waits for it
    mark_failed = journal.mark_failed

    async def busy_for_the_stopped(
        c: aiosqlite.Connection, job_id: str, *args: Any, **kwargs: Any
    ) -> None:
        if job_id != batch.stopped:
            return await mark_failed(c, job_id, *args, **kwargs)
        tries.append(job_id)
        # Tried again (after the queue's first retry wait): the ban's cancel raises this.
        assert len(tries) == 1, "an imposed stop's end tried again"
        writing.set()
        await refused.wait()
        raise aiosqlite.OperationalError("database is locked")

    monkeypatch.setattr(journal, "mark_failed", busy_for_the_stopped)
    member = Member(STOPPED_IN_BATCH, GUILD)
    with SharedBatchEngine(seconds=0.5) as engine:
        batch = await RenderingBeside.started(conn, tmp_path, engine)
        ban = asyncio.create_task(batch.queue.cancel(batch.stopped, member, imposed=True))
        try:
            async with asyncio.timeout(20):
                await writing.wait()
            with pytest.raises(UserError, match="being cancelled already"):
                await batch.queue.cancel(batch.stopped, member)
            # /queue: stopping, not by its member, its end being written, then kept.
            assert await stopping_by(batch.queue, batch.stopped) is journal.StoppedBy.IMPOSED
            refused.set()
            async with asyncio.timeout(20):
                assert await ban is CancelOutcome.STOPPING_FREE
            assert tries == [batch.stopped]
            assert await stopping_by(batch.queue, batch.stopped) is journal.StoppedBy.IMPOSED
            engine.finish_batch.set()
            await batch.sink.wait_for(2)  # the lone job's picture, then the partner's
        finally:
            refused.set()
            ban.cancel()
            await batch.queue.stop()
    outcomes = {job.user_id: (job.succeeded, job.error) for job in batch.sink.delivered}
    assert outcomes == {LONE: (True, None), PARTNER: (True, None)}


async def test_a_ban_while_the_members_own_stop_in_batch_is_written_makes_it_free(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refund wins: a ban landing while the end of its member's own stop in a shared batch
    is written (a busy moment) refunds that stop whole, and the member's cancel is answered
    so."""
    writing = asyncio.Event()
    go_on = asyncio.Event()
    mark_failed = journal.mark_failed

    async def held_for_the_stopped(
        c: aiosqlite.Connection, job_id: str, *args: Any, **kwargs: Any
    ) -> None:
        if job_id == batch.stopped and not writing.is_set():
            writing.set()
            await go_on.wait()
        return await mark_failed(c, job_id, *args, **kwargs)

    monkeypatch.setattr(journal, "mark_failed", held_for_the_stopped)
    member = Member(STOPPED_IN_BATCH, GUILD)
    with SharedBatchEngine(seconds=0.5) as engine:
        batch = await RenderingBeside.started(conn, tmp_path, engine)
        own = asyncio.create_task(batch.queue.cancel(batch.stopped, member))
        try:
            async with asyncio.timeout(20):
                await writing.wait()
                assert await stopping_by(batch.queue, batch.stopped) is journal.StoppedBy.MEMBER
                ban = asyncio.create_task(batch.queue.cancel(batch.stopped, member, imposed=True))
                # Polled: its ask then waits for the held end's transaction, answered after.
                while not batch.queue._cancels.imposed_meanwhile(batch.stopped):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                go_on.set()
                assert await ban is CancelOutcome.BEING_CANCELLED
                # Answered as charged: free, not "you pay for the GPU time until now".
                assert await own is CancelOutcome.STOPPING_FREE
            engine.finish_batch.set()
            await batch.sink.wait_for(3)
        finally:
            go_on.set()
            own.cancel()
            await batch.queue.stop()
    assert await spent_today(conn, STOPPED_IN_BATCH) == ledger.Usage(0, 0.0)


class RefusesOne:
    """A start gate that refuses ``REFUSED``'s jobs (the rules of now) and lets others render."""

    def start_waits_for(self, job_id: str, user_id: int, guild_id: int | None) -> None:
        return None

    async def why_not_started(self, job: FinishedJob) -> str | None:
        return REFUSED_NOW if job.user_id == REFUSED else None


async def test_a_job_left_alone_by_its_refused_partner_stops_when_cancelled(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """Its batch's partner refused at the start, a job renders alone: its cancel stops the
    render (nothing else of it is wanted), rather than "stops it for its member" as if a
    partner's picture rendered on."""
    with HeldEngine() as engine:
        slots = [DeviceWorker("cpu", lambda _: engine)]
        # Journaled before the queue starts: its device is handed both as one batch.
        journaling = JobQueue(conn, slots, tmp_path / "images")
        alone = await journaling.submit(submission(LEFT_ALONE))
        await journaling.submit(submission(REFUSED))
        queue = JobQueue(conn, slots, tmp_path / "images")
        sink = RecordingSink(conn)
        queue.set_sink(sink)
        queue.set_start_gate(RefusesOne())
        await queue.start()
        try:
            assert await asyncio.to_thread(engine.started.wait, 20)  # held, rendering
            assert await queue.cancel(alone, Member(LEFT_ALONE, GUILD)) is CancelOutcome.STOPPING
            await sink.wait_for(2)
        finally:
            engine.released.set()
            await queue.stop()
    assert engine.batches == []  # stopped while held: no step of it ran
    outcomes = {job.user_id: (job.succeeded, job.error) for job in sink.delivered}
    assert outcomes == {LEFT_ALONE: (False, "cancelled"), REFUSED: (False, REFUSED_NOW)}
