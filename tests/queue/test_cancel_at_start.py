"""A cancel in the gap between the scheduler handing a job to its device and the journal
recording it as running: the job is kept out of the render and refunded whole, never both
refunded and rendered, and the device's dispatcher goes on with the next job. The gap is held
open by pausing the journal's ``mark_running``; real SQLite."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Iterable
from pathlib import Path

import aiosqlite
import pytest

from bot.jobs.accounting import Member
from bot.jobs.queue import CancelOutcome, JobQueue, Submission
from bot.jobs.queue.cancels import RunningBatch
from bot.policy.quota import Period, period_start
from db import jobs as journal
from db import quotas as ledger
from inference.types import RenderRequest
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine
from tests.support.sinks import RecordingSink, started_queue

GUILD, OWNER, NEXT = 5, 1, 2


def submission(user_id: int, prompt: str) -> Submission:
    return Submission("imagine", RenderRequest(prompt, seed=user_id, steps=2), user_id, GUILD)


def pause_the_first_start(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, asyncio.Event]:
    """The journal's first ``mark_running`` waits: (set once it waits, to set to go on)."""
    in_the_gap, go_on = asyncio.Event(), asyncio.Event()
    mark_running = journal.mark_running

    async def paused_mark_running(
        db: aiosqlite.Connection,
        job_ids: Iterable[str],
        now: float,
        *,
        counts_attempt: bool,
        running_still: Collection[str],
    ) -> list[journal.JobRecord]:
        ids = list(job_ids)
        if not in_the_gap.is_set():  # only the first batch's start is held
            in_the_gap.set()
            await go_on.wait()
        return await mark_running(
            db, ids, now, counts_attempt=counts_attempt, running_still=running_still
        )

    monkeypatch.setattr(journal, "mark_running", paused_mark_running)
    return in_the_gap, go_on


async def test_a_cancel_as_the_job_starts_keeps_it_out_of_the_render_and_the_device_going(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_the_gap, go_on = pause_the_first_start(monkeypatch)
    engine = InstantEngine()
    queue, sink = await started_queue(
        conn, [DeviceWorker("cpu", lambda _: engine)], tmp_path / "images"
    )
    try:
        cancelled = await queue.submit(submission(OWNER, "cancelled as it starts"))
        async with asyncio.timeout(20):
            await in_the_gap.wait()
        # Its owner chose the stop, but it used no device time: nothing is charged.
        stop = await queue.cancel(cancelled, Member(OWNER, GUILD))
        assert stop is CancelOutcome.STOPPING_FREE
        go_on.set()
        await sink.wait_for(1)
        # The dispatcher survived the cancel: the device renders the next job.
        after = await queue.submit(submission(NEXT, "the next job"))
        await sink.wait_for(2)
    finally:
        await queue.stop()
    assert [request.prompt for request in engine.rendered] == ["the next job"]
    outcomes = {job.job_id: (job.succeeded, job.error) for job in sink.delivered}
    assert outcomes == {cancelled: (False, "cancelled"), after: (True, None)}
    record = await journal.get_job(conn, cancelled)
    assert record is not None and record.status is journal.JobStatus.CANCELLED
    spent = await ledger.usage(conn, OWNER, GUILD, period_start(Period.DAY, time.time()))
    assert spent == ledger.Usage(images=0, gpu_seconds=0.0)


async def test_a_job_left_out_of_its_batch_frees_its_slots_while_its_partner_renders(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its member's and server's in-flight slots are free during its partner's render (the
    scheduler no longer counts it running), not only once that render ended."""
    engine = InstantEngine(seconds=1.0)
    slots = [DeviceWorker("cpu", lambda _: engine)]
    # Journaled before the queue starts: its device is handed both jobs as one batch.
    journaling = JobQueue(conn, slots, tmp_path / "images")
    cancelled = await journaling.submit(submission(OWNER, "cancelled as it starts"))
    partner = await journaling.submit(submission(NEXT, "its partner"))
    in_the_gap, go_on = pause_the_first_start(monkeypatch)
    queue = JobQueue(conn, slots, tmp_path / "images")
    sink = RecordingSink()
    queue.set_sink(sink)
    # What the scheduler counts as running at each of the partner's steps.
    running_at_steps: list[list[str]] = []
    queue.set_progress_listener(
        lambda _job_id, _step: running_at_steps.append(
            [running.job.job_id for running in queue.snapshot().running]
        )
    )
    await queue.start()
    try:
        async with asyncio.timeout(20):
            await in_the_gap.wait()
        assert {running.job.job_id for running in queue.snapshot().running} == {
            cancelled,
            partner,
        }
        assert await queue.cancel(cancelled, Member(OWNER, GUILD)) is CancelOutcome.STOPPING_FREE
        go_on.set()
        await sink.wait_for(2)
    finally:
        await queue.stop()
    assert [request.prompt for request in engine.rendered] == ["its partner"]
    assert running_at_steps and all(ids == [partner] for ids in running_at_steps)


async def test_a_cancel_that_waited_for_the_lock_while_its_job_was_handed_out_stops_it(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel reads whether the job runs, then waits for the queue's lock; a dispatcher holding
    it may hand the job to its device meanwhile. The cancel then finds it out of the queue and
    must stop its batch, not answer that it had finished (and let it render)."""
    queue = JobQueue(conn, [], tmp_path / "images")  # no device: the hand-out is the test's
    job_id = await queue.submit(submission(OWNER, "handed out as its cancel waits"))
    take_out = queue._scheduler.cancel

    def handed_out_meanwhile(job: str) -> bool:
        take_out(job)  # out of the queue, as the dispatcher's hand-out takes it
        queue._running[job] = RunningBatch((job,))  # registered before its first await
        return False

    monkeypatch.setattr(queue._scheduler, "cancel", handed_out_meanwhile)
    stop = await queue.cancel(job_id, Member(OWNER, GUILD))
    assert stop is CancelOutcome.STOPPING_FREE  # not rendering yet: nothing charged
    assert queue._running[job_id].stop.is_set()  # the batch's only job: its render stops
