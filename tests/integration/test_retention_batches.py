"""Retention deletes old jobs a batch per transaction, so a day of them never holds the only
connection for seconds, and reads the journal a chunk of result folders at a time. The real
queue on a real SQLite file, real files, and a fixed clock."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import aiosqlite
import pytest

from bot.jobs import retention
from bot.jobs.retention import Retention
from bot.jobs.stored_files import ResultFolders, remove_result_folders
from db import history
from db import jobs as journal
from db.database import transaction
from tests.integration.test_stored_data import DAY, NOW, Data, written_at


async def test_old_jobs_go_a_batch_per_transaction_and_other_work_runs_between(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "PRUNE_BATCH", 2)
    data = Data(conn, tmp_path / "data")
    queue = data.queue()
    await queue.start()
    old = [await data.finished_job(queue, NOW - (40 - day) * DAY) for day in range(5)]
    fresh = await data.finished_job(queue, NOW - 3600)
    await queue.stop()
    leftover = data.images / "0123456789abcdef"  # a crash's: its job never reached the journal
    leftover.mkdir()
    (leftover / "0.png").write_bytes(b"a picture")
    written_at(data.root, NOW - 2 * 3600)
    order: list[str] = []
    prune_batch = history.prune_jobs
    waiting: list[asyncio.Task[None]] = []

    async def another_write() -> None:
        async with transaction(conn):
            await conn.execute("UPDATE jobs SET priority = priority WHERE id = ?", (fresh,))
        order.append("another write")

    async def batch_then_another_write(
        conn: aiosqlite.Connection, finished_before: float, at_most: int
    ) -> history.PrunedJobs:
        pruned = await prune_batch(conn, finished_before, at_most)
        order.append(f"batch of {len(pruned.job_ids)}")
        if len(order) == 1:
            waiting.append(asyncio.create_task(another_write()))
        return pruned

    monkeypatch.setattr(history, "prune_jobs", batch_then_another_write)
    pruned = await Retention(conn, data.images, data.inputs, 1, clock=lambda: NOW).prune()
    await asyncio.gather(*waiting)

    # The 5 jobs in 3 transactions, their pictures and the leftover's, their uploads; the
    # write asked for during the first batch ran before the last.
    assert (pruned.jobs, pruned.pictures, pruned.uploads) == (5, 6, 5)
    assert [step for step in order if step.startswith("batch")] == [
        "batch of 2",
        "batch of 2",
        "batch of 1",
    ]
    assert order.index("another write") < order.index("batch of 1")
    for gone in old:
        assert await journal.get_job(conn, gone) is None
        assert not (data.images / gone).exists()
    assert not leftover.exists()
    assert await journal.get_job(conn, fresh) is not None
    assert (data.images / fresh / "0.png").is_file()


def test_a_folder_removed_while_the_sweep_reads_is_skipped(tmp_path: Path) -> None:
    """The listing is read a chunk at a time, seconds apart at 100,000 folders: a folder
    another path removed meanwhile (a /forget-me, a delivery given up) stops nothing."""
    images = tmp_path / "images"
    for number in range(6):
        folder = images / f"{number:016x}"
        folder.mkdir(parents=True)
        (folder / "0.png").write_bytes(b"png")
        os.utime(folder, (1, 1))
    listing = ResultFolders(images)
    try:
        first = listing.next_old(written_before=2, at_most=2)
        unread = sorted(set(images.iterdir()) - set(first))
        shutil.rmtree(unread[0])
        assert len(listing.next_old(written_before=2, at_most=10)) == 3
    finally:
        listing.close()
    assert remove_result_folders([unread[0], *first], kept=set()) == 2
