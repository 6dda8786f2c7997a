"""A result sink for queue tests: records every delivery and lets a test wait for some."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import aiosqlite

from bot.jobs.queue import FinishedJob, JobQueue, RenderSlot
from bot.jobs.scheduler import Fairness
from db import jobs as journal


class RecordingSink:
    """Given the journal's connection, it links each post it returns to its job, as the bot's
    sink does (``History.result_posted``): the queue records only the delivery."""

    def __init__(self, conn: aiosqlite.Connection | None = None) -> None:
        self.delivered: list[FinishedJob] = []
        self.arrived = asyncio.Event()
        self._conn = conn

    async def deliver(self, job: FinishedJob) -> int | None:
        self.delivered.append(job)
        message_id = 1000 + len(self.delivered)
        if self._conn is not None:
            await journal.record_job_message(self._conn, job.job_id, message_id)
        self.arrived.set()
        return message_id

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(20):
            while len(self.delivered) < count:
                self.arrived.clear()
                await self.arrived.wait()


async def started_queue(
    conn: aiosqlite.Connection,
    slots: Sequence[RenderSlot],
    images_dir: Path,
    *,
    fairness: Fairness = "members",
) -> tuple[JobQueue, RecordingSink]:
    """A started queue on ``slots``, with a sink recording what it delivers."""
    queue = JobQueue(conn, slots, images_dir, fairness=fairness)
    sink = RecordingSink(conn)
    queue.set_sink(sink)
    await queue.start()
    return queue, sink
