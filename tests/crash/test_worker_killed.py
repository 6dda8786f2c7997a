"""kill -9 a worker process mid-render: the job is redelivered and finishes on another."""

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


async def test_a_job_finishes_on_another_worker_when_its_worker_is_killed(
    nats_server: NatsServer, conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    workers = [
        await python_process(
            "-m",
            "tests.distributed.worker_main",
            nats_server.url,
            "--seconds",
            "1",
            "--devices",
            f"gpu-{index}",
        )
        for index in range(2)
    ]
    try:
        for worker in workers:
            await read_until(worker, "serving", PROCESS_WAIT_S)
        client = await BrokerClient.open(BrokerConfig(nats_server.url, ack_wait_s=1.0))
        queue = JobQueue(conn, client.slots(), tmp_path / "images")
        sink = RecordingSink()
        queue.set_sink(sink)
        await queue.start()
        job_id = await queue.submit(
            Submission("imagine", RenderRequest("a cat", seed=3, steps=10), user_id=7)
        )
        readers = {
            asyncio.create_task(
                read_until(worker, f"job {job_id}: started", PROCESS_WAIT_S)
            ): worker
            for worker in workers
        }
        done, pending = await asyncio.wait(readers, return_when=asyncio.FIRST_COMPLETED)
        for reader in pending:
            reader.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        first_line = done.pop()
        first = readers[first_line]
        assert "(delivery 1)" in first_line.result()
        first.kill()  # mid-render: it renders for 1 s
        survivor = next(worker for worker in workers if worker is not first)

        line = await read_until(survivor, f"job {job_id}: started", PROCESS_WAIT_S)
        assert "(delivery 2)" in line
        async with asyncio.timeout(10):
            await sink.arrived.wait()
        await queue.stop()
        await client.close()
        assert [(job.job_id, job.succeeded) for job in sink.delivered] == [(job_id, True)]
        record = await journal.get_job(conn, job_id)
        assert record is not None and record.status is journal.JobStatus.DONE
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
            await worker.wait()
