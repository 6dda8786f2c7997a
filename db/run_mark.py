"""The run mark (table ``run_mark`` from ``0035_run_mark.sql``): which start last wrote this
database, so that the next one tells a database put back from a backup from one a crash left
(``bot.restores``)."""

from __future__ import annotations

import aiosqlite

from db.jobs import JobStatus

# The end of a job a restored database held queued or running: its member reads it in /history.
LOST_IN_A_RESTORE = "lost in a restore from a backup"


async def read(conn: aiosqlite.Connection) -> str | None:
    """The mark of the last start on this database; None before the first start that wrote one
    (a new database, or one of an Easel before schema 35)."""
    rows = await conn.execute_fetchall("SELECT run_id FROM run_mark WHERE only_row = 1")
    return next((str(row[0]) for row in rows), None)


async def write(conn: aiosqlite.Connection, run_id: str) -> None:
    """Make ``run_id`` the mark; in the caller's ``transaction``."""
    await conn.execute(
        "INSERT INTO run_mark (only_row, run_id) VALUES (1, ?)"
        " ON CONFLICT (only_row) DO UPDATE SET run_id = excluded.run_id",
        (run_id,),
    )


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
