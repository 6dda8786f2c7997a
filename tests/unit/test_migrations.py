import sqlite3
from pathlib import Path

import pytest

from db.database import connect, load_migrations, schema_version


def test_migrations_are_numbered_without_gaps() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))


async def test_fresh_database_reaches_latest_version_in_wal(tmp_path: Path) -> None:
    conn = await connect(tmp_path / "easel.sqlite3")
    try:
        assert await schema_version(conn) == len(load_migrations())
        async with conn.execute("PRAGMA journal_mode") as cursor:
            row = await cursor.fetchone()
        assert row is not None and row[0] == "wal"
        async with conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'") as cursor:
            tables = {row[0] for row in await cursor.fetchall()}
        assert {"jobs", "images"} <= tables
    finally:
        await conn.close()


async def test_reopening_applies_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "easel.sqlite3"
    conn = await connect(path)
    await conn.execute(
        "INSERT INTO jobs (id, kind, user_id, request_json, created_at) "
        "VALUES ('a', 'x', 1, '{}', 0)"
    )
    await conn.close()
    conn = await connect(path)
    try:
        async with conn.execute("SELECT count(*) FROM jobs") as cursor:
            row = await cursor.fetchone()
        assert row is not None and row[0] == 1
    finally:
        await conn.close()


async def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "easel.sqlite3"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {len(load_migrations()) + 5}")
    with pytest.raises(RuntimeError, match="upgrade Easel"):
        await connect(path)
