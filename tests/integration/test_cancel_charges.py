"""A cancel refunds the pictures, not the GPU time already spent: a job its owner stops while
running (alone, or beside a batch partner that goes on) is charged what it used; one cancelled
while it waits costs nothing, and so does a stop its owner did not choose (an admin's, a
ban's). Real SQLite ledger."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiosqlite

from bot.jobs.accounting import Member
from bot.jobs.queue import CancelOutcome, JobQueue, Submission
from bot.policy.quota import Period, period_start
from db import quotas as ledger
from inference.types import RenderRequest, StepProgress
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine
from tests.support.sinks import RecordingSink, started_queue

GUILD = 5
LONE, WAITING, STOPPED_IN_BATCH, PARTNER = 1, 2, 3, 4
STOPPED_BY_ADMIN, STOPPED_BY_BAN, ADMIN = 6, 7, 8


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

    async def cancel_once_running(job_id: str, by: Member) -> None:
        await running(job_id)
        assert await queue.cancel(job_id, by) is CancelOutcome.STOPPING

    try:
        lone = await queue.submit(submission(LONE, width=256))
        # These wait behind it; the two of one size then render as one batch.
        waiting = await queue.submit(submission(WAITING))
        stopped = await queue.submit(submission(STOPPED_IN_BATCH))
        await queue.submit(submission(PARTNER))
        assert await queue.cancel(waiting, Member(WAITING, GUILD)) is CancelOutcome.CANCELLED
        await cancel_once_running(lone, Member(LONE, GUILD))
        # An admin stopping their own job chose the stop: charged like anyone.
        await cancel_once_running(stopped, Member(STOPPED_IN_BATCH, GUILD, is_admin=True))
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
