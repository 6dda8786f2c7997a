"""Easel's storage full or busy, over the fake Discord with real tiny renders.

A job that ends while the disk stays full (or the database locked) past the journal's retries
is kept, not left running until a restart: once space returns the delivery sweep writes its
end and its member gets the final answer, charged once or refunded; meanwhile /queue and
/cancel say it rendered (or failed) and waits for the storage. A command that meets a full disk or
database, or a database another writer holds, is told so in plain words, nothing charged.
A full disk is refused at admission. The retry waits and the sweep are the test's (short);
each fault is made as it happens: SQLite's own SQLITE_FULL error, a real second connection
holding the write lock, ENOSPC (or EDQUOT, a used-up disk quota) from the file's write."""

from __future__ import annotations

import asyncio
import contextvars
import errno
import functools
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

import cogs.edit
from bot.app import EaselBot
from bot.jobs.queue import admission, job_queue
from bot.jobs.queue.delivery import DeliveryRetries
from bot.jobs.queue.ends import JobEnds
from bot.jobs.queue.journal_writes import JournalWriter
from bot.jobs.retention import START_ROOM_BYTES, Retention
from bot.policy.delivery import MODERATOR_STOPPED
from bot.storage_trouble import DATABASE_BUSY, STORAGE_FULL
from db import jobs as journal
from tests.conftest import ErrorLogs
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, images_today, limit_daily_images
from tests.e2e.test_edits import source_png
from tests.fake_discord import FakeDiscord
from tests.fake_discord.records import StoredMessage
from tests.support.logs import naming, when_logged

StartEasel = Callable[[], AbstractAsyncContextManager[EaselBot]]
# Waits for a condition the test makes (a kept end, the sweep's write): generous under load.
WAIT_S = 60
# A file's write that finds no room: the disk full, or the user's disk quota used up.
NO_ROOM = pytest.mark.parametrize("no_room", [errno.ENOSPC, errno.EDQUOT], ids=["full", "quota"])


class Faults:
    """Writes that fail while ``on``: a job's end (``mark_failed``, ``mark_done``: SQLite's
    own "database or disk is full") and the pictures' PNGs (ENOSPC)."""

    def __init__(self) -> None:
        self.on = False


def sqlite_full() -> sqlite3.OperationalError:
    error = sqlite3.OperationalError("database or disk is full")
    error.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[misc]
    return error


def refused_while(faults: Faults, write: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(write)
    async def refused(*args: Any, **kwargs: Any) -> Any:
        if faults.on:
            raise sqlite_full()
        return await write(*args, **kwargs)

    return refused


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Iterator[Faults]:
    """Journal writes given up after three quick tries, a delivery sweep every 0.1 s."""
    monkeypatch.setattr(job_queue, "JournalWriter", lambda _waits: JournalWriter((0.05,) * 3))
    quick_sweep = functools.partial(DeliveryRetries, sweep_every_s=0.1)
    monkeypatch.setattr(job_queue, "DeliveryRetries", quick_sweep)
    yield Faults()


def png_writes_fail_while(
    faults: Faults, monkeypatch: pytest.MonkeyPatch, no_room: int = errno.ENOSPC
) -> None:
    real = Path.write_bytes

    def write_bytes(path: Path, data: Any) -> int:
        if faults.on and "images" in path.parts:
            raise OSError(no_room, os.strerror(no_room), str(path))
        return real(path, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


def ended(message: StoredMessage) -> bool:
    """Its result (not a progress preview) or its failure."""
    return "❌" in message.content or (
        bool(message.attachments) and "Rendering" not in message.content
    )


async def the_job(bot: EaselBot) -> str:
    [(job_id,)] = await bot._db.execute_fetchall("SELECT id FROM jobs")
    return str(job_id)


async def ledger_kinds(bot: EaselBot, job_id: str) -> list[str]:
    rows = await bot._db.execute_fetchall(
        "SELECT kind FROM quota_ledger WHERE job_id = ? ORDER BY rowid", (job_id,)
    )
    return [str(kind) for (kind,) in rows]


async def vacuumed(bot: EaselBot) -> None:
    """VACUUM the bot's database (no free page left), once no transaction of the bot's is
    open (a start's background work may hold one)."""
    async with asyncio.timeout(WAIT_S):
        while True:
            try:
                await bot._db.execute("VACUUM")
                return
            except sqlite3.OperationalError:
                await asyncio.sleep(0.1)


async def answer_to(fake: FakeDiscord, command: str) -> str:
    handle = await fake.invoke_command(command, {})
    return (await handle.wait_for_answer()).content


async def kept_while_full(
    fake: FakeDiscord, bot: EaselBot, faults: Faults, *, rendered: bool = True
) -> tuple[Any, str]:
    """/imagine while ``faults`` are on, until its end's write is given up; asserts what
    /queue and /cancel say meanwhile (its result posted then, or, not ``rendered``, its
    failure told), and the reservation held."""
    kept = asyncio.Event()
    with when_logged(naming("", logging.ERROR, "was not recorded"), kept.set):
        faults.on = True
        handle = await fake.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        await asyncio.wait_for(kept.wait(), RENDER_TIMEOUT_S)
    job_id = await the_job(bot)
    assert handle.original is not None and not ended(handle.original)  # its progress still
    queue, cancel = await answer_to(fake, "queue"), await answer_to(fake, "cancel")
    if rendered:
        assert f"`{job_id}` rendered, posted once Easel's storage" in queue
        assert cancel.startswith(f"Too late to cancel job `{job_id}`: it has rendered")
    else:
        assert f"`{job_id}` failed, you are told why once Easel's storage" in queue
        assert cancel.startswith(f"Too late to cancel job `{job_id}`: it failed, and its maker")
    assert "already finished" not in cancel
    assert await images_today(bot.services, fake.user_id, fake.guild_id) == 1  # reserved
    assert await ledger_kinds(bot, job_id) == ["reserve"]
    return handle, job_id


@NO_ROOM
async def test_a_failure_kept_while_the_disk_stays_full_is_told_once_space_returns(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    faults: Faults,
    error_logs: ErrorLogs,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    no_room: int,
) -> None:
    error_logs.expect(r"its end \(failed\) was not recorded")
    png_writes_fail_while(faults, monkeypatch, no_room)
    monkeypatch.setattr(journal, "mark_failed", refused_while(faults, journal.mark_failed))
    async with start_easel() as bot:
        await limit_daily_images(fake_discord, 5)
        handle, job_id = await kept_while_full(fake_discord, bot, faults, rendered=False)
        # Its half-written folder goes though its end was refused.
        folder = bot.settings.images_dir / job_id
        async with asyncio.timeout(WAIT_S):
            while folder.exists():  # noqa: ASYNC110 (its removal runs on a thread)
                await asyncio.sleep(0.05)
        faults.on = False
        told = await handle.wait_for_original(ended, timeout=WAIT_S)
        assert f"could not be stored on the server ({os.strerror(no_room)})" in told.content
        assert await images_today(bot.services, fake_discord.user_id, fake_discord.guild_id) == 0
        assert await ledger_kinds(bot, job_id) == ["reserve", "refund"]
    # The full disk is one warning naming the data folder, not a traceback.
    full = [r for r in caplog.records if r.getMessage().startswith("EASEL_DATA_DIR")]
    assert [r.levelno for r in full] == [logging.WARNING]
    assert "is full" in full[0].getMessage() and "bytes free" in full[0].getMessage()
    assert not any("could not be stored" in r.getMessage() for r in error_logs.records)


async def test_a_result_kept_while_the_database_stays_full_is_posted_charged_once(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    faults: Faults,
    error_logs: ErrorLogs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error_logs.expect("its outcome was not recorded")
    monkeypatch.setattr(journal, "mark_done", refused_while(faults, journal.mark_done))
    async with start_easel() as bot:
        await limit_daily_images(fake_discord, 5)
        handle, job_id = await kept_while_full(fake_discord, bot, faults)
        assert (bot.settings.images_dir / job_id / "0.png").is_file()  # kept for its record
        faults.on = False
        posted = await handle.wait_for_original(ended, timeout=WAIT_S)
        assert len(posted.attachments) == 1
        assert await images_today(bot.services, fake_discord.user_id, fake_discord.guild_id) == 1
        assert await ledger_kinds(bot, job_id) == ["reserve", "commit"]
        job = await journal.get_job(bot._db, job_id)
        assert job is not None and job.status is journal.JobStatus.DONE


async def test_a_result_kept_then_withdrawn_by_a_moderator_is_refunded_never_posted(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    faults: Faults,
    error_logs: ErrorLogs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Withdrawn while its result waits for the journal, a job is stopped and refunded, as
    the withdrawal promises of an unfinished job: its pictures go, and nothing is posted."""
    error_logs.expect("its outcome was not recorded")
    monkeypatch.setattr(journal, "mark_done", refused_while(faults, journal.mark_done))
    async with start_easel() as bot:
        await limit_daily_images(fake_discord, 5)
        handle, job_id = await kept_while_full(fake_discord, bot, faults)
        withdrawal = await bot.services.history.withdraw_by_moderator(job_id, by=999)
        assert list(withdrawal.stopped) == [job_id]
        assert not (bot.settings.images_dir / job_id).exists()
        faults.on = False
        told = await handle.wait_for_original(lambda m: MODERATOR_STOPPED in m.content, WAIT_S)
        job = await journal.get_job(bot._db, job_id)
        assert job is not None and job.status is journal.JobStatus.CANCELLED
        assert await ledger_kinds(bot, job_id) == ["reserve", "refund"]
        assert await images_today(bot.services, fake_discord.user_id, fake_discord.guild_id) == 0
        assert not told.attachments
        assert not any(message.attachments for message in fake_discord.messages.values())


async def test_a_result_kept_whose_read_the_sweep_is_refused_once_is_posted_all_the_same(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    faults: Faults,
    error_logs: ErrorLogs,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The sweep's first read of a kept result's job, once the database takes writes again,
    is refused (an I/O error): the result is written and posted at a later sweep, not left
    done but never delivered."""
    error_logs.expect("its outcome was not recorded")
    monkeypatch.setattr(journal, "mark_done", refused_while(faults, journal.mark_done))
    in_sweep: contextvars.ContextVar[bool] = contextvars.ContextVar("in_sweep", default=False)
    refusals = [sqlite3.OperationalError("disk I/O error")]
    retry_kept, get_job = JobEnds.retry_kept, journal.get_job

    async def sweep_of_kept_ends(self: JobEnds) -> int:
        in_sweep.set(not faults.on)
        return await retry_kept(self)

    async def read_refused_once_in_the_sweep(conn: Any, job_id: str) -> Any:
        if in_sweep.get() and refusals:
            raise refusals.pop()
        return await get_job(conn, job_id)

    monkeypatch.setattr(JobEnds, "retry_kept", sweep_of_kept_ends)
    monkeypatch.setattr(journal, "get_job", read_refused_once_in_the_sweep)
    async with start_easel() as bot:
        await limit_daily_images(fake_discord, 5)
        handle, job_id = await kept_while_full(fake_discord, bot, faults)
        faults.on = False
        posted = await handle.wait_for_original(ended, timeout=WAIT_S)
        assert len(posted.attachments) == 1 and refusals == []
        assert await ledger_kinds(bot, job_id) == ["reserve", "commit"]
    assert any("kept end(s) not written (disk I/O error)" in r.getMessage() for r in caplog.records)


async def test_a_result_kept_the_journal_refuses_for_good_fails_and_blocks_no_other(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    faults: Faults,
    error_logs: ErrorLogs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two results kept; once the database takes writes, the sweep's first record (of the
    one kept first) is refused for good (a constraint): that job fails, refunded, its member
    told, and the other is posted."""
    error_logs.expect("its outcome was not recorded")
    error_logs.expect("its kept result was not recorded; it fails")
    refused_for_good: list[str] = []
    mark_done = journal.mark_done

    async def record(conn: Any, job_id: str, *args: Any, **kwargs: Any) -> Any:
        if faults.on:
            raise sqlite_full()
        refused_for_good[:] = refused_for_good or [job_id]
        if job_id in refused_for_good:
            raise sqlite3.IntegrityError("CHECK constraint failed")
        return await mark_done(conn, job_id, *args, **kwargs)

    monkeypatch.setattr(journal, "mark_done", record)
    async with start_easel() as bot:
        await limit_daily_images(fake_discord, 5)
        kept: list[None] = []
        with when_logged(naming("", logging.ERROR, "was not recorded"), lambda: kept.append(None)):
            faults.on = True
            first = await fake_discord.invoke_command("imagine", {"prompt": "a cat", **QUICK})
            second = await fake_discord.invoke_command("imagine", {"prompt": "a dog", **QUICK})
            async with asyncio.timeout(2 * RENDER_TIMEOUT_S):
                while len(kept) < 2:  # noqa: ASYNC110 (counted by the log's handler)
                    await asyncio.sleep(0.05)
        faults.on = False
        told = [await handle.wait_for_original(ended, timeout=WAIT_S) for handle in (first, second)]
        [failing] = refused_for_good
        [failed] = [message for message in told if f"reference {failing}" in message.content]
        [posted] = [message for message in told if message is not failed]
        assert "could not be stored on the server (IntegrityError)" in failed.content
        assert len(posted.attachments) == 1
        assert await ledger_kinds(bot, failing) == ["reserve", "refund"]
        assert not (bot.settings.images_dir / failing).exists()


async def test_a_full_disk_refuses_new_jobs_at_admission_until_it_has_room(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = {"bytes": START_ROOM_BYTES - 1}
    monkeypatch.setattr(admission, "free_bytes", lambda _path: free["bytes"])
    monkeypatch.setattr(admission, "ROOM_READ_EVERY_S", 0.0)  # read at each check
    async with start_easel() as bot:
        handle = await fake_discord.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        refused = await handle.wait_for_answer()
        assert refused.content == STORAGE_FULL.told() and refused.is_ephemeral
        assert await bot._db.execute_fetchall("SELECT id FROM jobs") == []
        free["bytes"] = START_ROOM_BYTES
        handle = await fake_discord.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        assert (await handle.wait_for_original(ended, timeout=RENDER_TIMEOUT_S)).attachments


async def test_a_full_database_is_told_plainly_and_charges_nothing(
    fake_discord: FakeDiscord, start_easel: StartEasel, caplog: pytest.LogCaptureFixture
) -> None:
    async with start_easel() as bot:
        await limit_daily_images(fake_discord, 5)
        # SQLite's own "database or disk is full": no free page left in the file, which may
        # not grow a page more, and a job whose prompt needs a page of its own.
        await vacuumed(bot)
        [(pages,)] = await bot._db.execute_fetchall("PRAGMA page_count")
        await bot._db.execute(f"PRAGMA max_page_count = {pages}")
        try:
            handle = await fake_discord.invoke_command(
                "imagine", {"prompt": "a cat " + "x" * 3900, **QUICK}
            )
            told = await handle.wait_for_answer(timeout=WAIT_S)
        finally:
            await bot._db.execute("PRAGMA max_page_count = 1073741823")
        assert told.content == STORAGE_FULL.told()
        assert await images_today(bot.services, fake_discord.user_id, fake_discord.guild_id) == 0
    # One warning, no internal error (the error_logs fixture fails on any ERROR).
    assert any(
        r.levelno == logging.WARNING and "Easel's storage is full" in r.getMessage()
        for r in caplog.records
    )


async def test_a_database_another_writer_holds_is_told_plainly_and_charges_nothing(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No pruning pass in the background: the lock held would fail it, logged as an error.
    monkeypatch.setattr(Retention, "run", lambda _self: asyncio.Event().wait())
    async with start_easel() as bot:
        await limit_daily_images(fake_discord, 5)
        other = sqlite3.connect(
            bot.settings.database_path,
            isolation_level=None,
            timeout=WAIT_S,  # for a transaction of Easel's to end first
            check_same_thread=False,
        )
        try:
            # Off the loop: waiting there, it would hold Easel's open transaction unfinished.
            await asyncio.to_thread(other.execute, "BEGIN IMMEDIATE")  # past Easel's 5 s wait
            handle = await fake_discord.invoke_command("imagine", {"prompt": "a cat", **QUICK})
            told = await handle.wait_for_answer(timeout=WAIT_S)
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert told.content == DATABASE_BUSY.told()
        assert await images_today(bot.services, fake_discord.user_id, fake_discord.guild_id) == 0


@NO_ROOM
async def test_an_upload_saved_to_a_full_disk_is_told_plainly_and_charges_nothing(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    monkeypatch: pytest.MonkeyPatch,
    no_room: int,
) -> None:
    def refused(path: Path, data: bytes) -> None:
        raise OSError(no_room, os.strerror(no_room), str(path))

    monkeypatch.setattr(cogs.edit, "write_file", refused)
    async with start_easel() as bot:
        await limit_daily_images(fake_discord, 5)
        handle = await fake_discord.invoke_command(
            "vary", {"strength": "0.5"}, attachments={"image": ("fox.png", source_png())}
        )
        told = await handle.wait_for_answer(timeout=WAIT_S)
        assert told.content == STORAGE_FULL.told()
        assert await images_today(bot.services, fake_discord.user_id, fake_discord.guild_id) == 0
