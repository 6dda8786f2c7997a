"""A data folder put back from a backup, told at each start from one a crash left.

A backup of the database holds the jobs queued or running when it was taken; they were rendered
and posted since, and a member may have had them erased. So each start writes a new random run
mark both into the database (``db.run_mark``) and into ``EASEL_DATA_DIR/easel.run``, a file no
backup holds. A database whose mark that file does not name was put back: its queued and
running jobs end cancelled, "lost in a restore from a backup", refunded, and nothing of them is
rendered or posted. ``easel restore`` leaves the file naming no mark (``mark_restored``), so
that a backup taken since the last start, or one without a mark (of an Easel before schema 35),
counts as put back too. A backup taken during the current run and put back by hand, the file
left in place, holds the current mark: the file also gives, for its mark, how many queued or
running jobs had ended (the database counts them in each end's transaction; ``RunFileKeeper``
copies the count while the bot runs), so one that counts fewer is a copy from before those ends,
put back. A whole folder moved keeps both marks; a database without a mark yet and no file (the
first start after an upgrade) counts as the folder's own.

A start with no database beside stored pictures (put back before it) would make an empty one
whose first retention sweep deletes them all: it is refused (``PicturesWithoutDatabase``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from bot.jobs import accounting
from bot.on_disk import put_on_disk
from bot.settings import DATABASE_FILE_NAME
from db import broker_chores, run_mark
from db.backups import files_beside
from db.database import causes, transaction
from db.run_mark import LOST_IN_A_RESTORE

log = logging.getLogger(__name__)

RUN_FILE_NAME = "easel.run"
# How often the running bot copies the database's count of ended jobs into the run file: ends
# recorded within this before a crash are not in it (``RunFileKeeper``).
RUN_FILE_CATCH_UP_S = 1.0

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
    for seen in causes(error):
        if isinstance(seen, sqlite3.DatabaseError) and seen.sqlite_errorcode & 0xFF in _DAMAGED:
            return (
                f"{database} is damaged ({seen}): if it was just put back from a backup, the "
                f"likely cause is an old {database.name}-wal left beside it, which SQLite has "
                "now merged in; stop Easel and put the backup back with `easel restore "
                "BACKUP_FILE`, which removes the -wal and -shm first"
            )
    return None


def staged_copy(database: Path) -> Path:
    """Where ``easel restore`` checks its backup's copy before putting it in place: a copy of
    a file still there, so a start deletes one left (``tidy_restore_copies``)."""
    return database.with_name(f"{database.name}.restoring")


def replaced_copy(database: Path) -> Path:
    """Where ``easel restore`` keeps the database it replaced, to put back if it was wrong."""
    return database.with_name(f"{database.name}.replaced")


def being_written(copy: Path) -> Path:
    """Where ``easel restore`` writes a copy of the live database (``replaced_copy``) until it
    is whole and takes its name. The live database is replaced only after that, so one left
    (a restore killed while copying) is a copy of a database still in place: a start deletes
    it (``tidy_restore_copies``)."""
    return copy.with_name(f"{copy.name}.new")


def putting_back_copy(database: Path) -> Path:
    """Where ``easel restore`` of ``replaced_copy`` itself moves its checked copy before the
    live database's copy takes .replaced's name: from then until it is in place, the only copy
    of the database being put back, so nothing but the operator deletes one left."""
    return database.with_name(f"{database.name}.putting-back")


def _since(path: Path) -> str:
    at = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return f"since {at:%Y-%m-%d %H:%M} UTC"


_UNREACHED = "holds members' data that /forget-me and retention do not reach"


def putting_back_problem(database: Path) -> str | None:
    """The line for a ``putting_back_copy`` left beside ``database`` (None without one): how
    to put it in place without losing the database that restore was replacing."""
    putting_back, replaced = putting_back_copy(database), replaced_copy(database)
    try:
        since = _since(putting_back)
    except FileNotFoundError:
        return None
    return (
        f"{putting_back} (the database an `easel restore {replaced}` cut short was putting "
        f"back, checked whole, {since}) {_UNREACHED}, and may be its only copy: move "
        f"{replaced.name}, if it is there, out of {database.parent} (it holds the database "
        f"that restore was replacing, or a copy of this one), then `easel restore "
        f"{putting_back}`, then delete {putting_back.name}"
    )


def restore_copies_problems(database: Path) -> list[str]:
    """One line for each copy of a database an ``easel restore`` left beside ``database``:
    each holds members' data that neither /forget-me nor retention reaches, so each says what
    to do with it. Reads nothing but the folder (``easel doctor``, and each start)."""
    replaced, staged = replaced_copy(database), staged_copy(database)
    lines = []
    with contextlib.suppress(FileNotFoundError):
        lines.append(
            f"{replaced} (the database an `easel restore` replaced, kept {_since(replaced)}) "
            f"{_UNREACHED}: once that restore is right, delete it (and any {replaced.name}-wal "
            f"beside it); if it was wrong, `easel restore {replaced}` puts it back"
        )
    if (putting_back := putting_back_problem(database)) is not None:
        lines.append(putting_back)
    with contextlib.suppress(FileNotFoundError):
        lines.append(
            f"{staged} (a copy of a backup, left by an `easel restore` cut short, "
            f"{_since(staged)}) {_UNREACHED}: the next start deletes it"
        )
    writing = being_written(replaced)
    with contextlib.suppress(FileNotFoundError):
        lines.append(
            f"{writing} (a copy of {database.name} that an `easel restore` cut short was "
            f"making, {_since(writing)}) {_UNREACHED}: the next start deletes it"
        )
    for path in _left_beside_no_replaced_copy(database):
        with contextlib.suppress(FileNotFoundError):
            lines.append(
                f"{path} (left of {replaced.name}, which is gone, {_since(path)}) "
                f"{_UNREACHED}: the next start deletes it"
            )
    return lines


def _left_beside_no_replaced_copy(database: Path) -> list[Path]:
    """The -wal, -shm and -journal names of ``replaced_copy`` while it is not there (deleted
    by the operator without them, or a restore killed between moving the -wal of the copy it
    was writing and renaming that copy): SQLite reads them only with their database, and a
    restore deletes them before it writes a new one."""
    replaced = replaced_copy(database)
    if replaced.exists():
        return []
    return list(files_beside(replaced))


def tidy_restore_copies(database: Path) -> None:
    """At a start holding the data folder's lock (no ``easel restore`` runs then): the copies
    an ``easel restore`` cut short left that copy a file still there (``staged_copy``, of a
    backup; ``being_written``, of the live database) are deleted, with their -wal, -shm and
    -journal, as are those of a ``replaced_copy`` that is gone; each copy left, never deleted
    here (``replaced_copy``, ``putting_back_copy``), is logged as a warning
    (``restore_copies_problems``)."""
    for copy, what in (
        (staged_copy(database), "a copy of a backup"),
        (being_written(replaced_copy(database)), f"a copy of {database.name}"),
    ):
        for path in (copy, *files_beside(copy)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                if path == copy:
                    log.info("deleted %s, %s left by an `easel restore` cut short", copy, what)
    for path in _left_beside_no_replaced_copy(database):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            log.info("deleted %s, left of %s, which is gone", path, replaced_copy(database).name)
    for problem in restore_copies_problems(database):
        log.warning("%s", problem)


async def take_run_mark(
    conn: aiosqlite.Connection, data_dir: Path, now: float, *, settles_copies: bool = False
) -> list[str]:
    """Give this start a new run mark (in ``conn`` and in ``data_dir``'s run file) before the
    queue reads the journal; when ``conn``'s database was put back from a backup, its queued
    and running jobs end lost, refunded and never posted, in the transaction that writes the
    mark. ``settles_copies``: renders run on a broker, which may still hold such a job's
    message (handed over before the stop): its copies are owed a cancelled settle there, as
    any job's end records (``bot.jobs.queue.broker_chores``), so no worker renders it later.
    Returns the ids of the jobs so ended."""
    named = await asyncio.to_thread(_read_run_file, data_dir)
    marked = await run_mark.read(conn)
    if named is None:  # no file: a database with a mark came without its folder
        restored = marked is not None
    else:  # a file naming none: ``easel restore``'s; a database without a mark beside a file
        # naming some: a backup from before schema 35 copied in by hand (a new database, the
        # only other one, has no jobs to end); fewer ended jobs than the file counts for its
        # mark: a backup taken during that run, put back by hand (a crash leaves the database
        # ahead of the file, never behind)
        restored = (
            not named
            or marked is None
            or marked.run_id not in named
            or marked.jobs_ended < named[marked.run_id]
        )
    mark = uuid.uuid4().hex
    if not restored:
        # The file names the database's mark beside the new one until the database holds the
        # new one (a restored one's file stays as it is until then): a stop between any two of
        # these writes leaves what the next start reads as this one did.
        ended = 0 if marked is None else marked.jobs_ended
        kept = {} if marked is None else {marked.run_id: ended}
        await asyncio.to_thread(_write_run_file, data_dir, {mark: ended, **kept})
    async with transaction(conn):
        lost = await run_mark.end_unfinished_as_lost(conn, now) if restored else []
        for job_id in lost:
            await accounting.refund(conn, job_id, now)
            if settles_copies:
                await broker_chores.owe(conn, job_id, "cancelled", now)
        written = await run_mark.write(conn, mark)
    await asyncio.to_thread(_write_run_file, data_dir, {mark: written.jobs_ended})
    if restored:
        log.warning(
            "this database was put back from a backup (by `easel restore`, or its run mark is "
            "not in %s, or it counts fewer ended jobs than that file): "
            "%d job(s) it held queued or running ended as %s, refunded, not rendered or posted%s",
            data_dir / RUN_FILE_NAME,
            len(lost),
            LOST_IN_A_RESTORE,
            f": {', '.join(lost)}" if lost else "",
        )
    return lost


class RunFileKeeper:
    """While the bot runs, copies the database's count of ended jobs (as committed) into the
    run file beside its mark, every ``catch_up_s`` and once more at ``stop``: a backup taken
    during this run, put back by hand with ``easel.run`` left in place, then counts fewer
    than the file as soon as a job ended after it (and was copied) and is told as put back.
    The file is only ever behind the database, even on disk after a power loss
    (``_write_run_file``), so a crash never reads as a restore."""

    def __init__(
        self, conn: aiosqlite.Connection, data_dir: Path, catch_up_s: float = RUN_FILE_CATCH_UP_S
    ) -> None:
        self._conn = conn
        self._data_dir = data_dir
        self._catch_up_s = catch_up_s
        self._copied: run_mark.RunMark | None = None
        self._failing = False  # said once while it lasts
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """From the count ``take_run_mark`` wrote into the file."""
        self._copied = await run_mark.read(self._conn)
        self._task = asyncio.create_task(self._run(), name="easel-run-file")

    async def stop(self) -> None:
        """The last count copied (once the last ends are recorded, before the database
        closes)."""
        if self._task is None:
            return
        self._stopping.set()
        await self._task

    async def catch_up(self) -> None:
        """Copy the count, if it changed since the last copy."""
        try:
            current = await run_mark.read(self._conn)
            if current is None or current == self._copied:
                return
            await asyncio.to_thread(
                _write_run_file, self._data_dir, {current.run_id: current.jobs_ended}
            )
        except (OSError, aiosqlite.Error) as error:
            if not self._failing:
                log.warning(
                    "cannot copy the count of ended jobs into %s (%s): a backup taken since "
                    "and put back by hand would not be told from the live database",
                    self._data_dir / RUN_FILE_NAME,
                    error,
                )
            self._failing = True
            return
        self._copied = current
        self._failing = False

    async def _run(self) -> None:
        # Never cancelled in a write: the last copy waits for the one under way.
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._catch_up_s)
            await self.catch_up()


def mark_restored(data_dir: Path) -> None:
    """Make the next start take its database for one put back from a backup (``easel
    restore``): the run file names no mark."""
    _write_run_file(data_dir, {})


def _read_run_file(data_dir: Path) -> dict[str, int] | None:
    """The marks the run file names, each with the count of ended jobs it was written with (0
    where none: a file of an Easel before schema 38); None when there is no file."""
    try:
        text = (data_dir / RUN_FILE_NAME).read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return None
    named = {}
    for line in text.splitlines():
        mark, _, ended = line.strip().partition(" ")
        if mark:
            named[mark] = int(ended) if ended.isdigit() else 0
    return named


def _database_on_disk(data_dir: Path) -> None:
    """Put what the database committed on disk: its -wal, then its file (a checkpoint between
    the two has moved the frames into the file). With synchronous=NORMAL a commit waits in the
    page cache for the next checkpoint, so after a power loss a run file written first would
    count ends the database lost, and the live database would read as put back."""
    database = data_dir / DATABASE_FILE_NAME
    for path in (database.with_name(f"{database.name}-wal"), database):
        # No -wal once the last connection closed; no database yet.
        with contextlib.suppress(FileNotFoundError):
            put_on_disk(path)


def _write_run_file(data_dir: Path, marks: dict[str, int]) -> None:
    """The run file naming ``marks`` (each with its count of ended jobs), replaced whole and
    on disk before this returns, after the database (``_database_on_disk``): the counts were
    read once committed, so the file never counts more ends than the disk holds. Blocking:
    called off the event loop."""
    _database_on_disk(data_dir)
    path = data_dir / RUN_FILE_NAME
    written = path.with_name(f"{RUN_FILE_NAME}.new")
    with written.open("w", encoding="ascii") as file:
        file.write("".join(f"{mark} {ended}\n" for mark, ended in marks.items()))
        file.flush()
        os.fsync(file.fileno())
    written.replace(path)
    put_on_disk(data_dir)  # the rename itself
