"""A batch's results post in the order they were asked for, per member and channel: one
member's slow post never holds another member's, and a failed post does not block the
member's next one. Real SQLite, a device thread, a sink standing in for Discord."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosqlite

from bot.jobs.queue import FinishedJob, JobQueue, Submission
from db import jobs as journal
from inference.types import RenderRequest
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine
from tests.support.sinks import RecordingSink

GUILD, CHANNEL = 5, 50
MEMBER, OTHER = 1, 2


class SlowFirstPost(RecordingSink):
    """The post of ``slow`` waits until ``OTHER``'s result posted (at a 429, say), then
    fails; ``ended`` lists each post's end (posted or failed), in order."""

    def __init__(self) -> None:
        super().__init__()
        self.slow = ""
        self.other_posted = asyncio.Event()
        self.ended: list[str] = []

    async def deliver(self, job: FinishedJob) -> int | None:
        if job.job_id == self.slow:
            async with asyncio.timeout(20):
                await self.other_posted.wait()
            self.ended.append(job.job_id)
            raise RuntimeError("Discord answered 500")
        message_id = await super().deliver(job)
        self.ended.append(job.job_id)
        if job.user_id == OTHER:
            self.other_posted.set()
        return message_id


def submission(user_id: int, prompt: str) -> Submission:
    request = RenderRequest(prompt, seed=user_id, steps=2)
    return Submission("imagine", request, user_id, GUILD, CHANNEL)


async def test_a_members_results_post_in_order_without_holding_anyone_else(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    slots = [DeviceWorker("cpu", lambda _: InstantEngine())]
    # Journaled before the queue starts: its device is handed the three as one batch.
    journaling = JobQueue(conn, slots, tmp_path / "images")
    first = await journaling.submit(submission(MEMBER, "first"))
    second = await journaling.submit(submission(MEMBER, "second"))
    other = await journaling.submit(submission(OTHER, "another member's"))
    queue = JobQueue(conn, slots, tmp_path / "images")
    sink = SlowFirstPost()
    sink.slow = first
    queue.set_sink(sink)
    await queue.start()
    try:
        await sink.wait_for(2)
    finally:
        await queue.stop()
    # The other member's post did not wait for the member's slow one (which waited for it);
    # the member's second came after their first, although the first failed.
    assert sink.ended == [other, first, second]
    assert [job.job_id for job in sink.delivered] == [other, second]
    delivered = {
        job_id: record.delivered_at is not None
        for job_id in (first, second)
        if (record := await journal.get_job(conn, job_id))
    }
    assert delivered == {first: False, second: True}  # the next start posts the first again
