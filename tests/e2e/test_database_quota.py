"""SQLite's own write refused by a used-up disk quota, over the fake Discord: SQLite reports
EDQUOT as a bare "disk I/O error" (it says "full" for ENOSPC alone) and Python does not show
its errno, so Easel asks the database's folder for a page of room (``db.database``): refused
for want of room, the member is told Easel's storage is full, as for a full disk, nothing
charged; a real I/O error (the folder takes the page) stays an internal error. The folder is
asked off the event loop, within a time limit (a disk that holds the write must not freeze
the bot); ``easel run``, its database closed, asks EASEL_DATA_DIR itself."""

from __future__ import annotations

import asyncio
import errno
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from bot import app
from bot.app import EaselBot
from bot.cli.main import main
from bot.storage_trouble import STORAGE_FULL, STORAGE_SLOW, storage_trouble
from db import database
from db import jobs as journal
from tests.conftest import ErrorLogs
from tests.e2e.helpers import QUICK, images_today, limit_daily_images
from tests.fake_discord import FakeDiscord

StartEasel = Callable[[], AbstractAsyncContextManager[EaselBot]]
WAIT_S = 60  # generous: a loaded 2-core machine


def disk_io_error() -> sqlite3.OperationalError:
    """SQLite's error for a page write the OS refused otherwise than with ENOSPC."""
    error = sqlite3.OperationalError("disk I/O error")
    error.sqlite_errorcode = sqlite3.SQLITE_IOERR_WRITE  # type: ignore[misc]
    return error


def quota_used_up(monkeypatch: pytest.MonkeyPatch, folder: Path) -> list[Path]:
    """``folder`` refuses every write, its disk quota used up (EDQUOT); others (those of
    databases of other tests, open or not yet collected) take them. The folders asked."""
    asked: list[Path] = []

    def refused(probed: Path) -> None:
        asked.append(probed)
        if probed == folder:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(database, "_write_a_page", refused)
    return asked


def journal_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A job's journaling fails as SQLite's write that the OS refused."""

    async def refused(*_: Any, **__: Any) -> None:
        raise disk_io_error()

    monkeypatch.setattr(journal, "insert_job", refused)


async def test_a_database_write_refused_by_a_used_up_quota_is_told_as_full(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with start_easel() as bot:
        await limit_daily_images(fake_discord, 5)
        [main, *_] = await bot._db.execute_fetchall("PRAGMA database_list")
        quota_used_up(monkeypatch, Path(main[2]).parent.resolve())
        journal_refused(monkeypatch)
        handle = await fake_discord.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        told = await handle.wait_for_answer(timeout=WAIT_S)
        assert told.content == STORAGE_FULL.told()
        assert await images_today(bot.services, fake_discord.user_id, fake_discord.guild_id) == 0
    # One warning, no internal error (the error_logs fixture fails on any ERROR).
    assert any(
        r.levelno == logging.WARNING and "Easel's storage is full" in r.getMessage()
        for r in caplog.records
    )


async def test_a_disk_io_error_with_room_in_the_folder_is_not_full(tmp_path: Path) -> None:
    """The database's folder takes a page: a real I/O error, not a full disk."""
    conn = await database.connect(tmp_path / "easel.sqlite3")
    try:
        assert await storage_trouble(disk_io_error()) is None
    finally:
        await database.close(conn)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The test's folder, as the database's folder is known (resolved)."""
    return tmp_path.resolve()


async def test_a_disk_io_error_where_the_folder_refuses_a_page_names_it(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = await database.connect(folder / "easel.sqlite3")
    try:
        asked = quota_used_up(monkeypatch, folder)
        full = await database.found_no_room(disk_io_error())
        assert isinstance(full, OSError) and full.errno == errno.EDQUOT
        assert full.filename == str(folder) and folder in asked
        assert await storage_trouble(disk_io_error()) is STORAGE_FULL
    finally:
        await database.close(conn)


@pytest.fixture
def probe_held(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Each folder's page write hangs (a failing disk's sync) until the test lets it go, or
    ``WAIT_S`` passed; (started, ended)."""
    started, ended, let_go = threading.Event(), threading.Event(), threading.Event()

    def hung(_: Path) -> None:
        started.set()
        let_go.wait(WAIT_S)
        ended.set()

    monkeypatch.setattr(database, "_write_a_page", hung)
    try:
        yield started, ended
    finally:
        let_go.set()


async def test_a_probe_the_disk_holds_does_not_freeze_the_bot(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error_logs: ErrorLogs,
    probe_held: tuple[threading.Event, threading.Event],
) -> None:
    """While the folder's write hangs, another member's command is answered; the member whose
    write failed is told, once the probe's time is up, that Easel's storage is slow to answer
    and nothing was charged (not an internal error), and the operator gets one ERROR naming
    SQLite's error and what to check: one for the hang, a second failed write while it lasts
    is a warning (the error_logs fixture fails on any other ERROR)."""
    started, ended = probe_held
    monkeypatch.setattr(database, "ROOM_PROBE_LIMIT_S", 1.0)
    error_logs.expect(r"gave no answer in 1\.0 s")
    async with start_easel() as bot:
        await limit_daily_images(fake_discord, 5)
        journal_refused(monkeypatch)
        failed = await fake_discord.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        assert await asyncio.to_thread(started.wait, WAIT_S)
        helped = await fake_discord.invoke_command("help", {})
        assert "/imagine" in (await helped.wait_for_original(timeout=WAIT_S)).content
        assert not ended.is_set(), "the bot answered only once the probe's write ended"
        told = (await failed.wait_for_answer(timeout=WAIT_S)).content
        assert told == STORAGE_SLOW.told(), told
        assert "slow to answer" in told and "nothing was charged" in told, told
        again = await fake_discord.invoke_command("imagine", {"prompt": "a dog", **QUICK})
        assert (await again.wait_for_answer(timeout=WAIT_S)).content == STORAGE_SLOW.told()
        assert not ended.is_set()
        assert await images_today(bot.services, fake_discord.user_id, fake_discord.guild_id) == 0
    [reported] = [r.getMessage() for r in error_logs.records]
    assert "SQLite's write failed (disk I/O error)" in reported, reported
    assert "check the disk's health" in reported and "network mount" in reported, reported
    assert "the page's write reported at ERROR still gives no answer" in caplog.text
    assert any(
        r.levelno == logging.WARNING and STORAGE_SLOW.what in r.getMessage() for r in caplog.records
    )


async def test_a_failed_write_raised_while_handling_another_waits_for_the_folder_once(
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    error_logs: ErrorLogs,
    probe_held: tuple[threading.Event, threading.Event],
) -> None:
    """Two of SQLite's failed writes in one error's chain, the folder holding the page's
    write: slow to answer after one wait, one ERROR (not a second wait of the limit)."""
    monkeypatch.setattr(database, "ROOM_PROBE_LIMIT_S", 0.2)
    error_logs.expect(r"gave no answer in 0\.2 s")
    probe_running = database._probe_running
    asked: list[tuple[Path, ...]] = []

    def counted(folders: tuple[Path, ...]) -> Any:
        asked.append(folders)
        return probe_running(folders)

    monkeypatch.setattr(database, "_probe_running", counted)
    chained = disk_io_error()
    chained.__context__ = disk_io_error()
    conn = await database.connect(folder / "easel.sqlite3")
    try:
        assert isinstance(await database.storage_failure(chained), database.SlowToAnswer)
    finally:
        await database.close(conn)
    assert len(asked) == 1 and len(error_logs.records) == 1, (asked, error_logs.records)


def test_easel_run_names_the_data_folder_a_quota_refused_a_write_in(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A write of the run refused by the quota, its database closed before the command line
    reads the error (``async with bot``): the one line names EASEL_DATA_DIR, no traceback."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISCORD_TOKEN", "any")
    data = (tmp_path / "data").resolve()
    quota_used_up(monkeypatch, data)

    async def run_whose_write_is_refused(_: object, **__: object) -> None:
        conn = await database.connect(data / "easel.sqlite3")
        try:
            raise disk_io_error()
        finally:
            await database.close(conn)

    monkeypatch.setattr(app, "run", run_whose_write_is_refused)
    assert main(["run"]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    [line] = captured.err.strip().splitlines()
    assert line.startswith(f"easel run: error: EASEL_DATA_DIR={data} is full ("), line
    assert "Disk quota exceeded" in line, line
