"""/forget-me erases from the disk, not just from the tables: SQLite leaves a deleted row's
bytes in free pages and in the write-ahead log, where a copy of the data folder (a backup, a
stolen disk) still reads them. The real queue, History and SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import aiosqlite

from bot.history import History
from bot.jobs.queue import Submission
from bot.jobs.retention import DAY_S, Retention
from bot.policy.member_settings import MemberSettings
from db.database import connect, write_back_log
from inference.types import RenderRequest
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine
from tests.support.sinks import started_queue

MEMBER, GUILD = 7, 5
PRIVATE = "a private prompt only this member ever typed, 7f3a9c"


def copies_on_disk(database: Path) -> dict[str, int]:
    """How many times each of the database's files (the log included) holds the prompt."""
    files = (path for path in database.parent.iterdir() if path.name.startswith(database.name))
    counts = {path.name: path.read_bytes().count(PRIVATE.encode()) for path in files}
    return {name: count for name, count in counts.items() if count}


async def made_three_jobs(conn: aiosqlite.Connection, images: Path, at: float = 0.0) -> None:
    """Three delivered jobs of the member with the private prompt, their pages written back
    into the database file as a running bot's would be by then."""
    queue, sink = await started_queue(
        conn, [DeviceWorker("cpu", lambda _: InstantEngine())], images
    )
    for index in range(3):
        await queue.submit(
            Submission(
                kind="imagine",
                request=RenderRequest(PRIVATE, seed=index, steps=2),
                user_id=MEMBER,
                guild_id=GUILD,
                channel_id=9,
                application_id=1,
                interaction_token="token",
                interaction_created_at=at,
            )
        )
    await sink.wait_for(3)
    await queue.stop()
    await conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


async def test_a_forgotten_members_prompt_is_gone_from_the_database_files(tmp_path: Path) -> None:
    database = tmp_path / "easel.sqlite3"
    conn = await connect(database)
    try:
        await made_three_jobs(conn, tmp_path / "images")
        assert database.name in copies_on_disk(database)
        history = History(conn, tmp_path / "images", tmp_path / "inputs", MemberSettings(conn))
        forgotten = await history.forget(MEMBER)
        assert forgotten.jobs == 3
        # The bot still running: a copy of its data folder (a backup) holds no trace.
        assert not copies_on_disk(database)
    finally:
        await conn.close()


async def test_pruned_jobs_are_gone_from_the_database_files(tmp_path: Path) -> None:
    database = tmp_path / "easel.sqlite3"
    conn = await connect(database)
    try:
        await made_three_jobs(conn, tmp_path / "images")
        assert database.name in copies_on_disk(database)
        later = time.time() + 40 * DAY_S
        retention = Retention(conn, tmp_path / "images", tmp_path / "inputs", 30, lambda: later)
        assert (await retention.prune()).jobs == 3
        assert not copies_on_disk(database)
    finally:
        await conn.close()


async def test_forget_me_while_a_read_on_the_bots_connection_is_half_done(tmp_path: Path) -> None:
    """A checkpoint on the bot's own connection fails while any of its cursors is half-read:
    the erase must still finish (files too), and the log be written back once the read ends."""
    database, images = tmp_path / "easel.sqlite3", tmp_path / "images"
    conn = await connect(database)
    try:
        await made_three_jobs(conn, images)
        history = History(conn, images, tmp_path / "inputs", MemberSettings(conn))
        half_read = await conn.execute("SELECT id FROM jobs")  # e.g. the dashboard's page
        await half_read.fetchone()
        forgotten = await history.forget(MEMBER)
        assert (forgotten.jobs, forgotten.pictures) == (3, 3)
        assert not list(images.rglob("*.png"))
        await half_read.close()
        retention = Retention(conn, images, tmp_path / "inputs", 0)
        sweep = asyncio.create_task(retention.run())
        try:  # its first round retries the write-back the read held up
            for _ in range(500):
                if not copies_on_disk(database):
                    break
                await asyncio.sleep(0.01)
        finally:
            sweep.cancel()
        assert not copies_on_disk(database)
    finally:
        await conn.close()


async def test_a_reader_elsewhere_does_not_hold_up_the_bots_statements(tmp_path: Path) -> None:
    """Another connection (a backup, the sqlite3 shell) reading an old snapshot keeps the log
    from being emptied; the write-back gives up at once rather than stall the bot's queue."""
    database = tmp_path / "easel.sqlite3"
    conn = await connect(database)
    reader = sqlite3.connect(database, isolation_level=None)
    try:
        await made_three_jobs(conn, tmp_path / "images")
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM jobs").fetchone()  # its snapshot is now held
        await conn.execute("DELETE FROM refusals")  # a commit after that snapshot
        order: list[str] = []

        def let_go() -> None:
            reader.execute("COMMIT")
            order.append("reader let go")

        asyncio.get_running_loop().call_later(3.0, let_go)
        write_back = asyncio.create_task(write_back_log(conn))
        await asyncio.sleep(0)
        await conn.execute("UPDATE jobs SET interaction_token = NULL")  # e.g. the ack path
        order.append("bot wrote")
        assert order == ["bot wrote"]
        assert await write_back is False  # busy: left for Retention's sweep
    finally:
        reader.close()
        await conn.close()
