"""A data folder put back from a backup, told at each start from one a crash left.

A backup of the database holds the jobs queued or running when it was taken; they were rendered
and posted since, and a member may have had them erased. So each start writes a new random run
mark both into the database (``db.run_mark``) and into ``EASEL_DATA_DIR/easel.run``, a file no
backup holds. A database whose mark that file does not name was put back: its queued and
running jobs end cancelled, "lost in a restore from a backup", refunded, and nothing of them is
rendered or posted. ``easel restore`` leaves the file naming no mark (``mark_restored``), so
that a backup taken since the last start, or one without a mark (of an Easel before schema 35),
counts as put back too. A whole folder moved keeps both marks; a database without a mark yet
and no file (the first start after an upgrade) counts as the folder's own.

A start with no database beside stored pictures (put back before it) would make an empty one
whose first retention sweep deletes them all: it is refused (``PicturesWithoutDatabase``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import uuid
from pathlib import Path

import aiosqlite

from bot.jobs import accounting
from db import run_mark
from db.database import transaction
from db.run_mark import LOST_IN_A_RESTORE

log = logging.getLogger(__name__)

RUN_FILE_NAME = "easel.run"

__all__ = ["LOST_IN_A_RESTORE"]  # the end /history names


class PicturesWithoutDatabase(Exception):
    """Stored pictures or uploads, and no database naming them."""


def stored_files_without_database(database: Path, stored_dirs: tuple[Path, ...]) -> int:
    """How many files ``stored_dirs`` (images/, inputs/) hold while ``database`` does not exist
    yet (or is empty): 0 when it does."""
    with contextlib.suppress(FileNotFoundError):
        if database.stat().st_size > 0:
            return 0
    return sum(len(files) for folder in stored_dirs for _, _, files in os.walk(folder))


def pictures_without_database_problem(database: Path, stored_dirs: tuple[Path, ...]) -> str | None:
    """One line for a data folder holding stored files and no database; None otherwise."""
    count = stored_files_without_database(database, stored_dirs)
    if not count:
        return None
    folders = " and ".join(f"{folder.name}/" for folder in stored_dirs)
    return (
        f"{database.parent} holds {count} stored picture or upload file(s) in {folders} but no "
        f"{database.name}: a new database would delete them as no job's; put {database.name} "
        f"back first (`easel restore BACKUP_FILE`), or empty {folders} to start afresh"
    )


def refuse_pictures_without_database(database: Path, stored_dirs: tuple[Path, ...]) -> None:
    """Raise ``PicturesWithoutDatabase`` (its one line) when the start would make a new
    database beside stored files."""
    if (problem := pictures_without_database_problem(database, stored_dirs)) is not None:
        raise PicturesWithoutDatabase(problem)


# SQLite's "database disk image is malformed" and "file is not a database".
_DAMAGED = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def damaged_database_problem(database: Path, error: BaseException) -> str | None:
    """One line naming the likely cause and the remedy when ``error`` (or one it was raised
    while handling) says the database is damaged; None otherwise."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, sqlite3.DatabaseError) and seen.sqlite_errorcode & 0xFF in _DAMAGED:
            return (
                f"{database} is damaged ({seen}): if it was just put back from a backup, the "
                f"likely cause is an old {database.name}-wal left beside it, which SQLite has "
                "now merged in; stop Easel and put the backup back with `easel restore "
                "BACKUP_FILE`, which removes the -wal and -shm first"
            )
        seen = seen.__cause__ or seen.__context__
    return None


async def take_run_mark(conn: aiosqlite.Connection, data_dir: Path, now: float) -> list[str]:
    """Give this start a new run mark (in ``conn`` and in ``data_dir``'s run file) before the
    queue reads the journal; when ``conn``'s database was put back from a backup, its queued
    and running jobs end lost, refunded and never posted, in the transaction that writes the
    mark. Returns the ids of the jobs so ended."""
    named = await asyncio.to_thread(_read_run_file, data_dir)
    marked = await run_mark.read(conn)
    if named is None:  # no file: a database with a mark came without its folder
        restored = marked is not None
    else:  # a file naming none: ``easel restore``'s; a database without a mark beside a file
        # naming some: a backup from before schema 35 copied in by hand (a new database, the
        # only other one, has no jobs to end)
        restored = not named or marked is None or marked not in named
    mark = uuid.uuid4().hex
    if not restored:
        # The file names the database's mark beside the new one until the database holds the
        # new one (a restored one's file stays as it is until then): a stop between any two of
        # these writes leaves what the next start reads as this one did.
        kept = [] if marked is None else [marked]
        await asyncio.to_thread(_write_run_file, data_dir, [mark, *kept])
    async with transaction(conn):
        lost = await run_mark.end_unfinished_as_lost(conn, now) if restored else []
        for job_id in lost:
            await accounting.refund(conn, job_id, now)
        await run_mark.write(conn, mark)
    await asyncio.to_thread(_write_run_file, data_dir, [mark])
    if restored:
        log.warning(
            "this database was put back from a backup (by `easel restore`, or its run mark is "
            "not in %s): "
            "%d job(s) it held queued or running ended as %s, refunded, not rendered or posted%s",
            data_dir / RUN_FILE_NAME,
            len(lost),
            LOST_IN_A_RESTORE,
            f": {', '.join(lost)}" if lost else "",
        )
    return lost


def mark_restored(data_dir: Path) -> None:
    """Make the next start take its database for one put back from a backup (``easel
    restore``): the run file names no mark."""
    _write_run_file(data_dir, [])


def _read_run_file(data_dir: Path) -> frozenset[str] | None:
    """The marks the run file names; None when there is no file."""
    try:
        text = (data_dir / RUN_FILE_NAME).read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return None
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


def _write_run_file(data_dir: Path, marks: list[str]) -> None:
    """The run file naming ``marks``, replaced whole and on disk before this returns."""
    path = data_dir / RUN_FILE_NAME
    written = path.with_name(f"{RUN_FILE_NAME}.new")
    with written.open("w", encoding="ascii") as file:
        file.write("".join(f"{mark}\n" for mark in marks))
        file.flush()
        os.fsync(file.fileno())
    written.replace(path)
    if os.name == "posix":  # the rename itself on disk (Windows opens no folder so)
        folder = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
