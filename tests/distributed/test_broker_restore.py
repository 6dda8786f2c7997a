"""A database put back from a backup in broker mode: a job it held running was handed over to
the broker before the stop, so its message still waits in the jobs stream. The restored start
ends it lost (``bot.restores``) and settles it with the broker as a cancelled job's end does:
no worker renders it later, and nothing of it is left there."""

from __future__ import annotations

import time
from pathlib import Path

import aiosqlite

from bot.restores import mark_restored, take_run_mark
from db import jobs
from tests.distributed.test_broker_chores import (
    settled_before_a_worker_renders,
    started_queue,
    submission,
    until_handed_over,
)
from tests.distributed.transports import NatsTransport


async def test_a_job_lost_in_a_restore_is_never_rendered_by_a_worker(
    conn: aiosqlite.Connection, tmp_path: Path, nats: NatsTransport
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    await take_run_mark(conn, data_dir, time.time(), settles_copies=True)
    client = await nats.client(slots=1)
    queue, _ = await started_queue(conn, client, tmp_path)
    lost = await queue.submit(submission(seed=3))
    await until_handed_over(nats.server.url)  # no worker yet: its message waits there
    await queue.stop()
    await client.close()
    # The database now is a backup taken while the job ran, put back by ``easel restore``.
    mark_restored(data_dir)

    assert await take_run_mark(conn, data_dir, time.time(), settles_copies=True) == [lost]
    await settled_before_a_worker_renders(conn, tmp_path, nats, lost)
    record = await jobs.get_job(conn, lost)
    assert record is not None and record.status is jobs.JobStatus.CANCELLED
