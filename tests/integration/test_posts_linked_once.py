"""A delivered result's post is linked to its job once: by the sink as soon as it is posted
(``History.result_posted``), not again when the queue records the delivery. Real SQLite."""

from __future__ import annotations

from pathlib import Path

import aiosqlite

from bot.history import History
from bot.jobs.queue import FinishedJob, JobQueue, Submission
from bot.policy.member_settings import MemberSettings
from inference.types import RenderRequest
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine
from tests.support.sinks import RecordingSink

MEMBER, GUILD, CHANNEL, POST = 7, 5, 50, 777


class LinkingSink(RecordingSink):
    """Posts each result as ``POST`` in its channel and links it as ``DiscordResults`` does."""

    def __init__(self, history: History) -> None:
        super().__init__()
        self.history = history

    async def deliver(self, job: FinishedJob) -> int | None:
        await super().deliver(job)
        await self.history.result_posted(job.job_id, job.guild_id, job.channel_id, POST)
        return POST


async def test_a_delivery_links_its_post_in_one_statement(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    sink = LinkingSink(History(conn, tmp_path, tmp_path, MemberSettings(conn)))
    engine = InstantEngine()
    queue = JobQueue(conn, [DeviceWorker("cpu", lambda _: engine)], tmp_path / "images")
    queue.set_sink(sink)
    statements: list[str] = []
    await conn.set_trace_callback(statements.append)
    await queue.start()
    try:
        request = RenderRequest("a barn", seed=1, steps=2)
        job_id = await queue.submit(Submission("imagine", request, MEMBER, GUILD, CHANNEL))
        await sink.wait_for(1)
    finally:
        await queue.stop()
        await conn.set_trace_callback(None)

    links = [statement for statement in statements if "INTO job_messages" in statement]
    assert len(links) == 1, links
    async with conn.execute(
        "SELECT message_id, guild_id, channel_id FROM job_messages WHERE job_id = ?", (job_id,)
    ) as cursor:
        assert [tuple(row) for row in await cursor.fetchall()] == [(POST, GUILD, CHANNEL)]
