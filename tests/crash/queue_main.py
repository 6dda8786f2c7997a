"""The bot's job queue alone in a process, so a test can kill -9 it and start it again.

    python -m tests.crash.queue_main DB IMAGES POSTED [--submit N] [--seconds S] [--queue-url URL]

Submits N jobs (printing "submitted <id>"), then runs until every journaled job is finished
and delivered, and exits 0. Each delivery appends "<job id> <outcome>" to POSTED, flushed to disk
before it returns, standing in for the Discord message; like Discord with an enforced nonce
(Easel sends the job id), a second delivery of the same job shows nothing new and is counted in
POSTED.repeats instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

import aiosqlite

from bot.jobs.broker.client import BrokerClient, BrokerConfig
from bot.jobs.queue import FinishedJob, JobQueue, RenderSlot, Submission
from bot.web.links import load_secret
from db.database import connect
from inference.types import RenderRequest
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine


class FilePoster:
    def __init__(self, path: Path) -> None:
        self._path = path
        self.posted = asyncio.Event()

    async def deliver(self, job: FinishedJob) -> int | None:
        shown = self._path.read_text().split() if self._path.exists() else []
        target = self._path.with_suffix(".repeats") if job.job_id in shown else self._path
        with target.open("a") as posted:
            posted.write(f"{job.job_id} {'done' if job.succeeded else job.error}\n")
            posted.flush()
            os.fsync(posted.fileno())
        print("posted", job.job_id, flush=True)
        self.posted.set()
        return None


async def unfinished(conn: aiosqlite.Connection) -> int:
    async with conn.execute("SELECT COUNT(*) FROM jobs WHERE delivered_at IS NULL") as rows:
        row = await rows.fetchone()
    assert row is not None
    return int(row[0])


async def main(args: argparse.Namespace) -> None:
    conn = await connect(args.db)
    client: BrokerClient | None = None
    slots: Sequence[RenderSlot]
    if args.queue_url:
        # Kept beside the journal, as the bot keeps it in its data folder: the restarted
        # process must verify the results of the jobs the killed one published.
        job_key = load_secret("", args.db.parent, "broker-secret")
        config = BrokerConfig(args.queue_url, result_recheck_s=0.3, job_key=job_key)
        client = await BrokerClient.open(config)
        slots = client.slots()
    else:
        engine = InstantEngine(seconds=args.seconds)
        slots = [DeviceWorker("cpu", lambda _: engine)]
    queue = JobQueue(conn, slots, args.images)
    poster = FilePoster(args.posted)
    queue.set_sink(poster)
    await queue.start()
    for index in range(args.submit):
        request = RenderRequest(f"job {index}", seed=index, steps=4)
        job_id = await queue.submit(Submission("imagine", request, user_id=100 + index))
        print("submitted", job_id, flush=True)
    while True:
        poster.posted.clear()  # before counting, so a post during the count is not missed
        if not await unfinished(conn):
            break
        # A post is marked delivered a moment after it is made (its own write): counted in
        # between, the last job is still undelivered and no post follows; so count again.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(poster.posted.wait(), 0.5)
    await queue.stop()
    await conn.close()
    if client is not None:
        await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("db", type=Path)
    parser.add_argument("images", type=Path)
    parser.add_argument("posted", type=Path)
    parser.add_argument("--submit", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--queue-url", default="")
    asyncio.run(main(parser.parse_args()))
