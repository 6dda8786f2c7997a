"""A start with a deep backlog reads and replays the journal's queued jobs in turns with the
event loop's other tasks (the health check, the web pages), a bounded number of jobs at a time;
real SQLite."""

from __future__ import annotations

import asyncio
from itertools import pairwise
from pathlib import Path

import aiosqlite
import pytest

from bot.jobs.queue import JobQueue
from bot.jobs.queue.job_queue import REPLAYED_AT_ONCE
from db import jobs as journal
from db.jobs import RECORDS_PER_TURN
from inference.types import RenderRequest

QUEUED = 2 * RECORDS_PER_TURN + 1  # several turns of both


async def test_a_deep_backlog_is_replayed_a_bounded_number_of_jobs_at_a_time(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = RenderRequest("a barn", seed=1, steps=2).to_json()
    for index in range(QUEUED):
        new = journal.NewJob(f"{index:016x}", "imagine", 7 + index % 5, 5, 50, request, 1e9 + index)
        await journal.insert_job(conn, new)
    rows_read = 0  # the journal's rows made into records
    record = journal._job

    def counted(row: aiosqlite.Row) -> journal.JobRecord:
        nonlocal rows_read
        rows_read += 1
        return record(row)

    monkeypatch.setattr(journal, "_job", counted)
    queue = JobQueue(conn, [], tmp_path / "images")  # no slot: nothing renders
    seen: list[tuple[int, int]] = []  # rows read and jobs queued each time another task ran

    async def watch() -> None:  # as the health check or the dashboard, meanwhile
        while True:
            seen.append((rows_read, queue.queued_count()))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    try:
        await queue.start()
    finally:
        watcher.cancel()
        await queue.stop()
    assert queue.queued_count() == QUEUED
    read_between_turns = max(later[0] - earlier[0] for earlier, later in pairwise(seen))
    assert read_between_turns <= RECORDS_PER_TURN, (
        f"{read_between_turns} rows read with no other task's turn"
    )
    replayed_between_turns = max(later[1] - earlier[1] for earlier, later in pairwise(seen))
    assert replayed_between_turns <= REPLAYED_AT_ONCE, (
        f"{replayed_between_turns} jobs replayed with no other task's turn"
    )
