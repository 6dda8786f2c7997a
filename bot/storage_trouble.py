"""Easel's storage refusing a member's command, as the member is told: the data disk or the
database full, or the database held by another writer past its busy timeout. Not the member's
doing, and nothing is charged for it: a job's journaling and its quota reservation are one
transaction, and an upload is saved before either."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from db.database import is_out_of_room

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


async def storage_trouble(error: BaseException) -> StorageTrouble | None:
    """``STORAGE_FULL`` when ``error`` is (or was raised while handling) a write that found no
    room (``is_out_of_room``: the disk or SQLite's file), ``DATABASE_BUSY`` when it is SQLite's
    refusal while another writer holds the database; None for anything else."""
    if await is_out_of_room(error):
        return STORAGE_FULL
    if (
        isinstance(error, sqlite3.OperationalError)
        and (error.sqlite_errorcode or 0) & 0xFF in _HELD
    ):
        return DATABASE_BUSY
    return None
