"""Results' posts around the queue's start and stop, and their retries: restored results post
in the background, after the start-up's member check; a stop leaves no post running once it
returns, lanes opened while it waits included; a post that failed for a passing reason (the
delivery gate's check of a channel timed out) is tried again in its lane, a bounded number of
times; results journaled within one tick of the clock post in the order they were journaled
in. Real SQLite, a device thread, a sink standing in for Discord."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import aiosqlite
import pytest

from bot.jobs.queue import FinishedJob, JobQueue, Submission, admission, job_queue
from bot.jobs.queue import delivery as job_delivery
from bot.jobs.queue.ends import JobEnds
from db import jobs as journal
from db import quotas as ledger
from inference.types import RenderedImage, RenderRequest
from inference.worker import DeviceWorker
from tests.conftest import ErrorLogs
from tests.support.engines import InstantEngine
from tests.support.sinks import RecordingSink

GUILD, CHANNEL = 5, 50
MEMBER, OTHER = 1, 2


def submission(user_id: int, prompt: str) -> Submission:
    return Submission(
        "imagine", RenderRequest(prompt, seed=user_id, steps=2), user_id, GUILD, CHANNEL
    )


def cpu() -> list[DeviceWorker]:
    return [DeviceWorker("cpu", lambda _: InstantEngine())]


class HeldSink(RecordingSink):
    """Each post waits for ``release``; ``began`` is set once one does."""

    def __init__(self) -> None:
        super().__init__()
        self.began = asyncio.Event()
        self.release = asyncio.Event()

    async def deliver(self, job: FinishedJob) -> int | None:
        self.began.set()
        await self.release.wait()
        return await super().deliver(job)


class FailingSink(RecordingSink):
    """Fails each post of ``failing[job_id]``'s job with that error while its count lasts."""

    def __init__(self, failing: dict[str, tuple[Exception, int]]) -> None:
        super().__init__()
        self.failing = failing
        self.tries: Counter[str] = Counter()

    async def deliver(self, job: FinishedJob) -> int | None:
        self.tries[job.job_id] += 1
        error, times = self.failing.get(job.job_id, (None, 0))
        if error is not None and self.tries[job.job_id] <= times:
            self.arrived.set()
            raise error
        return await super().deliver(job)

    async def wait_for_tries(self, count: int) -> None:
        async with asyncio.timeout(20):
            while self.tries.total() < count:
                self.arrived.clear()
                await self.arrived.wait()


async def delivered_at(conn: aiosqlite.Connection, job_ids: Sequence[str]) -> list[bool]:
    """Whether each job is recorded posted."""
    records = [await journal.get_job(conn, job_id) for job_id in job_ids]
    return [record is not None and record.delivered_at is not None for record in records]


async def test_restored_results_post_after_the_member_check_without_holding_the_start(
    conn: aiosqlite.Connection, tmp_path: Path, error_logs: ErrorLogs
) -> None:
    error_logs.expect("delivery failed")
    images = tmp_path / "images"
    # The previous process: two results of one member finished, never posted.
    journaling = JobQueue(conn, [], images)
    jobs = [await journaling.submit(submission(MEMBER, f"picture {n}")) for n in range(2)]
    before = JobQueue(conn, cpu(), images)
    undeliverable = FailingSink(
        {job_id: (RuntimeError("Discord answered 403"), 1) for job_id in jobs}
    )
    before.set_sink(undeliverable)
    await before.start()
    await undeliverable.wait_for_tries(2)
    await before.stop()

    queue = JobQueue(conn, cpu(), images)
    sink = HeldSink()
    queue.set_sink(sink)
    checked: list[bool] = []

    async def member_check() -> None:
        checked.append(sink.began.is_set())

    starting = asyncio.create_task(queue.start(before_delivery=member_check))
    try:
        # The start returns while the first post waits for Discord: the gateway connects.
        await asyncio.wait({starting}, timeout=20)
        assert starting.done()
        async with asyncio.timeout(20):
            await sink.began.wait()
        assert checked == [False]  # the member check came first
        sink.release.set()
        await sink.wait_for(2)
    finally:
        sink.release.set()
        await queue.stop()
    assert [job.job_id for job in sink.delivered] == jobs  # in the order asked for
    assert await delivered_at(conn, jobs) == [True, True]


class StoresWhenReleased(JobEnds):
    """Its batches' pictures are stored once ``storing`` is set: their lanes open late."""

    storing = threading.Event()

    def _store_images(
        self,
        job_id: str,
        request: RenderRequest,
        rendered: list[RenderedImage],
        filesize_limit: int | None,
    ) -> tuple[list[journal.ImageRecord], bytes | None, list[bytes]]:
        self.storing.wait(20)
        return super()._store_images(job_id, request, rendered, filesize_limit)


async def test_a_stop_ends_the_posts_of_lanes_opened_while_it_waited(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_queue, "SHUTDOWN_GRACE_S", 1.0)
    StoresWhenReleased.storing = threading.Event()
    monkeypatch.setattr(job_queue, "JobEnds", StoresWhenReleased)
    queue = JobQueue(conn, cpu(), tmp_path / "images")
    sink = HeldSink()
    queue.set_sink(sink)
    await queue.start()
    job_id = await queue.submit(submission(MEMBER, "rendered as the stop begins"))
    stopping = asyncio.create_task(queue.stop())
    await asyncio.sleep(0.3)  # the stop waits for the batch being stored
    StoresWhenReleased.storing.set()  # stored now: its post opens a lane, and waits
    async with asyncio.timeout(20):
        await sink.began.wait()
    await stopping  # its grace ran out meanwhile
    sink.release.set()  # Discord answers after the stop: too late, nothing is posted
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert sink.delivered == []
    assert await delivered_at(conn, [job_id]) == [False]  # the next start posts it


async def test_a_post_failing_for_a_passing_reason_is_tried_again_in_its_lane(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error_logs: ErrorLogs,
) -> None:
    error_logs.expect("its result cannot be posted")
    monkeypatch.setattr(job_delivery, "DELIVERY_RETRY_WAITS_S", (0.0, 0.0))
    images = tmp_path / "images"
    journaling = JobQueue(conn, [], images)  # journaled first: one batch of four
    timed_out = await journaling.submit(submission(MEMBER, "its channel check timed out"))
    after_it = await journaling.submit(submission(MEMBER, "asked after it"))
    down = await journaling.submit(submission(OTHER, "Discord down for good"))
    refused = await journaling.submit(submission(OTHER + 1, "its stored picture is gone"))
    sink = FailingSink(
        {
            timed_out: (TimeoutError(), 1),
            down: (ConnectionError("connection reset"), 99),
            # An OSError, yet not a passing one: the file stays gone.
            refused: (FileNotFoundError("easel-0.png"), 1),
        }
    )
    queue = JobQueue(conn, cpu(), images)
    queue.set_sink(sink)
    await queue.start()
    try:
        await sink.wait_for_tries(8)  # 2 + 1 + 3 + 2
        await sink.wait_for(3)
    finally:
        await queue.stop()
    # A passing failure is tried again (a bounded number of times), before the lane's next
    # post, then left to the delivery sweep; one that cannot heal fails its job, refunded,
    # and that failure is posted in its place.
    assert sink.tries == {timed_out: 2, after_it: 1, down: 3, refused: 2}
    posted = {job.job_id: job for job in sink.delivered}
    assert [job_id for job_id in posted if job_id != refused] == [timed_out, after_it]
    assert not posted[refused].succeeded and posted[refused].images == ()
    assert (posted[refused].error or "").startswith(
        "the result could not be posted (its stored picture is missing)"
    )
    assert await ledger.refunded(conn, refused)
    assert await journal.images_of(conn, refused) == []
    assert await delivered_at(conn, [timed_out, after_it, down, refused]) == [
        True,
        True,
        False,
        True,
    ]


async def test_results_journaled_within_one_tick_post_in_the_order_asked_for(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each job's random id sorts before the one journaled before it.
    ids = iter(uuid.UUID(int=(15 - n) << 124) for n in range(2))
    monkeypatch.setattr(admission, "uuid", SimpleNamespace(uuid4=lambda: next(ids)))
    images = tmp_path / "images"
    # Journaled first: one batch (a member has two jobs in flight at most).
    one_tick = JobQueue(conn, [], images, clock=lambda: 1000.0)
    asked = [await one_tick.submit(submission(MEMBER, f"picture {n}")) for n in range(2)]
    assert sorted(asked) == asked[::-1]
    queue = JobQueue(conn, cpu(), images)
    sink = RecordingSink()
    queue.set_sink(sink)
    await queue.start()
    try:
        await sink.wait_for(2)
    finally:
        await queue.stop()
    assert [job.job_id for job in sink.delivered] == asked
