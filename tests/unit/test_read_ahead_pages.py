"""The start's read-ahead reads in pages, each its own query resuming after the last row: a
member's read sent meanwhile waits on one page, not on the whole read (docs/performance.md).
The pages together give each row once, a member's guilds split across pages included."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from bot.policy.member_settings import UserSettings
from db import quotas, user_settings
from db.database import connect, migrate


@pytest.fixture
async def conn(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    connection = await connect(tmp_path / "easel.sqlite3")
    await migrate(connection)
    try:
        yield connection
    finally:
        await connection.close()


async def test_spenders_come_in_pages_each_once_direct_messages_included(
    conn: aiosqlite.Connection,
) -> None:
    spent = [(1, None), (1, 5), (1, 7), (2, None), (3, 4), (3, 4)]
    rows = [(f"j{i}", user, guild, 100.0) for i, (user, guild) in enumerate(spent)]
    rows.append(("old", 9, 9, 10.0))  # before the periods read: not a spender
    await conn.executemany(
        "INSERT INTO quota_ledger (job_id, kind, user_id, guild_id, images, gpu_seconds, at)"
        " VALUES (?, 'reserve', ?, ?, 1, 1.0, ?)",
        rows,
    )
    pages = [page async for page in quotas.spenders_since(conn, 50.0, 2)]
    assert pages == [[(1, None), (1, 5)], [(1, 7), (2, None)], [(3, 4)]]


async def test_members_with_settings_come_in_pages_each_once(
    conn: aiosqlite.Connection,
) -> None:
    for user_id in (5, 3, 8, 1):
        await user_settings.put(conn, user_id, UserSettings(steps=20), 0.0)
    pages = [page async for page in user_settings.members_with_settings(conn, 2)]
    assert pages == [[1, 3], [5, 8]]
