"""A transaction, or a write outside one, that finds another connection holding the write
lock (an operator's sqlite3 shell, a backup) waits for it from asyncio, between tries, up to
the connection's busy timeout: the connection's one thread serves other coroutines' statements
meanwhile, a lock released in time lets it through, and after the timeout it fails as SQLite's
own wait did ("database is locked"). Real SQLite files and a real second connection."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from db import history, quotas, refusals
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


async def nothing_made(_conn: aiosqlite.Connection) -> None:
    pass


@asynccontextmanager
async def opened(
    path: Path,
    busy_timeout_s: float,
    holder: sqlite3.Connection,
    made: Callable[[aiosqlite.Connection], Awaitable[object]] = nothing_made,
) -> AsyncIterator[aiosqlite.Connection]:
    """Easel's connection, made first (in WAL mode) with the rows ``made`` writes, and then
    ``holder`` takes the lock."""
    conn = await connect(path, busy_timeout_s=busy_timeout_s)
    await conn.execute("CREATE TABLE t (x INTEGER)")
    await made(conn)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    finally:
        await conn.close()


def tries_counted(
    conn: aiosqlite.Connection, monkeypatch: pytest.MonkeyPatch, tried: str = "BEGIN IMMEDIATE"
) -> asyncio.Queue[None]:
    """One item each time the connection is asked to run a statement starting with ``tried``
    (by default, to begin a write transaction)."""
    tries: asyncio.Queue[None] = asyncio.Queue()
    for name in ("execute", "execute_fetchall"):
        run = getattr(conn, name)

        def counting(sql: str, *args: Any, run: Any = run) -> Any:
            if sql.startswith(tried):
                tries.put_nowait(None)
            return run(sql, *args)

        monkeypatch.setattr(conn, name, counting)
    return tries


async def values(conn: aiosqlite.Connection) -> list[int]:
    return [int(x) for (x,) in await conn.execute_fetchall("SELECT x FROM t")]


async def busy_timeout_ms(conn: aiosqlite.Connection) -> int:
    [(timeout,)] = await conn.execute_fetchall("PRAGMA busy_timeout")
    return int(timeout)


async def insert_in_a_transaction(conn: aiosqlite.Connection) -> None:
    async with transaction(conn):
        await conn.execute("INSERT INTO t VALUES (1)")


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


@dataclass(frozen=True)
class Write:
    """A transaction, or a db function's write with no transaction of its caller's (of the
    retention sweep, a delivery, a withheld result's refund): its first statement starts with
    ``tried``, the rows it needs are ``made`` before the lock is taken, and once through it
    returns ``returned``."""

    tried: str
    made: Callable[[aiosqlite.Connection], Awaitable[object]]
    written: Callable[[aiosqlite.Connection], Awaitable[object]]
    returned: object


async def inserted_in_a_transaction(conn: aiosqlite.Connection) -> list[int]:
    await insert_in_a_transaction(conn)
    return await values(conn)


async def refusal_made(conn: aiosqlite.Connection) -> None:
    await refusals.record(conn, refusals.NewRefusal(1, 2, 3, "banned_word", None, 10.0))


async def reservation_made(conn: aiosqlite.Connection) -> None:
    await quotas.reserve(conn, "job", 3, 1, 1, 2.0, 10.0)


async def post_of_an_erased_job(conn: aiosqlite.Connection) -> tuple[bool, object]:
    """Its link refused (the job is gone), its delete left pending (a second write)."""
    linked = await journal.record_job_message(conn, "erased", 7, posted_in=(1, 2))
    return linked, await history.pending_post_deletes(conn, math.inf)


WRITES = {
    "a transaction": Write("BEGIN IMMEDIATE", nothing_made, inserted_in_a_transaction, [1]),
    # A statement's cursor (``write``): its row count.
    "refusals pruned": Write(
        "DELETE FROM refusals", refusal_made, lambda conn: refusals.prune(conn, 20.0), 1
    ),
    # A statement's rows (``write_returning``).
    "withheld refund": Write(
        "INSERT INTO quota_ledger",
        reservation_made,
        lambda conn: quotas.refund_withheld(conn, "job", 20.0),
        quotas.WithheldRefund(user_id=3, guild_id=1, now=True),
    ),
    # Two, holding the lock that keeps them out of other coroutines' transactions.
    "post of an erased job": Write(
        "INSERT OR IGNORE INTO job_messages",
        nothing_made,
        post_of_an_erased_job,
        (False, (history.PostedMessage(2, 7),)),
    ),
}


@pytest.fixture(params=list(WRITES))
def write(request: pytest.FixtureRequest) -> Write:
    return WRITES[request.param]


async def test_a_write_waiting_for_the_lock_lets_reads_through_and_goes_on_once_it_is_free(
    path: Path, holder: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch, write: Write
) -> None:
    async with opened(path, busy_timeout_s=60, holder=holder, made=write.made) as conn:
        tries = tries_counted(conn, monkeypatch, write.tried)
        writing = asyncio.create_task(write.written(conn))
        await asyncio.wait_for(tries.get(), WAIT_S)

        # Was queued behind the write (a transaction's BEGIN), which held the connection's
        # thread for the whole wait.
        [(rows,)] = await asyncio.wait_for(conn.execute_fetchall("SELECT count(*) FROM t"), WAIT_S)
        assert rows == 0
        await asyncio.wait_for(tries.get(), WAIT_S)  # tried again, after the read
        assert not writing.done()

        holder.execute("ROLLBACK")
        assert await asyncio.wait_for(writing, WAIT_S) == write.returned
        assert not conn.in_transaction
        assert await busy_timeout_ms(conn) == 60_000  # every other statement still waits


async def test_a_write_still_refused_at_the_busy_timeout_fails_as_sqlite_s_wait_did(
    path: Path, holder: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch, write: Write
) -> None:
    async with opened(path, busy_timeout_s=0.3, holder=holder, made=write.made) as conn:
        tries = tries_counted(conn, monkeypatch, write.tried)
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(sqlite3.OperationalError, match=r"^database is locked$") as refused:
            await write.written(conn)
        assert loop.time() - began >= 0.3  # not given up before the busy timeout
        assert refused.value.sqlite_errorcode == sqlite3.SQLITE_BUSY
        assert tries.qsize() > 1  # tried again meanwhile, not once with SQLite's wait
        assert not conn.in_transaction
        assert await busy_timeout_ms(conn) == 300

        holder.execute("ROLLBACK")
        assert await write.written(conn) == write.returned  # the refused tries wrote nothing
