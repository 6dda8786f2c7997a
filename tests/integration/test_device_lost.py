"""A device that is gone (a CUDA error: every render there fails from then on) is not its
jobs' failure: they go back to the queue, the device's slot takes no more work, and once no
device is left the queue says so; a job that kills every device it meets ends after
``MAX_RENDER_ATTEMPTS``, failed and refunded as any other."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import pytest

from bot.jobs.queue import MAX_RENDER_ATTEMPTS, JobQueue, Submission
from bot.policy.quota import Period, period_start
from db import jobs as journal
from db import quotas as ledger
from inference.types import ProgressCallback, RenderedImage, RenderRequest
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine
from tests.support.sinks import RecordingSink

GUILD = 5
ILLEGAL_ACCESS = "CUDA error: an illegal memory access was encountered"


@dataclass
class LostDeviceEngine(InstantEngine):
    """Every render raises what torch raises once the CUDA context is gone, and so does the
    device's probe from the first render on (sound before it, as at a start); with
    ``bad_batches``, a batch of several fails first as one with a bad input does."""

    calls: int = 0
    bad_batches: bool = False

    def probe(self) -> None:
        if self.calls:
            raise RuntimeError(ILLEGAL_ACCESS)

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]:
        self.calls += 1
        if self.bad_batches and len(requests) > 1:
            raise ValueError("one of the batch's inputs is bad")
        raise RuntimeError(ILLEGAL_ACCESS)


def submission(user_id: int, prompt: str = "a lake") -> Submission:
    request = RenderRequest(prompt, seed=user_id, steps=2)
    return Submission("imagine", request, user_id=user_id, guild_id=GUILD)


async def started(
    conn: aiosqlite.Connection, devices: Sequence[DeviceWorker], images: Path
) -> tuple[JobQueue, RecordingSink, asyncio.Event]:
    """A started queue on ``devices``, its deliveries recorded, with the event its "no device
    left" sets."""
    queue = JobQueue(conn, devices, images)
    sink = RecordingSink(conn)
    queue.set_sink(sink)
    none_left = asyncio.Event()
    queue.set_no_device_left(none_left.set)
    await queue.start()
    return queue, sink, none_left


async def run_until_no_device_left(
    conn: aiosqlite.Connection, engine: InstantEngine, images: Path
) -> tuple[JobQueue, RecordingSink]:
    """A started queue on ``engine``'s one device, run until that is lost, then stopped."""
    queue, sink, none_left = await started(conn, [DeviceWorker("cuda:0", lambda _: engine)], images)
    async with asyncio.timeout(20):
        await none_left.wait()
    await queue.stop()
    return queue, sink


async def statuses(conn: aiosqlite.Connection, job_ids: Sequence[str]) -> list[tuple[str, int]]:
    jobs = [await journal.get_job(conn, job_id) for job_id in job_ids]
    return [(job.status.value, job.attempts) for job in jobs if job is not None]


async def images_reserved_today(conn: aiosqlite.Connection, user_id: int) -> int:
    today = period_start(Period.DAY, time.time())
    return (await ledger.usage(conn, user_id, GUILD, today)).images


async def test_a_lost_device_puts_its_job_back_takes_no_more_and_says_none_is_left(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    engine = LostDeviceEngine()
    queue, sink, none_left = await started(
        conn, [DeviceWorker("cuda:0", lambda _: engine)], tmp_path / "images"
    )
    assert queue.device_trouble() is None
    ids = [await queue.submit(submission(user_id)) for user_id in (1, 2)]
    async with asyncio.timeout(20):
        await none_left.wait()
    await queue.stop()

    assert queue.device_trouble() == f"device cuda:0 lost: {ILLEGAL_ACCESS}"
    assert engine.calls == 1  # the slot took no second batch
    assert sink.delivered == []  # nobody is told of a failure
    # Queued again, reserved still (neither charged nor refunded), the render attempt counted
    # when the first rendered alone (none when they were batched together).
    [first, second] = await statuses(conn, ids)
    assert first[0] == second[0] == "queued"
    assert sorted([first[1], second[1]]) in ([0, 1], [0, 0])
    assert [await images_reserved_today(conn, user_id) for user_id in (1, 2)] == [1, 1]


async def test_the_job_goes_to_a_device_left_and_the_process_renders_on(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    lost, healthy = LostDeviceEngine(), InstantEngine(seconds=0.2)
    devices = [
        DeviceWorker("cuda:0", lambda _: lost),
        DeviceWorker("cuda:1", lambda _: healthy),
    ]
    queue, sink, none_left = await started(conn, devices, tmp_path / "images")
    # Four members' alike jobs (batched as they meet); cuda:1 is busy 0.2 s a render, so
    # cuda:0 gets some.
    ids = [await queue.submit(submission(user_id)) for user_id in range(1, 5)]
    await sink.wait_for(len(ids))
    await queue.stop()

    assert lost.calls == 1
    assert sorted(job.job_id for job in sink.delivered) == sorted(ids)
    assert all(job.succeeded for job in sink.delivered)
    assert queue.device_trouble() == f"device cuda:0 lost: {ILLEGAL_ACCESS}"
    assert not none_left.is_set()


async def test_a_job_that_kills_the_device_each_time_fails_refunded_after_the_attempts(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    journaling = JobQueue(conn, [], tmp_path / "images")
    poison = await journaling.submit(submission(1, "kills the device"))
    for start in range(1, MAX_RENDER_ATTEMPTS + 1):  # each process loses its device to it
        engine = LostDeviceEngine()
        queue, sink, none_left = await started(
            conn, [DeviceWorker("cuda:0", lambda _, e=engine: e)], tmp_path / "images"
        )
        async with asyncio.timeout(20):
            await none_left.wait()
        if start < MAX_RENDER_ATTEMPTS:
            await queue.stop()
            assert await statuses(conn, [poison]) == [("queued", start)]
            assert sink.delivered == []
    await sink.wait_for(1)
    await queue.stop()

    [failed] = sink.delivered
    assert failed.job_id == poison and not failed.succeeded
    assert await statuses(conn, [poison]) == [("failed", MAX_RENDER_ATTEMPTS)]
    assert await images_reserved_today(conn, 1) == 0  # refunded


async def test_a_device_lost_while_a_failed_batch_renders_job_by_job_queues_the_rest(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    journaling = JobQueue(conn, [], tmp_path / "images")
    # One member's two alike jobs, journaled before the start: they start as one batch.
    ids = [await journaling.submit(submission(1)) for _ in range(2)]
    engine = LostDeviceEngine(bad_batches=True)
    queue, sink, none_left = await started(
        conn, [DeviceWorker("cuda:0", lambda _: engine)], tmp_path / "images"
    )
    async with asyncio.timeout(20):
        await none_left.wait()
    await queue.stop()
    assert sink.delivered == []
    # The one rendered alone counts its attempt; the one never rendered alone gets it back.
    assert await statuses(conn, ids) == [("queued", 1), ("queued", 0)]
    assert queue.queued_count() == 2  # both back in the queue here, neither released


@dataclass
class TooBigForABatch(InstantEngine):
    """A batch of several raises what CUDA raises for a launch too big for it (the device
    stays sound: its probe passes); each job alone renders."""

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]:
        if len(requests) > 1:
            self.batches.append(len(requests))
            raise RuntimeError("CUDA error: invalid configuration argument")
        return super().render_batch(requests, progress, cancel)

    def probe(self) -> None:
        """Sound: the error above left the CUDA context as it was."""


async def test_an_error_that_leaves_the_device_sound_fails_the_batch_not_the_device(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    journaling = JobQueue(conn, [], tmp_path / "images")
    # Two members' alike jobs, journaled before the start: they start as one batch.
    ids = [await journaling.submit(submission(user_id)) for user_id in (1, 2)]
    engines = [TooBigForABatch() for _ in range(2)]
    devices = [DeviceWorker(f"cuda:{n}", lambda _, e=e: e) for n, e in enumerate(engines)]
    queue, sink, none_left = await started(conn, devices, tmp_path / "images")
    await sink.wait_for(2)
    await queue.stop()

    # The batch failed on one device, which then rendered each job alone.
    assert sorted(engine.batches for engine in engines) == [[], [2, 1, 1]]
    assert queue.device_trouble() is None  # no device lost, nobody restarts
    assert all(job.succeeded for job in sink.delivered)  # each rendered alone
    assert await statuses(conn, ids) == [("done", 1), ("done", 1)]
    assert not none_left.is_set()


@dataclass
class KilledByPoison(InstantEngine):
    """A render with "poison" in a prompt takes the device down (so does every later render
    and probe); any other renders."""

    dead: bool = False

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]:
        self.dead = self.dead or any("poison" in request.prompt for request in requests)
        if self.dead:
            self.batches.append(len(requests))
            raise RuntimeError(ILLEGAL_ACCESS)
        return super().render_batch(requests, progress, cancel)

    def probe(self) -> None:
        if self.dead:
            raise RuntimeError(ILLEGAL_ACCESS)


async def test_a_poison_jobs_batch_mate_renders_alone_and_only_the_poison_spends_attempts(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    journaling = JobQueue(conn, [], tmp_path / "images")
    # Alike jobs of two members, journaled before the start: they start as one batch.
    poison = await journaling.submit(submission(1, "poison"))
    innocent = await journaling.submit(submission(2))
    engines = [KilledByPoison() for _ in range(MAX_RENDER_ATTEMPTS + 2)]
    devices = [DeviceWorker(f"cuda:{n}", lambda _, e=e: e) for n, e in enumerate(engines)]
    queue, sink, none_left = await started(conn, devices, tmp_path / "images")
    await sink.wait_for(2)
    await queue.stop()

    # Batched once; then the poison alone on each device it killed, the innocent job alone.
    sizes = sorted(size for engine in engines for size in engine.batches)
    assert sizes == [1] * (MAX_RENDER_ATTEMPTS + 1) + [2]
    delivered = {job.job_id: job.succeeded for job in sink.delivered}
    assert delivered == {poison: False, innocent: True}
    # The batch's lost render is neither's attempt: the poison's are its own, alone, and the
    # innocent job's one is the render that made its pictures.
    assert await statuses(conn, [poison, innocent]) == [
        ("failed", MAX_RENDER_ATTEMPTS),
        ("done", 1),
    ]
    assert [engine.dead for engine in engines].count(True) == MAX_RENDER_ATTEMPTS + 1
    assert not none_left.is_set()  # a device is left
    assert await images_reserved_today(conn, 1) == 0  # the poison's refunded


async def test_jobs_lost_together_spend_no_attempt_and_render_alone_after_a_restart(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """The only device dies under a batch of two members' jobs (the process then ends): which
    one killed it is not known, so neither spends an attempt, and the next process renders
    each alone (so a poison job among them spends its attempts alone, its mate none)."""
    journaling = JobQueue(conn, [], tmp_path / "images")
    # Alike jobs of two members, journaled before the start: they start as one batch.
    ids = [await journaling.submit(submission(user_id)) for user_id in (1, 2)]
    lost = LostDeviceEngine()
    _, sink = await run_until_no_device_left(conn, lost, tmp_path / "images")
    assert lost.calls == 1 and sink.delivered == []
    assert await statuses(conn, ids) == [("queued", 0), ("queued", 0)]
    jobs = [await journal.get_job(conn, job_id) for job_id in ids]
    assert [job is not None and job.renders_alone for job in jobs] == [True, True]

    healthy = InstantEngine()
    queue, sink, _ = await started(
        conn, [DeviceWorker("cuda:0", lambda _: healthy)], tmp_path / "images"
    )
    await sink.wait_for(2)
    await queue.stop()
    assert healthy.batches == [1, 1]  # each alone, though alike
    assert all(job.succeeded for job in sink.delivered)
    assert await statuses(conn, ids) == [("done", 1), ("done", 1)]


@dataclass
class BrokenAtStart(LostDeviceEngine):
    """A device a restart did not bring back: its probe fails before any render."""

    def probe(self) -> None:
        raise RuntimeError(ILLEGAL_ACCESS)


async def test_a_device_still_broken_at_the_start_takes_no_job_and_costs_none_an_attempt(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    journaling = JobQueue(conn, [], tmp_path / "images")
    job_id = await journaling.submit(submission(1))
    engine = BrokenAtStart()
    queue, sink = await run_until_no_device_left(conn, engine, tmp_path / "images")

    assert engine.calls == 0
    assert queue.device_trouble() == f"device cuda:0 lost: {ILLEGAL_ACCESS}"
    assert sink.delivered == []
    assert await statuses(conn, [job_id]) == [("queued", 0)]


async def test_no_device_left_is_said_even_when_putting_the_jobs_back_fails(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = LostDeviceEngine()
    queue = JobQueue(conn, [DeviceWorker("cuda:0", lambda _: engine)], tmp_path / "images")
    queue.set_sink(RecordingSink(conn))
    none_left = asyncio.Event()
    queue.set_no_device_left(none_left.set)

    async def refused(*_: object, **__: object) -> None:
        raise aiosqlite.OperationalError("database is locked")

    monkeypatch.setattr(queue, "_put_back", refused)
    await queue.start()
    await queue.submit(submission(1))
    async with asyncio.timeout(20):
        await none_left.wait()  # the process stops, and its next start requeues the job
    await queue.stop()
    assert engine.calls == 1
