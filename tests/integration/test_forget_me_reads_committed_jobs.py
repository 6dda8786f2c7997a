"""/forget-me reads the uploads other members' jobs still use inside its own write transaction,
never inside another coroutine's: it waits for that one, so a job that transaction deleted and
then rolled back is still there, and its upload stays. A real SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiosqlite

from db import database
from db.database import transaction
from tests.integration.test_forget_me_shared_things import (
    MAKER,
    REROLLER,
    finished_job,
    history_of,
)

WAIT_S = 10.0


class Undone(Exception):
    """Makes the other coroutine's transaction roll back."""


async def test_a_job_another_transaction_deleted_then_rolled_back_keeps_its_upload(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    upload = tmp_path / "inputs" / "a-upload.png"
    upload.parent.mkdir()
    upload.write_bytes(b"png")
    await finished_job(conn, "a" * 16, MAKER, upload)
    await finished_job(conn, "b" * 16, REROLLER, upload)  # a 🔄 of the maker's job
    # A job of the 🔄's member that reads another upload.
    await finished_job(conn, "c" * 16, REROLLER, tmp_path / "inputs" / "other.png")
    deleted, roll_back = asyncio.Event(), asyncio.Event()

    async def delete_then_roll_back() -> None:
        with contextlib.suppress(Undone):
            async with transaction(conn):
                await conn.execute("DELETE FROM jobs WHERE id = ?", ("b" * 16,))
                deleted.set()
                await roll_back.wait()
                raise Undone

    other = asyncio.create_task(delete_then_roll_back())
    await deleted.wait()
    erase = asyncio.create_task(history_of(conn, tmp_path).forget(MAKER))
    lock = database._transaction_locks[conn]
    async with asyncio.timeout(WAIT_S):
        while not lock._waiters:  # noqa: ASYNC110 (the erase waits for that transaction)
            await asyncio.sleep(0.01)
    roll_back.set()
    await other
    forgotten = await erase
    assert (forgotten.jobs, forgotten.uploads) == (1, 0)
    assert upload.is_file()
