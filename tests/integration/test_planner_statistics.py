"""SQLite's planner statistics (``sqlite_stat1``) are refreshed where SQLite advises: at the
connection's close, and every few hours on the long-lived one (each retention round). The real
queue on a real SQLite file, jobs made and delivered by an engine that needs no torch."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from bot.jobs.retention import Retention
from db import jobs as journal
from db.database import close, connect, refresh_planner_statistics
from tests.integration.test_stored_data import DAY, GUILD, MEMBER, NOW, Data


def analysed_tables(database: Path) -> set[str]:
    """The tables ``sqlite_stat1`` holds statistics of (read by a connection of its own)."""
    reader = sqlite3.connect(database)
    try:
        if not reader.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone():
            return set()
        return {str(table) for (table,) in reader.execute("SELECT tbl FROM sqlite_stat1")}
    finally:
        reader.close()


async def made_jobs(data: Data, count: int) -> None:
    queue = data.queue()
    await queue.start()
    for n in range(count):
        await data.finished_job(queue, NOW - DAY * (count - n) / count)
    await queue.stop()


async def test_the_close_leaves_statistics_of_the_tables_the_connection_queried(
    tmp_path: Path,
) -> None:
    database = tmp_path / "easel.sqlite3"
    conn = await connect(database)
    await made_jobs(Data(conn, tmp_path / "data"), 3)
    assert await journal.latest_unposted_result_of(conn, MEMBER, GUILD) is None  # plain /cancel's
    assert analysed_tables(database) == set()  # SQLite never analyses on its own

    await close(conn)

    assert {"jobs", "images", "quota_ledger"} <= analysed_tables(database)


@pytest.mark.parametrize("retention_days", [0, 1], ids=["kept forever", "pruned"])
async def test_each_retention_round_refreshes_the_statistics(
    tmp_path: Path, retention_days: int
) -> None:
    database = tmp_path / "easel.sqlite3"
    conn = await connect(database)
    try:
        data = Data(conn, tmp_path / "data")
        await made_jobs(data, 3)
        retention = Retention(conn, data.images, data.inputs, retention_days, clock=lambda: NOW)

        await retention.prune()

        assert "jobs" in analysed_tables(database)
    finally:
        await conn.close()


async def test_a_refresh_that_finds_the_database_held_is_logged_and_done_at_the_next(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = tmp_path / "easel.sqlite3"
    conn = await connect(database, busy_timeout_s=0.01)
    try:
        await made_jobs(Data(conn, tmp_path / "data"), 2)
        holder = sqlite3.connect(database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's write (a sqlite3 shell's)
        try:
            assert not await refresh_planner_statistics(conn)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # The warnings alone: the jobs' INFO lines are captured too where a test before this
        # one (in the same worker) set the root logger's level lower.
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert warnings == [
            "the database's planner statistics were not refreshed: database is locked"
        ]
        assert analysed_tables(database) == set()

        assert await refresh_planner_statistics(conn)

        assert "jobs" in analysed_tables(database)
    finally:
        await conn.close()
