"""A start tells a database put back from a backup from one a crash left (``bot.restores``):
real SQLite files in a real data folder, the real journal and ledger."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from bot import restores
from bot.jobs.queue import JobQueue, Submission
from bot.restores import RUN_FILE_NAME, RunFileKeeper, mark_restored, take_run_mark
from db import jobs as journal
from db import run_mark
from db.database import connect
from db.run_mark import LOST_IN_A_RESTORE
from inference.types import RenderRequest
from tests.support.backups import backed_up, put_back_by_hand
from tests.support.polling import until

MEMBER, GUILD, CHANNEL = 41, 5, 50
NOW = 1_800_000_000.0


async def submitted(conn: aiosqlite.Connection, data: Path, prompt: str) -> str:
    """A member's job, journaled queued with its quota reserved, as /imagine journals it."""
    return await JobQueue(conn, [], data / "images").submit(
        Submission(
            "imagine",
            RenderRequest(prompt, steps=2, width=64, height=64),
            MEMBER,
            GUILD,
            channel_id=CHANNEL,
        )
    )


async def ledger_kinds(conn: aiosqlite.Connection, job_id: str) -> set[str]:
    rows = await conn.execute_fetchall("SELECT kind FROM quota_ledger WHERE job_id = ?", (job_id,))
    return {str(row[0]) for row in rows}


async def statuses(conn: aiosqlite.Connection, *job_ids: str) -> list[str]:
    jobs = [await journal.get_job(conn, job_id) for job_id in job_ids]
    return [job.status.value if job is not None else "gone" for job in jobs]


async def started(data: Path) -> tuple[aiosqlite.Connection, list[str]]:
    """A start on ``data``: the journal opened and given this start's run mark; the jobs it
    ended as lost."""
    conn = await connect(data / "easel.sqlite3")
    try:
        return conn, await take_run_mark(conn, data, NOW)
    except BaseException:
        await conn.close()
        raise


async def kept_by_a_start(data: Path, *job_ids: str) -> list[str]:
    """A start on ``data`` that ends no job as lost (a crash, not a restore); the statuses of
    ``job_ids`` after it."""
    conn, lost = await started(data)
    try:
        assert lost == []
        return await statuses(conn, *job_ids)
    finally:
        await conn.close()


async def a_queued_and_a_running_job(data: Path) -> tuple[str, str]:
    """A start that left one job queued and one running (a crash)."""
    conn, _ = await started(data)
    try:
        queued = await submitted(conn, data, "a queued cat")
        running = await submitted(conn, data, "a running cat")
        await journal.mark_running(conn, [running], NOW)
    finally:
        await conn.close()
    return queued, running


async def test_a_start_after_a_crash_keeps_the_jobs_the_journal_left(tmp_path: Path) -> None:
    data = tmp_path / "data"
    queued, running = await a_queued_and_a_running_job(data)
    assert await kept_by_a_start(data, queued, running) == ["queued", "running"]


async def test_a_database_put_back_by_hand_ends_what_it_held_unfinished_refunded_unposted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    database = data / "easel.sqlite3"
    queued, running = await a_queued_and_a_running_job(data)
    backup = backed_up(database, tmp_path / "backup" / "easel.sqlite3")
    conn, _ = await started(data)  # the bot runs on after the backup: another run mark
    await conn.close()
    put_back_by_hand(backup, database)  # easel.run stays: the folder's, not the backup's
    caplog.set_level(logging.WARNING, logger="bot.restores")
    conn, lost = await started(data)
    try:
        assert lost == sorted([queued, running])
        assert await statuses(conn, queued, running) == ["cancelled", "cancelled"]
        for job_id in (queued, running):
            job = await journal.get_job(conn, job_id)
            assert job is not None and job.error == LOST_IN_A_RESTORE
            assert job.delivered_at is not None  # nothing of it is posted
            assert await ledger_kinds(conn, job_id) == {"reserve", "refund"}
        assert await journal.finished_undelivered(conn) == []
        assert [r.getMessage() for r in caplog.records if "2 job(s)" in r.getMessage()]
        later = await submitted(conn, data, "a cat after the restore")
    finally:
        await conn.close()
    conn, lost = await started(data)  # the next start: the database is the folder's again
    try:
        assert lost == []
        assert await statuses(conn, later) == ["queued"]
    finally:
        await conn.close()


async def test_a_database_whose_folder_has_no_run_file_was_put_back(tmp_path: Path) -> None:
    data = tmp_path / "data"
    queued, _ = await a_queued_and_a_running_job(data)
    new_host = tmp_path / "new-host"
    new_host.mkdir()
    shutil.copyfile(data / "easel.sqlite3", new_host / "easel.sqlite3")
    conn, lost = await started(new_host)
    try:
        assert queued in lost
    finally:
        await conn.close()


async def test_a_backup_from_before_run_marks_put_back_by_hand_was_put_back(
    tmp_path: Path,
) -> None:
    """A database without a mark beside a run file naming marks: a backup from before schema
    35 copied in by hand (a rollback after an upgrade); its unfinished jobs end lost."""
    data = tmp_path / "data"
    database = data / "easel.sqlite3"
    queued, running = await a_queued_and_a_running_job(data)
    backup = backed_up(database, tmp_path / "backup" / "easel.sqlite3")
    with contextlib.closing(sqlite3.connect(backup)) as raw, raw:
        raw.execute("DELETE FROM run_mark")  # as an Easel before schema 35 left it
    put_back_by_hand(backup, database)
    conn, lost = await started(data)
    try:
        assert lost == sorted([queued, running])
    finally:
        await conn.close()


@pytest.mark.parametrize("marked", [True, False], ids=["of-the-last-run", "before-run-marks"])
async def test_easel_restores_mark_counts_any_backup_as_put_back(
    tmp_path: Path, marked: bool
) -> None:
    """A backup taken since the last start holds that start's mark, and one of an Easel
    before run marks holds none: ``mark_restored`` (the run file naming none) tells the next
    start all the same."""
    data = tmp_path / "data"
    queued, running = await a_queued_and_a_running_job(data)
    if not marked:
        with contextlib.closing(sqlite3.connect(data / "easel.sqlite3")) as raw, raw:
            raw.execute("DELETE FROM run_mark")
    mark_restored(data)
    conn, lost = await started(data)
    try:
        assert lost == sorted([queued, running])
    finally:
        await conn.close()


async def test_a_start_writes_its_mark_with_the_count_its_transaction_committed(
    tmp_path: Path,
) -> None:
    """The run file names the new mark with the database's count of ended jobs as the
    mark's transaction committed it, the jobs a restore ended there included: a backup
    taken before those ends, put back by hand, then counts fewer than the file."""
    data = tmp_path / "data"
    queued, running = await a_queued_and_a_running_job(data)
    mark_restored(data)
    conn, lost = await started(data)
    try:
        marked = await run_mark.read(conn)
    finally:
        await conn.close()
    assert lost == sorted([queued, running])
    assert marked is not None and marked.jobs_ended == 2
    assert (data / RUN_FILE_NAME).read_text() == f"{marked.run_id} 2\n"


async def test_the_first_start_with_run_marks_and_a_moved_folder_keep_their_jobs(
    tmp_path: Path,
) -> None:
    """A database of an Easel before run marks (none in it, no run file) is the folder's; so
    is one whose whole folder moved."""
    data = tmp_path / "data"
    conn = await connect(data / "easel.sqlite3")
    try:
        queued = await submitted(conn, data, "a cat queued before the upgrade")
        assert await run_mark.read(conn) is None
    finally:
        await conn.close()
    conn, lost = await started(data)
    await conn.close()
    assert lost == []
    moved = tmp_path / "moved" / "data"
    moved.parent.mkdir()
    shutil.move(data, moved)
    conn, lost = await started(moved)
    try:
        assert lost == []
        assert await statuses(conn, queued) == ["queued"]
    finally:
        await conn.close()


@pytest.mark.parametrize("restored", [False, True], ids=["crashed", "put-back"])
@pytest.mark.parametrize("stopped_at", ["the-database-write", "the-last-file-write"])
async def test_a_start_stopped_between_its_writes_leaves_what_the_next_reads_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restored: bool, stopped_at: str
) -> None:
    """A start that dies after writing the run file and before the database's mark (or after
    it, before the last file write): the next start still tells a crash from a restore."""
    data = tmp_path / "data"
    queued, _ = await a_queued_and_a_running_job(data)
    if restored:
        mark_restored(data)

    def dies(*_: object) -> None:
        raise OSError("the power went")

    if stopped_at == "the-database-write":
        monkeypatch.setattr(run_mark, "write", dies)
    else:
        write_run_file = restores._write_run_file
        calls = iter([write_run_file] * (1 - restored))  # the first write, if any, goes

        def write_then_die(folder: Path, marks: list[str]) -> None:
            next(calls, dies)(folder, marks)

        monkeypatch.setattr(restores, "_write_run_file", write_then_die)
    with pytest.raises(OSError, match="the power went"):
        await started(data)
    monkeypatch.undo()
    conn, lost = await started(data)
    try:
        ended_before = stopped_at == "the-last-file-write" and restored
        assert (queued in lost) == (restored and not ended_before)
        expected = "cancelled" if restored else "queued"
        assert await statuses(conn, queued) == [expected]
    finally:
        await conn.close()
    assert (data / RUN_FILE_NAME).read_text().count("\n") == 1  # one mark, settled


async def a_run_that_ended_a_job_after_a_backup(
    data: Path, backup_to: Path, keeper_copies: bool
) -> tuple[Path, str, str]:
    """A run that queued two jobs, was backed up (as the docs take a backup while the bot
    runs), then ended one of them; ``keeper_copies``: its ``RunFileKeeper`` copied the count
    (a clean stop), else the run died before it did. The backup, the job ended, the other."""
    conn, _ = await started(data)
    # Copying only at its stop (no catch-up within the test) when it copies at all.
    keeper = RunFileKeeper(conn, data, catch_up_s=3600)
    if keeper_copies:
        await keeper.start()
    try:
        ended = await submitted(conn, data, "a cat rendered after the backup")
        waiting = await submitted(conn, data, "a cat still queued")
        backup = backed_up(data / "easel.sqlite3", backup_to)
        await journal.mark_failed(conn, ended, "failed", NOW)
    finally:
        await keeper.stop()
        await conn.close()
    return backup, ended, waiting


async def test_a_backup_of_this_run_put_back_by_hand_once_a_job_ended_after_it_was_put_back(
    tmp_path: Path,
) -> None:
    """The backup holds this run's mark, and easel.run is left in place: its count of ended
    jobs, below the file's, tells it."""
    data = tmp_path / "data"
    backup, ended, waiting = await a_run_that_ended_a_job_after_a_backup(
        data, tmp_path / "backup" / "easel.sqlite3", keeper_copies=True
    )
    put_back_by_hand(backup, data / "easel.sqlite3")
    conn, lost = await started(data)
    try:
        assert lost == sorted([ended, waiting])
        assert await statuses(conn, ended, waiting) == ["cancelled", "cancelled"]
    finally:
        await conn.close()


async def test_a_crash_before_the_count_was_copied_is_no_restore(tmp_path: Path) -> None:
    """The database counts more ended jobs than the file (the run died before the copy): the
    next start keeps its jobs."""
    data = tmp_path / "data"
    _, ended, waiting = await a_run_that_ended_a_job_after_a_backup(
        data, tmp_path / "backup" / "easel.sqlite3", keeper_copies=False
    )
    assert await kept_by_a_start(data, ended, waiting) == ["failed", "queued"]


@contextlib.asynccontextmanager
async def a_run_copying_counts(data: Path) -> AsyncIterator[aiosqlite.Connection]:
    """A start on ``data`` whose ``RunFileKeeper`` copies each end's count within 10 ms; its
    keeper, then its database, stopped when the block ends."""
    conn, _ = await started(data)
    keeper = RunFileKeeper(conn, data, catch_up_s=0.01)
    await keeper.start()
    try:
        yield conn
    finally:
        await keeper.stop()
        await conn.close()


class PowerLoss:
    """What a power loss leaves of ``data``: ``easel.run`` as last written (each write is
    fsync'd), and the database's file and -wal as they stood when last fsync'd, from now on
    (SQLite syncs with synchronous=NORMAL only at a checkpoint, none of which comes in the test):
    the copies in ``disk`` follow each ``os.fsync`` of those files."""

    DATABASE_FILES = ("easel.sqlite3", "easel.sqlite3-wal")

    def __init__(self, data: Path, disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self._data, self._disk = data, disk
        disk.mkdir()
        for name in self.DATABASE_FILES:
            self._sync(name)
        fsync = os.fsync

        def synced(fd: int) -> None:
            fsync(fd)
            synced_file = os.fstat(fd)
            for name in self.DATABASE_FILES:
                with contextlib.suppress(FileNotFoundError):
                    if os.path.samestat(synced_file, (data / name).stat()):
                        self._sync(name)

        monkeypatch.setattr(os, "fsync", synced)

    def _sync(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            shutil.copyfile(self._data / name, self._disk / name)

    def left(self, at: Path) -> Path:
        """The data folder the machine finds when it comes back, at ``at``."""
        shutil.copytree(self._disk, at)
        shutil.copyfile(self._data / RUN_FILE_NAME, at / RUN_FILE_NAME)
        return at


async def test_a_power_loss_after_the_count_was_copied_is_no_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The end's commit waits in the page cache (synchronous=NORMAL) while the count copied
    from it is fsync'd into the run file: the copy puts the database on disk first, so after a
    power loss the live database is not read as put back."""
    data = tmp_path / "data"
    async with a_run_copying_counts(data) as conn:
        ended = await submitted(conn, data, "a cat rendered before the power went")
        waiting = await submitted(conn, data, "a cat still queued")
        power = PowerLoss(data, tmp_path / "disk", monkeypatch)
        await journal.mark_failed(conn, ended, "failed", NOW)
        await until(lambda: (data / RUN_FILE_NAME).read_text().endswith(" 1\n"))
        after = power.left(tmp_path / "after")
    assert await kept_by_a_start(after, ended, waiting) == ["failed", "queued"]


async def test_a_power_loss_after_a_start_rewrote_the_run_file_is_no_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start's new mark is committed (not yet on disk), then the run file names only it:
    the mark is put on disk first, so after a power loss the database still holds it."""
    data = tmp_path / "data"
    queued, _ = await a_queued_and_a_running_job(data)
    power = PowerLoss(data, tmp_path / "disk", monkeypatch)
    conn, _ = await started(data)
    try:
        after = power.left(tmp_path / "after")
    finally:
        await conn.close()
    assert await kept_by_a_start(after, queued) == ["queued"]


async def test_the_running_bot_copies_the_count_of_ended_jobs_as_they_end(tmp_path: Path) -> None:
    """Without a stop: within a catch-up of the end, the file counts it."""
    data = tmp_path / "data"
    async with a_run_copying_counts(data) as conn:
        job_id = await submitted(conn, data, "a cat")
        await journal.mark_failed(conn, job_id, "failed", NOW, cancelled=True)
        mark = await run_mark.read(conn)
        assert mark is not None and mark.jobs_ended == 1
        await until(lambda: (data / RUN_FILE_NAME).read_text() == f"{mark.run_id} 1\n")


async def test_the_database_counts_each_end_of_an_unfinished_job_once(tmp_path: Path) -> None:
    """An end (done, failed, cancelled) or a deletion of a queued or running job counts; a
    start of one, and a deletion of one already ended, do not."""
    data = tmp_path / "data"
    conn, _ = await started(data)

    async def counted() -> int:
        mark = await run_mark.read(conn)
        assert mark is not None
        return mark.jobs_ended

    try:
        first, second, third = [await submitted(conn, data, f"cat {n}") for n in range(3)]
        await journal.mark_running(conn, [first, second], NOW)
        assert await counted() == 0
        await journal.mark_failed(conn, first, "failed", NOW)
        await journal.mark_failed(conn, second, "stopped", NOW, cancelled=True)
        assert await counted() == 2
        await conn.execute("DELETE FROM jobs WHERE id IN (?, ?)", (first, third))
        assert await counted() == 3
    finally:
        await conn.close()
