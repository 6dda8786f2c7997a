"""/forget-me tells a member when their deferred ledger rows lose their id (the end of their
quota periods): the 15-minute token sweep anonymises them, not only the 6-hourly full round
(AUD35 F2), and writes the log back, so no database file keeps the id (R_FX35 D2). The real
Retention loop on a real SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from pathlib import Path

import aiosqlite
import pytest

from bot.jobs import retention as retention_module
from bot.jobs.retention import Retention
from db import quotas
from db.database import connect

# Snowflake-sized: SQLite stores it as 8 big-endian bytes, found in a file as they are.
MEMBER = 987654321098765432
# Sweeps every 10 ms: on a loaded machine a few of them take this long at most.
NAMED_WAIT_S = 10.0


async def named_rows(conn: aiosqlite.Connection) -> int:
    query = "SELECT COUNT(*) FROM quota_ledger WHERE user_id = ?"
    (count,) = next(iter(await conn.execute_fetchall(query, (MEMBER,))))
    return int(count)


def files_naming_the_member(database: Path) -> list[str]:
    """Those of the database's files (its log included) that hold the member's id."""
    stored = struct.pack(">q", MEMBER)
    files = (path for path in database.parent.iterdir() if path.name.startswith(database.name))
    return sorted(path.name for path in files if stored in path.read_bytes())


async def test_deferred_rows_lose_their_id_at_the_next_sweep_past_the_time_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "easel.sqlite3"
    conn = await connect(database)
    wall = [time.time()]
    retention = Retention(conn, tmp_path / "images", tmp_path / "inputs", 30, lambda: wall[0])
    try:
        await quotas.reserve(conn, "job0000000000001", MEMBER, 1, 1, 2.0, wall[0])
        told_at = wall[0] + 60
        await quotas.defer_anonymising(conn, MEMBER, told_at)
        await retention.prune()  # the start's full round: the next is 6 hours on
        monkeypatch.setattr(retention_module, "TOKEN_SWEEP_S", 0.01)
        sweeps = asyncio.create_task(retention.run())
        try:
            assert await named_rows(conn) == 1  # before the time told, it keeps its id
            assert files_naming_the_member(database) == ["easel.sqlite3-wal"]
            wall[0] = told_at + 1
            async with asyncio.timeout(NAMED_WAIT_S):
                # Polled: nothing to await. Then no file names the member: nor the log.
                while await named_rows(conn) or files_naming_the_member(database):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        finally:
            sweeps.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeps
    finally:
        await conn.close()
