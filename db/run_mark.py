"""The run mark (table ``run_mark`` from ``0035_run_mark.sql``): which start last wrote this
database, and how many of its unfinished jobs have ended (``0038_run_mark_jobs_ended.sql``),
so that the next start tells a database put back from a backup from one a crash left
(``bot.restores``)."""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from db.database import outside_transactions
from db.jobs import JobStatus

# The end of a job a restored database held queued or running: its member reads it in /history.
LOST_IN_A_RESTORE = "lost in a restore from a backup"


@dataclass(frozen=True)
class RunMark:
    run_id: str
    # Queued or running jobs ended or deleted so far: the table's triggers count them.
    jobs_ended: int


async def read(conn: aiosqlite.Connection) -> RunMark | None:
    """The mark of the last start on this database, as committed (never another coroutine's
    transaction half done); None before the first start that wrote one (a new database, or one
    of an Easel before schema 35)."""
    async with outside_transactions(conn):
        rows = await conn.execute_fetchall(
            "SELECT run_id, jobs_ended FROM run_mark WHERE only_row = 1"
        )
    return next((RunMark(str(row[0]), int(row[1])) for row in rows), None)


async def write(conn: aiosqlite.Connection, run_id: str) -> RunMark:
    """Make ``run_id`` the mark (its count of ended jobs goes on); in the caller's
    ``transaction``. Returns the mark as that transaction commits it: nothing else writes
    the table while it holds the write lock."""
    rows = await conn.execute_fetchall(
        "INSERT INTO run_mark (only_row, run_id) VALUES (1, ?)"
        " ON CONFLICT (only_row) DO UPDATE SET run_id = excluded.run_id"
        " RETURNING run_id, jobs_ended",
        (run_id,),
    )
    ((written_id, jobs_ended),) = rows
    return RunMark(str(written_id), int(jobs_ended))


async def end_unfinished_as_lost(conn: aiosqlite.Connection, now: float) -> list[str]:
    """End every queued or running job as cancelled, ``LOST_IN_A_RESTORE``, and as delivered
    (nothing is posted of it: its result was posted before the backup was put back, or its
    member chose otherwise since); the ids ended. In the caller's ``transaction``, with their
    refunds."""
    rows = await conn.execute_fetchall(
        "UPDATE jobs SET status = ?, finished_at = ?, error = ?, delivered_at = ?,"
        " interaction_token = NULL"
        " WHERE status IN (?, ?) RETURNING id",
        (
            JobStatus.CANCELLED.value,
            now,
            LOST_IN_A_RESTORE,
            now,
            JobStatus.QUEUED.value,
            JobStatus.RUNNING.value,
        ),
    )
    return sorted(str(row[0]) for row in rows)
