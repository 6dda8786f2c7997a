"""A backup of the database copied in for ``easel restore``: read through SQLite (so a -wal
beside the backup counts), written to a new file, and checked whole before it replaces the
database."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from db.database import SchemaTooNew, failed_writing, pending_migrations

# What SQLite keeps beside a database and replays into it at the next open.
BESIDE_A_DATABASE = ("-wal", "-shm", "-journal")


def files_beside(database: Path) -> tuple[Path, ...]:
    """The names of what SQLite keeps beside ``database`` (``BESIDE_A_DATABASE``)."""
    return tuple(Path(f"{database}{suffix}") for suffix in BESIDE_A_DATABASE)


class BackupUnusable(Exception):
    """The backup cannot be read, is damaged, or is no Easel database this Easel can use."""


@dataclass(frozen=True)
class JobsHeld:
    """What an Easel database holds, for an operator to tell one from another: its jobs,
    and when the newest was made (Unix time; None: no job)."""

    count: int
    newest: float | None


def jobs_held(database: Path) -> JobsHeld | None:
    """``JobsHeld`` of a database (read only, through SQLite: its -wal counts); None where
    SQLite cannot read its jobs."""
    try:
        with contextlib.closing(_read_only(database)) as conn:
            count, newest = conn.execute("SELECT COUNT(*), MAX(created_at) FROM jobs").fetchone()
    except sqlite3.Error:
        return None
    return JobsHeld(int(count), None if newest is None else float(newest))


def keep_copy(database: Path, to: Path) -> str | None:
    """Copy ``database`` to the new file ``to``: through SQLite's backup API; or, only where
    SQLite cannot read ``database`` (damaged, or another database's stale -wal beside it), its
    files as they are, its -wal as ``to``'s. None, or why SQLite could not read it. A copy that
    cannot be written (a full disk) raises ``OSError`` (what it wrote is the caller's to remove)."""
    try:
        copy_database(database, to)
        # One file, as an archive is kept: a later read (even read-only) leaves no -wal.
        with contextlib.closing(sqlite3.connect(to)) as copy:
            copy.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as error:
        if failed_writing(error):  # the copy's side (a full disk), not the database's
            raise OSError(f"the copy could not be written: {error}") from error
        for suffix in ("", "-wal"):
            if Path(f"{database}{suffix}").exists():
                shutil.copyfile(f"{database}{suffix}", f"{to}{suffix}")
        return str(error)
    return None


def _read_only(database: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{quote(str(database.resolve()))}?mode=ro", uri=True)


def copy_database(source: Path, to: Path) -> None:
    """Copy the database ``source`` to the new file ``to`` through SQLite's backup API: one
    consistent file, what its -wal holds taken in."""
    with contextlib.closing(_read_only(source)) as conn:
        target = sqlite3.connect(to)
        with contextlib.closing(target):
            conn.backup(target)


def copy_checked(backup: Path, to: Path) -> int:
    """Copy the database ``backup`` to the new file ``to``, check the copy
    (``PRAGMA integrity_check``) and return its schema version; ``BackupUnusable`` says why
    not (``to`` is then left for the caller to remove)."""
    try:
        copy_database(backup, to)
        copy = sqlite3.connect(to)
        with contextlib.closing(copy):
            problems = [str(row[0]) for row in copy.execute("PRAGMA integrity_check(5)")]
            version = int(copy.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as error:
        raise BackupUnusable(f"it cannot be read as an SQLite database ({error})") from None
    if problems != ["ok"]:
        raise BackupUnusable(f"it is damaged (integrity check: {'; '.join(problems)})")
    if version == 0:
        raise BackupUnusable("it is no Easel database (schema version 0: no Easel table)")
    try:
        pending_migrations(version)
    except SchemaTooNew as error:
        raise BackupUnusable(str(error)) from None
    return version
