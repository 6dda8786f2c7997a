"""What the bot owes the broker of ended jobs (``broker_chores``): written with each job's end,
removed once done (``bot.jobs.queue.broker_chores``)."""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from db.database import outside_transactions, transaction


@dataclass(frozen=True)
class OwedChore:
    job_id: str
    outcome: str  # "done", "failed" or "cancelled": the marker its stored result becomes
    owed_since: float


async def owe(conn: aiosqlite.Connection, job_id: str, outcome: str, now: float) -> None:
    """Record that ``job_id`` ended with ``outcome`` and the broker's copies of it are to be
    settled; for the caller's transaction, the one that records the end."""
    await conn.execute(
        "INSERT OR REPLACE INTO broker_chores (job_id, outcome, owed_since) VALUES (?, ?, ?)",
        (job_id, outcome, now),
    )


async def owed(conn: aiosqlite.Connection) -> list[OwedChore]:
    """Every chore still to do, oldest first. Read outside any other coroutine's transaction:
    an end's chore read before its transaction commits could be settled, and then rolled
    back."""
    async with (
        outside_transactions(conn),
        conn.execute(
            "SELECT job_id, outcome, owed_since FROM broker_chores ORDER BY owed_since"
        ) as cursor,
    ):
        return [OwedChore(*row) for row in await cursor.fetchall()]


async def discharge(conn: aiosqlite.Connection, job_id: str) -> None:
    """``job_id``'s chore is done, or given up (a transaction of its own)."""
    async with transaction(conn):
        await conn.execute("DELETE FROM broker_chores WHERE job_id = ?", (job_id,))
