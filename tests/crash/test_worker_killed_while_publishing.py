"""kill -9 a worker between a render and its result: it had rendered one job (its result not
yet published) and was rendering the next. Both are redelivered and each is delivered once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosqlite

from bot.jobs.broker.client import BrokerClient, BrokerConfig
from bot.jobs.queue import JobQueue, Submission
from db import jobs as journal
from inference.types import RenderRequest
from tests.distributed.nats_server import (
    PROCESS_WAIT_S,
    NatsServer,
    python_process,
    read_until,
)
from tests.support.sinks import RecordingSink


async def worker(url: str, *arguments: str) -> asyncio.subprocess.Process:
    process = await python_process("-m", "tests.distributed.worker_main", url, *arguments)
    await read_until(process, "serving", PROCESS_WAIT_S)
    return process


async def test_jobs_rendered_but_not_yet_published_survive_their_worker(
    nats_server: NatsServer, conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    # Its first job's PNG takes a minute to "encode": the worker renders the next one meanwhile.
    doomed = await worker(nats_server.url, "--seconds", "1", "--encode-seconds", "60")
    survivor: asyncio.subprocess.Process | None = None
    try:
        client = await BrokerClient.open(BrokerConfig(nats_server.url, ack_wait_s=1.0))
        queue = JobQueue(conn, client.slots(), tmp_path / "images")
        sink = RecordingSink()
        queue.set_sink(sink)
        await queue.start()
        job_ids = [
            await queue.submit(
                Submission("imagine", RenderRequest("a cat", seed=seed, steps=4), user_id=seed)
            )
            for seed in (1, 2)
        ]
        rendered_first = await read_until(doomed, "started", PROCESS_WAIT_S)
        second = next(job_id for job_id in job_ids if job_id not in rendered_first)
        await read_until(doomed, f"job {second}: started", PROCESS_WAIT_S)
        doomed.kill()  # the first job rendered, unpublished; the second mid-render

        survivor = await worker(nats_server.url)
        await sink.wait_for(2)
        await asyncio.sleep(1.5)  # past another ack wait: nothing comes twice
        await queue.stop()
        await client.close()
        delivered = sorted((job.job_id, job.succeeded) for job in sink.delivered)
        assert delivered == sorted((job_id, True) for job_id in job_ids)
        for job_id in job_ids:
            record = await journal.get_job(conn, job_id)
            assert record is not None and record.status is journal.JobStatus.DONE
    finally:
        for process in (doomed, survivor):
            if process is not None:
                if process.returncode is None:
                    process.kill()
                await process.wait()
