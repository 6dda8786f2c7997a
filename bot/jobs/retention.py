"""Retention: nothing Easel stores is kept longer than it is needed.

A task started by the composition root prunes at start and then every few hours:

- always: interaction tokens Discord no longer accepts are blanked (a token is kept only while
  it can post the job's result: the queue blanks it once the result is posted, and this task
  sweeps the rest every 15 minutes), ledger rows /forget-me left named until their quota
  periods ended lose the member's id, each server's audit log keeps its latest
  ``AUDIT_ROWS_KEPT`` rows, and the ids of pruned jobs' posts are kept ``KEPT_POSTS_DAYS``;
- with ``EASEL_RETENTION_DAYS`` above 0: jobs that ended and were delivered longer ago than
  that (journal and history rows), their pictures (``images/<job>/``) and uploads
  (``inputs/``), settled ledger rows no quota period still counts, and refusals recorded
  longer ago than that.

Files go after their rows, so no row names a file that is gone. A round reads only the files it
can prune: those of the jobs it deletes (their result folders, the uploads and other jobs'
pictures they read, found by their rows and kept while the ``job_inputs`` index says another job
reads them; a pruned job's folder no row names too). /forget-me removes, by the same rule
(``remove_unread_results``), the folders of other jobs' pictures the erased jobs alone read.
Files of no job (a crash's, an erase that failed half-way, those a database put back from a
backup does not know) are found by listing every stored file against the journal, whatever
``EASEL_RETENTION_DAYS`` (0 too: they are reached by no command, nor by /forget-me): at the
first round of a process, and the round after one whose files failed; files of a failure
elsewhere that did not stop the bot (an erase) wait for its next start.

A button on a pruned result then finds no job and answers that it is no longer stored.

A start that finds less than ``START_ROOM_BYTES`` free (``connect_making_room``) deletes the
files of the jobs past the retention before their rows, then runs the first round before
anything else writes: on a full disk SQLite can neither open the database as it always does
nor delete a row, and freeing the files makes that room. No member reaches a result
meanwhile: the bot is not yet connected to Discord.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from bot import snowflakes
from bot.jobs import accounting
from bot.jobs.stored_files import (
    ResultFolders,
    folders_of,
    pictures_by_folder,
    remove_inside,
    remove_result_folders,
    remove_unused_uploads,
)
from bot.policy.quota import Period, period_start, reset_at
from db import guild_settings, history, refusals
from db import jobs as journal
from db.database import (
    connect,
    connect_without_room,
    is_out_of_room,
    load_migrations,
    refresh_planner_statistics,
    schema_version,
    write_back_due_log,
    write_back_log,
)

log = logging.getLogger(__name__)

# Everything is pruned at start, then this often...
PRUNE_INTERVAL_S = 6 * 3600.0
# ...and expired interaction tokens are blanked this often too.
TOKEN_SWEEP_S = 15 * 60.0
# Discord accepts an interaction token for 15 minutes; after that it is only a secret to leak.
DISCORD_TOKEN_LIFETIME_S = 15 * 60.0
DAY_S = 86400.0
# A file this recent is never pruned: its job may be being journaled right now.
FILE_GRACE_S = 3600.0
# Jobs deleted per transaction, and result folders checked per read of the journal: other
# statements run between batches (at 600,000 jobs a batch of 200 held the connection up to
# 0.25 s, one of 500 0.6 s; a 6-hour slice of 5,000 in one transaction held it 6 s).
PRUNE_BATCH = 200
# Rows of each server's audit log kept (``settings_audit``, /easel-admin audit shows the latest
# 15), the latest, whatever EASEL_RETENTION_DAYS: years of an active server's changes
# (a setting's row about 300 bytes: 300 KiB a server; a server preset's, its JSON before and
# after with prompts of 4,000 characters, up to about 100 KB: 100 MiB at worst), while a
# script's thousands of changes (30,000 rows, 8.8 MiB) are not kept past the next round.
AUDIT_ROWS_KEPT = 1_000
# The ids of a pruned job's posts and copies by DM (``pruned_posts``) are kept this long after
# each was posted, for its maker's /forget-me to delete it (``/help topic:privacy`` says so;
# a moderator deletes an older one): what stays of a member there (a channel, a time) is
# bounded, whatever EASEL_RETENTION_DAYS (0 too: rows kept under an earlier setting go).
KEPT_POSTS_DAYS = 365
# Less free space than this in EASEL_DATA_DIR at start, and the first round runs before the
# start's first write to the journal (it failed "database or disk is full" on a full disk).
START_ROOM_BYTES = 64 * 1024 * 1024


def free_bytes(path: Path) -> int | None:
    """The bytes free on the disk of ``path`` (or of its nearest folder that exists); None
    when that cannot be read."""
    try:
        folder = next((parent for parent in (path, *path.parents) if parent.is_dir()), path)
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def quota_window(now: float) -> tuple[float, float]:
    """From the start of the earliest quota period containing ``now`` to the end of the
    latest: the ledger rows reserved inside it are what the limits are checked against."""
    return (
        min(period_start(period, now) for period in Period),
        max(reset_at(period, now) for period in Period),
    )


@dataclass(frozen=True)
class Pruned:
    tokens: int = 0
    ledger_rows_anonymised: int = 0
    jobs: int = 0
    pictures: int = 0
    uploads: int = 0
    ledger_rows: int = 0
    refusals: int = 0
    audit_rows: int = 0
    # ``pruned_posts`` rows past ``KEPT_POSTS_DAYS``, or of a deleted channel a stop left
    kept_posts: int = 0


async def remove_unread_results(
    conn: aiosqlite.Connection,
    images_dir: Path,
    paths: Collection[str],
    job_ids: Collection[str] = (),
) -> int:
    """Delete the result folders that ``paths`` lie in, and those of ``job_ids``, whose job is
    not in the journal and none of whose pictures a job in the journal reads: the rows that
    named them or read them are gone (pruned, or erased by /forget-me). Returns how many
    pictures went."""
    folders = await asyncio.to_thread(pictures_by_folder, images_dir, paths, job_ids)
    named = {path for pictures in folders.values() for path in pictures}
    read = await journal.paths_read(conn, named)
    journaled = await journal.journaled_order(conn, [folder.name for folder in folders])
    gone = [
        folder
        for folder, pictures in folders.items()
        if folder.name not in journaled and not pictures & read
    ]
    return await asyncio.to_thread(remove_result_folders, gone, frozenset())


class Retention:
    def __init__(
        self,
        conn: aiosqlite.Connection,
        images_dir: Path,
        inputs_dir: Path,
        retention_days: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._conn = conn
        self._images_dir = images_dir
        self._inputs_dir = inputs_dir
        self._retention_s = retention_days * DAY_S
        self._clock = clock
        self._swept = False  # whether a round listed every stored file (the first does)
        self._pruned_at: float | None = None  # time.monotonic() at the end of the last round
        self._audit_read_to = 0  # the last audit row id a round read (0: none yet)

    async def clear_expired_tokens(self) -> int:
        return await journal.clear_expired_tokens(
            self._conn, self._clock() - DISCORD_TOKEN_LIFETIME_S
        )

    async def prune(self, *, cutoff_floor: float = 0.0, before_start: bool = False) -> Pruned:
        """One round, then the database's planner statistics refreshed (SQLite's advice for a
        long-lived connection: every few hours; at a start, a database never analysed is
        analysed then). ``cutoff_floor``: prune at least what ended before it, whatever the
        clock says now (the files of those jobs may be gone already: ``connect_making_room``).
        ``before_start``: a round before the start erases again what a database put back
        holds (``History.forget_again``) leaves the kept posts past the year (bytes, not
        what fills a disk) to the next, as that erase takes those of when its member asked."""
        pruned = await self._prune(cutoff_floor, before_start)
        await refresh_planner_statistics(self._conn)
        return pruned

    async def _prune(self, cutoff_floor: float, before_start: bool) -> Pruned:
        now = self._clock()
        tokens = await self.clear_expired_tokens()
        anonymised = await accounting.anonymise_due(self._conn, now)
        past = await self._prune_past(now, cutoff_floor) if self._retention_s else Pruned()
        audit = await guild_settings.prune_audit(self._conn, AUDIT_ROWS_KEPT, self._audit_read_to)
        self._audit_read_to = audit.read_to
        kept_posts = 0 if before_start else await self._prune_kept_posts(now)
        # Those of the channels deleted that a stop left after their withdrawal.
        kept_posts += await history.forget_posts_of_deleted_channels(self._conn)
        if anonymised or past.jobs or past.ledger_rows or past.refusals or audit.rows or kept_posts:
            await write_back_log(self._conn)  # no copy of the database files keeps their rows
        pictures, uploads = past.pictures, past.uploads
        # Whatever the retention (0 too: what no row names is reached by no command, nor by
        # a /forget-me: a crash's, or those a database put back from a backup does not know).
        if not self._swept:
            swept = await self._sweep(written_before=now - FILE_GRACE_S)
            pictures, uploads = pictures + swept[0], uploads + swept[1]
            self._swept = True
        if self._retention_s:  # 0: each sweep of tokens prunes again (``run``)
            self._pruned_at = time.monotonic()
        return dataclasses.replace(
            past,
            tokens=tokens,
            ledger_rows_anonymised=anonymised,
            pictures=pictures,
            uploads=uploads,
            audit_rows=audit.rows,
            kept_posts=kept_posts,
        )

    async def _prune_kept_posts(self, now: float) -> int:
        """The kept posts of pruned jobs posted longer than ``KEPT_POSTS_DAYS`` ago, by
        batches, but those of a member being erased (``history.prune_kept_posts``); how many
        went."""
        below_id = snowflakes.made_before(now - KEPT_POSTS_DAYS * DAY_S)
        return await history.prune_kept_posts(self._conn, below_id)

    async def _prune_past(self, now: float, cutoff_floor: float) -> Pruned:
        """What ended longer ago than the retention (at least before ``cutoff_floor``): jobs,
        their files (once a round swept), settled ledger rows and refusals."""
        cutoff = max(now - self._retention_s, cutoff_floor)
        jobs = pictures = uploads = 0
        while True:
            batch = await history.prune_jobs(self._conn, cutoff, at_most=PRUNE_BATCH)
            jobs += len(batch.job_ids)
            if self._swept:  # else this round's sweep finds their files
                try:
                    removed = await self._remove_files_of(batch)
                except BaseException:
                    self._swept = False  # the batch's rows are gone: the next sweep finds them
                    raise
                pictures, uploads = pictures + removed[0], uploads + removed[1]
            if len(batch.job_ids) < PRUNE_BATCH:
                break
        counted_since, _ = quota_window(now)
        ledger_rows = await accounting.prune_settled(
            self._conn, reserved_before=min(cutoff, counted_since)
        )
        refused = await refusals.prune(self._conn, before=cutoff)
        return Pruned(
            jobs=jobs, pictures=pictures, uploads=uploads, ledger_rows=ledger_rows, refusals=refused
        )

    async def _remove_files_of(self, pruned: history.PrunedJobs) -> tuple[int, int]:
        """Delete what the ``pruned`` jobs stored or read that no job in the journal reads now:
        their result folders (one no ``images`` row names included), the uploads they read,
        and the folders of other jobs' pictures they read whose job is gone too (kept until
        now for them). Returns how many pictures and uploads went."""
        pictures = await remove_unread_results(
            self._conn,
            self._images_dir,
            [*pruned.picture_paths, *pruned.input_paths],
            pruned.job_ids,
        )
        read = await journal.paths_read(self._conn, pruned.input_paths)
        unread = [path for path in pruned.input_paths if path not in read]
        uploads = await asyncio.to_thread(remove_inside, self._inputs_dir, unread)
        return pictures, uploads

    async def _sweep(self, written_before: float) -> tuple[int, int]:
        """Delete the result folders and uploads last written before ``written_before`` that
        no job in the journal stored or reads (files of no job included: a crash's, an erase
        that failed half-way); returns how many pictures and uploads went. Lists every stored
        file, and reads every path a job reads."""
        in_use = await journal.input_picture_paths(self._conn)
        pictures = await self._remove_unjournaled_results(written_before, in_use)
        uploads = await asyncio.to_thread(
            remove_unused_uploads, self._inputs_dir, written_before, in_use
        )
        return pictures, uploads

    async def _remove_unjournaled_results(self, written_before: float, in_use: set[str]) -> int:
        """Delete the result folders last written before ``written_before`` whose job is not
        in the journal, unless a job reads one of their pictures (``in_use``); returns how
        many pictures went. A folder of a job journaled since the listing began is too new."""
        if not self._images_dir.is_dir():
            return 0
        kept = await asyncio.to_thread(folders_of, self._images_dir.parent, in_use)
        removed = 0
        listing = await asyncio.to_thread(ResultFolders, self._images_dir)
        try:
            while folders := await asyncio.to_thread(listing.next_old, written_before, PRUNE_BATCH):
                journaled = await journal.journaled_order(
                    self._conn, [folder.name for folder in folders]
                )
                gone = [folder for folder in folders if folder.name not in journaled]
                removed += await asyncio.to_thread(remove_result_folders, gone, kept)
        finally:
            await asyncio.to_thread(listing.close)
        return removed

    async def run(self) -> None:
        """Prune now and every ``PRUNE_INTERVAL_S``, blank expired tokens and anonymise the
        ledger rows due every ``TOKEN_SWEEP_S`` in between, until cancelled; a failed round is
        logged and tried again at the next sweep, and so is a write-back of the database's log
        a reader held up.
        A round already run (``connect_making_room``'s) counts as the first."""
        while True:
            try:
                if (
                    self._pruned_at is None
                    or time.monotonic() - self._pruned_at >= PRUNE_INTERVAL_S
                ):
                    pruned = await self.prune()
                    if pruned != Pruned():
                        log.info("pruned stored data: %s", pruned)
                else:
                    await self.clear_expired_tokens()
                    # /forget-me told the member when: met within a sweep, not a round.
                    if await accounting.anonymise_due(self._conn, self._clock()):
                        await write_back_log(self._conn)  # nor does the log keep their id
                await write_back_due_log(self._conn)  # one a reader held up (/forget-me's)
            except Exception:
                log.exception("pruning stored data failed; trying again in %.0f s", TOKEN_SWEEP_S)
            await asyncio.sleep(TOKEN_SWEEP_S)


class NothingPrunedFirst(RuntimeError):
    """A start found too little room and could not prune before its first write; ``reason``
    says why (no setting helps: space must be freed by hand). Raised from the write that failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"nothing was pruned before the start: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class _RemovedFirst:
    """What ``_remove_files_before_rows`` deleted, of the jobs that ended before ``cutoff``;
    ``skipped``: why it read nothing or stopped short, when so."""

    cutoff: float
    pictures: int = 0
    uploads: int = 0
    skipped: str | None = None


async def connect_making_room(
    database: Path, images_dir: Path, inputs_dir: Path, retention_days: int
) -> tuple[aiosqlite.Connection, Retention]:
    """The journal's connection (``db.database.connect``) and its retention, for a start. With
    less than ``START_ROOM_BYTES`` free beside the database, the files of the jobs past
    ``retention_days`` go first, read through a connection that needs no room, and then the
    first round deletes their rows (``Retention.run`` starts with the next one, or tries again
    when it failed for another reason than no room)."""
    # A new database (its folder maybe not made yet) has nothing to prune.
    free = START_ROOM_BYTES
    if retention_days > 0 and await asyncio.to_thread(database.is_file):
        free = (await asyncio.to_thread(shutil.disk_usage, database.parent)).free
    removed: _RemovedFirst | None = None  # when short of room
    if free < START_ROOM_BYTES:
        cutoff = time.time() - retention_days * DAY_S
        removed = await _remove_files_before_rows(database, cutoff, images_dir, inputs_dir)
    try:
        conn = await connect(database)
    except Exception as error:
        await _raise_if_nothing_pruned(removed, error)
        raise
    try:
        retention = Retention(conn, images_dir, inputs_dir, retention_days)
        if removed is not None:
            try:
                pruned = await retention.prune(cutoff_floor=removed.cutoff, before_start=True)
            except Exception as error:
                if await is_out_of_room(error):
                    await _raise_if_nothing_pruned(removed, error, out_of_room=True)
                    raise
                # A file it may not delete (a permission): the start goes on, Retention.run
                # tries the round again.
                log.exception("pruning before the start failed; the start goes on")
                pruned = Pruned()
            log.warning(
                "%s had %d bytes free at start: pruned before starting, %d picture(s) and %d "
                "upload(s) of jobs older than EASEL_RETENTION_DAYS=%d first; %d bytes free now",
                database.parent,
                free,
                removed.pictures + pruned.pictures,
                removed.uploads + pruned.uploads,
                retention_days,
                (await asyncio.to_thread(shutil.disk_usage, database.parent)).free,
            )
    except BaseException:
        await conn.close()
        raise
    return conn, retention


async def _raise_if_nothing_pruned(
    removed: _RemovedFirst | None, error: Exception, *, out_of_room: bool = False
) -> None:
    """``NothingPrunedFirst`` from ``error`` when it found no room (``out_of_room``: found so
    already, not probed again) and the files were not read."""
    if (
        removed is not None
        and removed.skipped is not None
        and (out_of_room or await is_out_of_room(error))
    ):
        raise NothingPrunedFirst(removed.skipped) from error


async def _remove_files_before_rows(
    database: Path, cutoff: float, images_dir: Path, inputs_dir: Path
) -> _RemovedFirst:
    """Delete the result folders and the uploads of the jobs the next round prunes
    (``cutoff``: its floor), unless a job it keeps reads them. Nothing is written to the
    journal (its rows stay for that round); nothing goes while a migration is pending (its
    queries are the latest schema's) or another connection holds the database."""
    pictures = uploads = 0
    try:
        reader = await connect_without_room(database)
        try:
            pending = len(load_migrations()) - await schema_version(reader)
            if pending < 0:  # a newer Easel's: ``connect`` refuses it
                return _RemovedFirst(cutoff)
            if pending:
                skipped = f"{pending} schema migration(s) pending"
                log.warning("%s: nothing pruned before the start; free space by hand", skipped)
                return _RemovedFirst(cutoff, skipped=skipped)
            after: tuple[float, int] | None = None
            while True:  # a batch at a time: at 60,000 jobs, all at once held 75 MB
                batch, after = await history.prunable_files(reader, cutoff, PRUNE_BATCH, after)
                removed = await _remove_batch_files(reader, batch, cutoff, images_dir, inputs_dir)
                pictures, uploads = pictures + removed[0], uploads + removed[1]
                if after is None:
                    break
        finally:
            await reader.close()
    except sqlite3.Error as error:
        if error.sqlite_errorcode == sqlite3.SQLITE_BUSY:
            skipped = (
                f"another connection held the database ({error}: an easel doctor, "
                "a sqlite3 shell, a backup?)"
            )
        else:
            skipped = f"the database could not be read ({error})"
        log.warning("%s: nothing pruned before the start", skipped)
        return _RemovedFirst(cutoff, skipped=skipped)
    except OSError as error:  # a file Easel's user may not delete: the start goes on
        skipped = f"a file could not be deleted ({error})"
        log.warning("%s: pruning before the start stopped there", skipped)
        return _RemovedFirst(cutoff, pictures, uploads, skipped=skipped)
    return _RemovedFirst(cutoff, pictures, uploads)


async def _remove_batch_files(
    reader: aiosqlite.Connection,
    batch: history.PrunedJobs,
    cutoff: float,
    images_dir: Path,
    inputs_dir: Path,
) -> tuple[int, int]:
    """Delete the result folders and uploads of ``batch`` (of ``history.prunable_files``) that
    no job kept reads; returns how many pictures and uploads went."""
    folders = await asyncio.to_thread(
        pictures_by_folder, images_dir, batch.picture_paths, batch.job_ids
    )
    in_folders = {path for pictures in folders.values() for path in pictures}
    kept_reads = await history.read_by_kept_jobs(reader, [*in_folders, *batch.input_paths], cutoff)
    kept = await asyncio.to_thread(folders_of, images_dir.parent, kept_reads)
    pictures = await asyncio.to_thread(remove_result_folders, folders, kept)
    unread = [path for path in batch.input_paths if path not in kept_reads]
    uploads = await asyncio.to_thread(remove_inside, inputs_dir, unread)
    return pictures, uploads
