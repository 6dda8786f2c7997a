"""Easel's storage refusing a member's command, as the member is told: the data disk or the
database full, the disk slow to answer (a write failed, and a page's write asked of its folder
then held past its time), or the database held by another writer past its busy timeout. Not
the member's doing, and nothing is charged for it: a job's journaling and its quota
reservation are one transaction, and an upload is saved before either."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from db.database import SlowToAnswer, storage_failure

# SQLite's answers while another connection holds the database (past the busy timeout).
_HELD = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


@dataclass(frozen=True)
class StorageTrouble:
    what: str  # what is wrong, as the member reads it
    try_again: str  # when to try again

    def told(self, queued_job: str | None = None) -> str:
        """The sentence: nothing was charged, unless the command had journaled
        ``queued_job`` before its storage failed (that one stands: it renders, and is
        charged)."""
        if queued_job is not None:
            return f"{self.what}; your job `{queued_job}` is queued all the same."
        return f"{self.what}; nothing was charged; {self.try_again}."


STORAGE_FULL = StorageTrouble("Easel's storage is full right now", "try again later")
DATABASE_BUSY = StorageTrouble("Easel's database is busy right now", "try again in a minute")
STORAGE_SLOW = StorageTrouble("Easel's storage is slow to answer right now", "try again later")


async def storage_trouble(error: BaseException) -> StorageTrouble | None:
    """``STORAGE_FULL`` when ``error`` is (or was raised while handling) a write that found no
    room (``storage_failure``: the disk or SQLite's file), ``STORAGE_SLOW`` when it is a
    failed write whose folder held a page's write past its time, ``DATABASE_BUSY`` when it is
    SQLite's refusal while another writer holds the database; None for anything else."""
    failure = await storage_failure(error)
    if isinstance(failure, SlowToAnswer):
        return STORAGE_SLOW
    if failure is not None:
        return STORAGE_FULL
    if (
        isinstance(error, sqlite3.OperationalError)
        and (error.sqlite_errorcode or 0) & 0xFF in _HELD
    ):
        return DATABASE_BUSY
    return None
