"""A task cancelled at a transaction's BEGIN or COMMIT (a stop while Easel starts) leaves no
transaction open, so later writes are not rolled back at close, and ends as cancelled."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from db.database import connect, transaction


def cancel_at(statement: str, monkeypatch: pytest.MonkeyPatch, conn: aiosqlite.Connection) -> None:
    """The stop arrives while ``statement`` is queued: its task is cancelled as it asks."""
    execute = conn.execute

    def cancelling(sql: str, *args: Any) -> Any:
        if sql == statement:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
        return execute(sql, *args)

    monkeypatch.setattr(conn, "execute", cancelling)


async def write_in_a_transaction(conn: aiosqlite.Connection) -> None:
    async with transaction(conn):
        await conn.execute("INSERT INTO t VALUES (1)")


async def rows_after_a_reopen(conn: aiosqlite.Connection, path: Path) -> list[int]:
    """Written after the cancel (what the shutdown path writes), closed, read back."""
    await conn.execute("INSERT INTO t VALUES (2)")
    await conn.close()
    async with aiosqlite.connect(path) as reopened:
        rows = await reopened.execute_fetchall("SELECT x FROM t ORDER BY x")
    return [row[0] for row in rows]


@pytest.mark.parametrize(("cancelled_at", "committed"), [("BEGIN IMMEDIATE", []), ("COMMIT", [1])])
async def test_a_cancel_at_begin_or_commit_leaves_no_transaction_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cancelled_at: str, committed: list[int]
) -> None:
    path = tmp_path / "easel.sqlite3"
    conn = await connect(path)
    await conn.execute("CREATE TABLE t (x INTEGER)")
    cancel_at(cancelled_at, monkeypatch, conn)
    writing = asyncio.create_task(write_in_a_transaction(conn))
    with pytest.raises(asyncio.CancelledError):
        await writing  # was OperationalError "cannot rollback" for a cancel at COMMIT
    monkeypatch.undo()
    assert not conn.in_transaction  # was left open by a cancel at BEGIN
    assert await rows_after_a_reopen(conn, path) == [*committed, 2]


async def test_a_second_cancel_at_begin_still_leaves_no_transaction_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "easel.sqlite3"
    conn = await connect(path)
    await conn.execute("CREATE TABLE t (x INTEGER)")
    # A statement ahead in aiosqlite's queue holds its thread, so BEGIN stays queued for both
    # cancels: the stop's, and one more while the first is handled (a timeout, a second stop).
    release = threading.Event()
    await conn.create_function("held", 0, lambda: release.wait(10))
    holding = asyncio.create_task(conn.execute("SELECT held()"))
    cancel_at("BEGIN IMMEDIATE", monkeypatch, conn)
    writing = asyncio.create_task(write_in_a_transaction(conn))
    for _ in range(5):  # the first cancel is handled (the worker thread is still held)
        await asyncio.sleep(0)
    assert not writing.done()
    writing.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await writing
    monkeypatch.undo()
    await holding
    assert not conn.in_transaction  # BEGIN landed after the check and stayed open
    assert await rows_after_a_reopen(conn, path) == [2]  # was []: rolled back at close


async def test_a_cancel_wins_over_the_failure_of_the_statement_it_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = await connect(tmp_path / "easel.sqlite3")
    await conn.execute("CREATE TABLE t (x INTEGER)")
    # Queued ahead, outside ``transaction``: the BEGIN IMMEDIATE after it fails.
    opening = asyncio.create_task(conn.execute("BEGIN"))
    cancel_at("BEGIN IMMEDIATE", monkeypatch, conn)
    writing = asyncio.create_task(write_in_a_transaction(conn))
    with pytest.raises(asyncio.CancelledError):  # was OperationalError: a stop's traceback
        await writing
    monkeypatch.undo()
    await opening
    await conn.close()
