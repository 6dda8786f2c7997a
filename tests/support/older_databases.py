"""Databases as tests need them: as an older Easel left one (migrated up to some schema
version only), and SQLite's own error for one whose disk is full."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from db.database import load_migrations


def database_at(path: Path, version: int) -> Path:
    """Create the database at ``path`` with the first ``version`` migrations applied."""
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        for migration in load_migrations()[:version]:
            raw.executescript(
                f"BEGIN;\n{migration.sql}\nPRAGMA user_version = {migration.version};\nCOMMIT;"
            )
    finally:
        raw.close()
    return path


def sqlite_full() -> sqlite3.OperationalError:
    """SQLite's own "database or disk is full" (a database allowed two pages)."""
    with sqlite3.connect(":memory:") as tiny:
        tiny.execute("PRAGMA max_page_count = 2")
        try:
            tiny.executescript("CREATE TABLE a (x); CREATE TABLE b (x); CREATE TABLE c (x)")
        except sqlite3.OperationalError as error:
            return error
    raise AssertionError("two pages held three tables")
