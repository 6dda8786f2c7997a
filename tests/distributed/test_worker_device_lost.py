"""A broker worker whose device is lost (every render raises CUDA's "illegal memory
access"): the job goes back to the broker for another worker, not published failed; the
worker stops taking jobs and ends with ``DEVICE_LOST_EXIT_STATUS``. A job that kills every
device it meets fails, refunded, once the broker's deliveries are used up. A real
nats-server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from bot.jobs.broker.worker import WorkerConfig, serve
from bot.jobs.queue import MAX_RENDER_ATTEMPTS, Submission
from bot.policy.quota import Period, period_start
from db import jobs as journal
from db import quotas as ledger
from inference.device_loss import DEVICE_LOST_EXIT_STATUS
from inference.types import ProgressCallback, RenderedImage, RenderRequest
from tests.distributed.test_worker_metrics import free_port
from tests.distributed.transports import NatsTransport
from tests.integration.test_device_lost import ILLEGAL_ACCESS, BrokenAtStart, LostDeviceEngine
from tests.support.engines import InstantEngine
from tests.support.metrics import fetch
from tests.support.sinks import started_queue

USER, GUILD = 7, 5


def submission() -> Submission:
    return Submission("imagine", RenderRequest("a lake", steps=2), user_id=USER, guild_id=GUILD)


async def lost_worker_ends(nats: NatsTransport, engine: LostDeviceEngine) -> int:
    """A worker on one device that is lost: what it exits with, once it ends by itself."""
    never = asyncio.Event()  # no stop is asked: it ends once its device is lost
    config = WorkerConfig(nats.server.url, ("gpu-0",), idle_poll_s=0.1)
    async with asyncio.timeout(30):
        return await serve(config, lambda _: engine, never)


async def test_a_lost_workers_job_renders_on_another_worker_and_the_lost_one_exits(
    conn: aiosqlite.Connection, tmp_path: Path, nats: NatsTransport
) -> None:
    queue, sink = await started_queue(conn, (await nats.client(slots=1)).slots(), tmp_path)
    job_id = await queue.submit(submission())
    lost = LostDeviceEngine()
    assert await lost_worker_ends(nats, lost) == DEVICE_LOST_EXIT_STATUS
    assert lost.calls == 1
    assert sink.delivered == []  # not published failed

    nats.start_worker(InstantEngine())  # a sound worker takes the job handed back
    await sink.wait_for(1)
    await queue.stop()
    assert [(job.job_id, job.succeeded) for job in sink.delivered] == [(job_id, True)]
    record = await journal.get_job(conn, job_id)
    assert record is not None and record.status is journal.JobStatus.DONE


async def test_a_job_that_kills_every_worker_fails_refunded_after_the_deliveries(
    conn: aiosqlite.Connection, tmp_path: Path, nats: NatsTransport
) -> None:
    queue, sink = await started_queue(conn, (await nats.client(slots=1)).slots(), tmp_path)
    job_id = await queue.submit(submission())
    for _ in range(MAX_RENDER_ATTEMPTS):  # the broker's deliveries of it (max_attempts)
        assert await lost_worker_ends(nats, LostDeviceEngine()) == DEVICE_LOST_EXIT_STATUS
    sound = InstantEngine()
    nats.start_worker(sound)
    await sink.wait_for(1)
    await queue.stop()
    [failed] = sink.delivered
    assert failed.job_id == job_id and not failed.succeeded
    assert sound.rendered == []  # reported failed, not rendered a fourth time
    today = period_start(Period.DAY, time.time())
    assert (await ledger.usage(conn, USER, GUILD, today)).images == 0


async def test_a_device_broken_at_the_start_makes_the_worker_unhealthy_without_a_job(
    nats: NatsTransport,
) -> None:
    port = free_port()
    config = WorkerConfig(
        nats.server.url,
        ("gpu-0", "gpu-1"),
        idle_poll_s=0.1,
        metrics_endpoint=("127.0.0.1", port),
    )
    engines = {"gpu-0": BrokenAtStart(), "gpu-1": InstantEngine()}
    stop = asyncio.Event()
    worker = asyncio.create_task(serve(config, engines.__getitem__, stop))
    try:
        health = f"http://127.0.0.1:{port}/healthz"
        async with asyncio.timeout(10):
            while True:  # up once the worker has connected; unhealthy once gpu-0 is probed
                try:
                    answer = await asyncio.to_thread(fetch, health)
                except OSError:
                    answer = (0, "")
                if answer[0] == 503:
                    break
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        status = await worker
    assert answer == (503, f"device gpu-0 lost: {ILLEGAL_ACCESS}\n")
    assert status == DEVICE_LOST_EXIT_STATUS  # gpu-1 served on until the stop


@dataclass
class TooBigForTheDevice(InstantEngine):
    """Its render raises what CUDA raises for a launch too big (the device stays sound: its
    probe passes)."""

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]:
        raise RuntimeError("CUDA error: invalid configuration argument")

    def probe(self) -> None:
        """Sound: the error left the CUDA context as it was."""


async def test_an_error_that_leaves_the_device_sound_fails_the_job_and_the_worker_serves_on(
    conn: aiosqlite.Connection, tmp_path: Path, nats: NatsTransport
) -> None:
    queue, sink = await started_queue(conn, (await nats.client(slots=1)).slots(), tmp_path)
    job_id = await queue.submit(submission())
    stop = asyncio.Event()
    config = WorkerConfig(nats.server.url, ("gpu-0",), idle_poll_s=0.1)
    worker = asyncio.create_task(serve(config, lambda _: TooBigForTheDevice(), stop))
    await sink.wait_for(1)
    assert not worker.done()  # still serving
    stop.set()
    assert await worker == 0
    await queue.stop()
    assert [(job.job_id, job.succeeded) for job in sink.delivered] == [(job_id, False)]
    today = period_start(Period.DAY, time.time())
    assert (await ledger.usage(conn, USER, GUILD, today)).images == 0  # refunded
