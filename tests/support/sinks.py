"""A result sink for queue tests: records every delivery and lets a test wait for some."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import aiosqlite

from bot.jobs.queue import FinishedJob, JobQueue, RenderSlot


class RecordingSink:
    def __init__(self) -> None:
        self.delivered: list[FinishedJob] = []
        self.arrived = asyncio.Event()

    async def deliver(self, job: FinishedJob) -> int | None:
        self.delivered.append(job)
        self.arrived.set()
        return 1000 + len(self.delivered)

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(20):
            while len(self.delivered) < count:
                self.arrived.clear()
                await self.arrived.wait()


async def started_queue(
    conn: aiosqlite.Connection, slots: Sequence[RenderSlot], images_dir: Path
) -> tuple[JobQueue, RecordingSink]:
    """A started queue on ``slots``, with a sink recording what it delivers."""
    queue = JobQueue(conn, slots, images_dir)
    sink = RecordingSink()
    queue.set_sink(sink)
    await queue.start()
    return queue, sink
