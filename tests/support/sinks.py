"""A result sink for queue tests: records every delivery and lets a test wait for some."""

from __future__ import annotations

import asyncio

from bot.queue import FinishedJob


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
