"""A cancel refunds the pictures, not the GPU time already spent: a job its owner stops while
running (alone, or beside a batch partner that goes on) is charged what it used until the
stop; one cancelled while it waits costs nothing, and so does a stop its owner did not choose
(an admin's, a ban's). Real SQLite ledger."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiosqlite

from bot.jobs.accounting import Member
from bot.jobs.queue import CancelOutcome, FinishedJob, JobQueue, Submission
from bot.policy.quota import Period, period_start
from db import quotas as ledger
from inference.types import RenderRequest, StepProgress
from inference.worker import DeviceWorker
from tests.support.engines import HeldEngine, InstantEngine, SharedBatchEngine
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


async def test_a_job_stopped_beside_a_partner_is_shown_no_more_and_its_partner_renders_on(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    with SharedBatchEngine(seconds=2.0, preview=b"a preview") as engine:
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
            outcome = await queue.cancel(stopped, Member(STOPPED_IN_BATCH, GUILD))
            after_cancel = len(reports)
            assert outcome is CancelOutcome.STOPPED_IN_BATCH
            assert told_stopped == [(stopped, True)]  # at once, not when the batch ends
            engine.finish_batch.set()  # held before its last step until now
            await sink.wait_for(3)
        finally:
            await queue.stop()
    assert engine.batches[-1] == 2
    heard_after = [job_id for job_id, _step in reports[after_cancel:]]
    assert stopped not in heard_after
    assert heard_after.count(partner) >= 1 and (partner, 20) in reports  # it rendered on
    outcomes = {job.user_id: (job.succeeded, job.error) for job in sink.delivered}
    assert outcomes[STOPPED_IN_BATCH] == (False, "cancelled")
    assert outcomes[PARTNER] == (True, None)


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
