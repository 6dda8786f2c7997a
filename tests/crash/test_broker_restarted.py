"""Restart the NATS server mid-run, same store folder: every job still finishes, and renders,
once."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import aiosqlite
import nats as nats_client
from nats.js.api import ConsumerInfo

from bot.jobs.broker.wire import JOBS_STREAM, consumer_name
from bot.jobs.queue import JobQueue, Submission
from inference.types import RenderRequest
from tests.distributed.transports import TEST_ACK_WAIT_S, NatsTransport
from tests.support.engines import HeldEngine, InstantEngine
from tests.support.sinks import RecordingSink

JOBS = 6


async def test_jobs_survive_a_broker_restart(
    nats: NatsTransport, conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    engine = InstantEngine(seconds=0.3)
    client = await nats.client(slots=4)
    nats.start_worker(engine, devices=("gpu-0", "gpu-1"))
    queue = JobQueue(conn, client.slots(), tmp_path / "images")
    sink = RecordingSink()
    queue.set_sink(sink)
    await queue.start()
    submitted = [
        await queue.submit(
            Submission("imagine", RenderRequest(f"job {n}", seed=n, steps=3), user_id=100 + n)
        )
        for n in range(JOBS)
    ]
    await sink.wait_for(1)
    nats.server.stop()  # jobs are queued and running on the broker right now
    await asyncio.sleep(0.5)
    nats.server.start()
    await sink.wait_for(JOBS)
    await queue.stop()

    assert Counter(job.job_id for job in sink.delivered) == dict.fromkeys(submitted, 1)
    assert all(job.succeeded for job in sink.delivered)
    assert sorted(request.seed for request in engine.rendered) == list(range(JOBS))


async def test_a_job_delivered_again_to_the_worker_still_rendering_it_renders_once(
    nats: NatsTransport, conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """The broker is down longer than the ack wait while a job renders: back, it delivers the
    job again at once, and the worker's idle device takes that copy. It is acked with the first
    delivery, not rendered a second time beside it."""
    with HeldEngine() as engine:
        client = await nats.client(slots=1)
        nats.start_worker(engine, devices=("gpu-0", "gpu-1"))
        queue = JobQueue(conn, client.slots(), tmp_path / "images")
        sink = RecordingSink()
        queue.set_sink(sink)
        await queue.start()
        job_id = await queue.submit(
            Submission("imagine", RenderRequest("held", seed=1, steps=3), user_id=100)
        )
        assert await asyncio.to_thread(engine.started.wait, 10)
        nats.server.stop()
        await asyncio.sleep(TEST_ACK_WAIT_S * 1.5)  # the job's heartbeats lapse
        nats.server.start()
        assert await redelivered(nats.server.url), "the broker did not deliver the job again"
        await asyncio.sleep(0.5)  # the idle device takes the copy
        engine.released.set()
        await sink.wait_for(1)
        assert await unacknowledged(nats.server.url) == 0
        await queue.stop()

    assert [job.job_id for job in sink.delivered] == [job_id]
    assert [request.seed for request in engine.rendered] == [1]


async def _jobs_consumer(url: str) -> ConsumerInfo:
    observer = await nats_client.connect(url)
    try:
        return await observer.jetstream().consumer_info(JOBS_STREAM, consumer_name(None))
    finally:
        await observer.close()


async def redelivered(url: str, within_s: float = 5.0) -> bool:
    """Whether the jobs consumer delivers a job again within ``within_s``."""
    deadline = asyncio.get_running_loop().time() + within_s
    while asyncio.get_running_loop().time() < deadline:
        if (await _jobs_consumer(url)).num_redelivered:
            return True
        await asyncio.sleep(0.05)
    return False


async def unacknowledged(url: str, within_s: float = 5.0) -> int:
    """The jobs consumer's deliveries not acknowledged, once none are or ``within_s`` passed."""
    deadline = asyncio.get_running_loop().time() + within_s
    pending = (await _jobs_consumer(url)).num_ack_pending or 0
    while pending and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        pending = (await _jobs_consumer(url)).num_ack_pending or 0
    return pending
