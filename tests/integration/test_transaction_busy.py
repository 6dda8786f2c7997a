"""A transaction that finds another connection holding the write lock (an operator's sqlite3
shell, a backup) waits for it from asyncio, between tries, up to the connection's busy
timeout: the connection's one thread serves other coroutines' statements meanwhile, a lock
released in time lets it through, and after the timeout it fails as SQLite's own wait did
("database is locked"). Real SQLite files and a real second connection."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from db import jobs as journal
from db.database import connect, transaction

# Waits for what the test makes happen: generous on a loaded machine.
WAIT_S = 10.0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "easel.sqlite3"


@pytest.fixture
def holder(path: Path) -> Iterator[sqlite3.Connection]:
    """Another process's connection (``holding`` takes the write lock)."""
    side = sqlite3.connect(path, isolation_level=None)
    yield side
    if side.in_transaction:
        side.execute("ROLLBACK")
    side.close()


@asynccontextmanager
async def opened(
    path: Path, busy_timeout_s: float, holder: sqlite3.Connection
) -> AsyncIterator[aiosqlite.Connection]:
    """Easel's connection, made first (in WAL mode), and then ``holder`` takes the lock."""
    conn = await connect(path, busy_timeout_s=busy_timeout_s)
    await conn.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    finally:
        await conn.close()


def tries_counted(
    conn: aiosqlite.Connection, monkeypatch: pytest.MonkeyPatch
) -> asyncio.Queue[None]:
    """One item each time the connection is asked to begin a write transaction."""
    tries: asyncio.Queue[None] = asyncio.Queue()
    execute = conn.execute

    def counting(sql: str, *args: Any) -> Any:
        if sql == "BEGIN IMMEDIATE":
            tries.put_nowait(None)
        return execute(sql, *args)

    monkeypatch.setattr(conn, "execute", counting)
    return tries


async def values(conn: aiosqlite.Connection) -> list[int]:
    return [int(x) for (x,) in await conn.execute_fetchall("SELECT x FROM t")]


async def busy_timeout_ms(conn: aiosqlite.Connection) -> int:
    [(timeout,)] = await conn.execute_fetchall("PRAGMA busy_timeout")
    return int(timeout)


async def insert_in_a_transaction(conn: aiosqlite.Connection) -> None:
    async with transaction(conn):
        await conn.execute("INSERT INTO t VALUES (1)")


async def test_a_transaction_waiting_for_the_lock_lets_reads_through_and_goes_on_once_it_is_free(
    path: Path, holder: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(path, busy_timeout_s=60, holder=holder) as conn:
        tries = tries_counted(conn, monkeypatch)
        writing = asyncio.create_task(insert_in_a_transaction(conn))
        await asyncio.wait_for(tries.get(), WAIT_S)

        # Was queued behind the BEGIN, which held the connection's thread for the whole wait.
        [(rows,)] = await asyncio.wait_for(conn.execute_fetchall("SELECT count(*) FROM t"), WAIT_S)
        assert rows == 0
        await asyncio.wait_for(tries.get(), WAIT_S)  # tried again, after the read
        assert not writing.done()

        holder.execute("ROLLBACK")
        await asyncio.wait_for(writing, WAIT_S)
        assert await values(conn) == [1]
        assert not conn.in_transaction
        assert await busy_timeout_ms(conn) == 60_000  # every other statement still waits


async def test_a_transaction_behind_a_lone_write_under_the_lock_still_gets_its_own_wait(
    path: Path, holder: sqlite3.Connection
) -> None:
    """The wait counts from the BEGIN's first refusal, as SQLite's own does: a lone write
    queued first holds the connection's thread for its whole busy timeout, and a transaction
    queued behind it still waits its own (a lock held 6 s: the transaction's BEGIN first runs
    at about 4 s and is let through at 6 s, within its 4 s; 2 s of room either side for a
    loaded machine)."""
    async with opened(path, busy_timeout_s=4.0, holder=holder) as conn:
        asyncio.get_running_loop().call_later(6.0, holder.execute, "ROLLBACK")
        lone = asyncio.ensure_future(conn.execute("INSERT INTO t VALUES (0)"))
        await asyncio.sleep(0)  # queued first
        await asyncio.wait_for(insert_in_a_transaction(conn), WAIT_S)
        with contextlib.suppress(sqlite3.OperationalError):  # refused, unless the loop lagged
            await lone
        assert 1 in await values(conn)


async def test_a_transaction_still_refused_at_the_busy_timeout_fails_as_sqlite_s_wait_did(
    path: Path, holder: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(path, busy_timeout_s=0.3, holder=holder) as conn:
        tries = tries_counted(conn, monkeypatch)
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(sqlite3.OperationalError, match=r"^database is locked$") as refused:
            await insert_in_a_transaction(conn)
        assert loop.time() - began >= 0.3  # not given up before the busy timeout
        assert refused.value.sqlite_errorcode == sqlite3.SQLITE_BUSY
        assert tries.qsize() > 1  # tried again meanwhile, not once with SQLite's wait
        assert not conn.in_transaction
        assert await busy_timeout_ms(conn) == 300

        holder.execute("ROLLBACK")
        await insert_in_a_transaction(conn)
        assert await values(conn) == [1]


async def test_a_second_transaction_waits_for_the_first_s_tries_instead_of_beginning_between(
    path: Path, holder: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(path, busy_timeout_s=60, holder=holder) as conn:
        tries = tries_counted(conn, monkeypatch)
        first = asyncio.create_task(insert_in_a_transaction(conn))
        await asyncio.wait_for(tries.get(), WAIT_S)
        second = asyncio.create_task(insert_in_a_transaction(conn))
        await asyncio.wait_for(tries.get(), WAIT_S)
        await asyncio.wait_for(tries.get(), WAIT_S)
        assert not first.done()
        assert not second.done()

        holder.execute("ROLLBACK")
        await asyncio.wait_for(asyncio.gather(first, second), WAIT_S)
        assert await values(conn) == [1, 1]


async def test_a_job_s_start_waiting_for_the_lock_lets_reads_through(
    path: Path, holder: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's start is a write of its own (no caller's transaction), on every batch."""
    async with opened(path, busy_timeout_s=60, holder=holder) as conn:
        tries = tries_counted(conn, monkeypatch)
        starting = asyncio.create_task(journal.mark_running(conn, ["0123456789abcdef"], 0.0))
        await asyncio.wait_for(tries.get(), WAIT_S)  # was a lone UPDATE, waiting in SQLite

        await asyncio.wait_for(conn.execute_fetchall("SELECT count(*) FROM jobs"), WAIT_S)
        assert not starting.done()

        holder.execute("ROLLBACK")
        assert await asyncio.wait_for(starting, WAIT_S) == []
