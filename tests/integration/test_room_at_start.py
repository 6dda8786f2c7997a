"""A start short of room (a full disk) deletes the files of the jobs past the retention before
their rows, read through a connection that writes nothing, then prunes their rows before the
start writes anything else; what a kept job reads stays. The real queue on a real SQLite file
and real files; the free space a setting away (``tests/e2e/test_hard_starts.py`` fills a disk)."""

from __future__ import annotations

import functools
import logging
import sqlite3
import time
from pathlib import Path

import pytest

from bot.jobs import retention
from bot.jobs.retention import NothingPrunedFirst, connect_making_room
from db import history
from db import jobs as journal
from db.database import connect, is_out_of_room, load_migrations
from tests.integration.test_stored_data import DAY, Data, submission
from tests.support.older_databases import sqlite_full


async def test_a_start_short_of_room_deletes_old_files_then_their_rows_and_keeps_what_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    database, root = tmp_path / "easel.sqlite3", tmp_path / "data"
    conn = await connect(database)
    data = Data(conn, root)
    queue = data.queue()
    await queue.start()
    read_later, alone = [await data.finished_job(queue, time.time() - 10 * DAY + n) for n in (0, 1)]
    # A recent variation of the first old job's picture: that picture is still read.
    data.now = time.time() - 3600
    delivered = len(data.sink.delivered)
    picture = data.images / read_later / "0.png"
    reader = await queue.submit(submission(at=data.now, upload=picture))
    await data.sink.wait_for(delivered + 1)
    await queue.stop()
    await conn.close()
    uploads = sorted(data.inputs.iterdir())
    assert len(uploads) == 2

    files_when_rows_went: list[bool] = []
    prune_batch = history.prune_jobs

    async def files_gone_first(*args: object, **kwargs: object) -> history.PrunedJobs:
        files_when_rows_went.append((data.images / alone).exists())
        return await prune_batch(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(history, "prune_jobs", files_gone_first)
    monkeypatch.setattr(retention, "START_ROOM_BYTES", 1 << 62)  # no disk has that free
    caplog.set_level(logging.WARNING, logger="bot.jobs.retention")
    conn, _ = await connect_making_room(database, data.images, data.inputs, retention_days=1)
    try:
        assert files_when_rows_went and not any(files_when_rows_went)
        assert await journal.get_job(conn, alone) is None
        assert await journal.get_job(conn, read_later) is None
        assert await journal.get_job(conn, reader) is not None
    finally:
        await conn.close()
    assert not (data.images / alone).exists()
    assert picture.is_file()  # the recent job reads it
    assert (data.images / reader / "0.png").is_file()
    assert not any(path.exists() for path in uploads)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "pruned before starting, 1 picture(s) and 2 upload(s) of jobs older" in warning


async def journal_of(tmp_path: Path, *finished_at: float) -> tuple[Path, Data, list[str]]:
    """A database of a job (with its upload and picture) finished at each of ``finished_at``."""
    database = tmp_path / "easel.sqlite3"
    conn = await connect(database)
    data = Data(conn, tmp_path / "data")
    queue = data.queue()
    await queue.start()
    jobs = [await data.finished_job(queue, at) for at in finished_at]
    await queue.stop()
    await conn.close()
    return database, data, jobs


async def test_an_upload_an_old_job_shares_with_a_queued_one_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database, data, [old] = await journal_of(tmp_path, time.time() - 10 * DAY)
    [upload] = list(data.inputs.iterdir())
    # The old job redone today, from the same upload: queued, no worker yet.
    conn = await connect(database)
    waiting = (
        await Data(conn, data.images.parent)
        .queue()
        .submit(submission(at=time.time() - 60, upload=upload))
    )
    await conn.close()
    monkeypatch.setattr(retention, "START_ROOM_BYTES", 1 << 62)  # no disk has that free
    conn, _ = await connect_making_room(database, data.images, data.inputs, retention_days=1)
    try:
        assert await journal.get_job(conn, old) is None
        assert await journal.get_job(conn, waiting) is not None
    finally:
        await conn.close()
    assert upload.is_file()


async def test_a_first_round_that_fails_for_want_of_a_permission_lets_the_start_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A file it may not delete ends the round, not the start; ``Retention.run`` tries again.
    One that finds no room ends the start (``cmd_run`` says what to do)."""
    database, data, [old] = await journal_of(tmp_path, time.time() - 10 * DAY)

    def refused(*args: object) -> int:
        raise PermissionError(13, "Permission denied", str(data.inputs / "a-root-file"))

    monkeypatch.setattr(retention, "remove_unused_uploads", refused)  # in the round's sweep
    monkeypatch.setattr(retention, "START_ROOM_BYTES", 1 << 62)
    caplog.set_level(logging.WARNING, logger="bot.jobs.retention")
    conn, started = await connect_making_room(database, data.images, data.inputs, retention_days=1)
    try:
        assert await journal.get_job(conn, old) is None
        assert started._pruned_at is None  # the next round runs at once
    finally:
        await conn.close()
    assert not (data.images / old).exists()
    assert "pruning before the start failed; the start goes on" in caplog.text

    def full(*args: object) -> int:
        raise OSError(28, "No space left on device", str(data.inputs))

    monkeypatch.setattr(retention, "remove_unused_uploads", full)
    with pytest.raises(OSError, match="No space left"):
        await connect_making_room(database, data.images, data.inputs, retention_days=1)


async def test_a_file_the_pass_before_the_rows_may_not_delete_lets_the_start_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A result folder owned by another user (``chmod -R go= data`` by hand, say) stops the
    read-only pass there, not the start: the round after it prunes the rows."""
    database, data, [old] = await journal_of(tmp_path, time.time() - 10 * DAY)

    def refused(*args: object) -> int:
        raise PermissionError(13, "Permission denied", str(data.images / old))

    monkeypatch.setattr(retention, "remove_result_folders", refused)
    monkeypatch.setattr(retention, "START_ROOM_BYTES", 1 << 62)
    caplog.set_level(logging.WARNING, logger="bot.jobs.retention")
    conn, _ = await connect_making_room(database, data.images, data.inputs, retention_days=1)
    try:
        assert await journal.get_job(conn, old) is None
    finally:
        await conn.close()
    assert "a file could not be deleted" in caplog.text


async def test_a_pending_migration_is_said_in_the_log_and_in_the_error_of_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The read-only pass needs the latest schema: nothing is pruned first, and no lower
    retention can help; the operator is told so."""
    database, data, [old] = await journal_of(tmp_path, time.time() - 10 * DAY)
    latest = load_migrations()
    monkeypatch.setattr(retention, "load_migrations", lambda: [*latest, latest[-1]])

    async def no_room(path: Path) -> None:  # migrating it finds the disk full
        raise sqlite_full()

    monkeypatch.setattr(retention, "connect", no_room)
    monkeypatch.setattr(retention, "START_ROOM_BYTES", 1 << 62)
    caplog.set_level(logging.WARNING, logger="bot.jobs.retention")
    with pytest.raises(NothingPrunedFirst) as raised:
        await connect_making_room(database, data.images, data.inputs, retention_days=1)
    assert await is_out_of_room(raised.value)
    assert raised.value.reason == "1 schema migration(s) pending"
    assert "1 schema migration(s) pending: nothing pruned before the start" in caplog.text
    assert (data.images / old).is_dir()


async def test_a_start_while_another_connection_holds_the_database_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sqlite3 shell in a write: the read-only pass cannot read; the full disk's error says
    why nothing was pruned first."""
    database, data, [old] = await journal_of(tmp_path, time.time() - 10 * DAY)
    shell = sqlite3.connect(database, isolation_level=None)
    shell.execute("BEGIN EXCLUSIVE")

    async def no_room(path: Path) -> None:
        shell.execute("ROLLBACK")
        raise sqlite_full()

    monkeypatch.setattr(retention, "connect", no_room)
    monkeypatch.setattr(retention, "START_ROOM_BYTES", 1 << 62)
    try:
        with pytest.raises(NothingPrunedFirst, match="another connection held the database"):
            await connect_making_room(database, data.images, data.inputs, retention_days=1)
    finally:
        shell.close()
    assert (data.images / old).is_dir()


async def test_a_clock_stepped_back_after_the_files_went_still_prunes_their_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NTP steps the clock back a minute between the read-only pass and the first round: the
    round still deletes the rows of every job whose files the pass deleted."""
    database, data, [job] = await journal_of(tmp_path, time.time() - DAY - 30)
    stepped_back = functools.partial(retention.Retention, clock=lambda: time.time() - 60)
    monkeypatch.setattr(retention, "Retention", stepped_back)
    monkeypatch.setattr(retention, "START_ROOM_BYTES", 1 << 62)
    conn, _ = await connect_making_room(database, data.images, data.inputs, retention_days=1)
    try:
        assert not (data.images / job).exists()
        assert await journal.get_job(conn, job) is None
    finally:
        await conn.close()


async def test_the_files_go_a_batch_of_jobs_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 60,000 expired jobs, reading them all at once held 75 MB before the start."""
    ten_days_ago = time.time() - 10 * DAY
    database, data, old = await journal_of(tmp_path, *(ten_days_ago + n for n in range(5)))
    batches: list[int] = []
    read_batch = history.prunable_files

    async def counted(*args: object) -> tuple[history.PrunedJobs, tuple[float, int] | None]:
        batch, after = await read_batch(*args)  # type: ignore[arg-type]
        batches.append(len(batch.job_ids))
        return batch, after

    monkeypatch.setattr(history, "prunable_files", counted)
    monkeypatch.setattr(retention, "PRUNE_BATCH", 2)
    monkeypatch.setattr(retention, "START_ROOM_BYTES", 1 << 62)
    conn, _ = await connect_making_room(database, data.images, data.inputs, retention_days=1)
    await conn.close()
    assert batches == [2, 2, 1]
    assert not any((data.images / job).exists() for job in old)
    assert not any(data.inputs.iterdir())
