"""Restart the NATS server mid-run, same store folder: every job still finishes once."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import aiosqlite

from bot.jobs.queue import JobQueue, Submission
from inference.types import RenderRequest
from tests.distributed.transports import NatsTransport
from tests.support.engines import InstantEngine
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
