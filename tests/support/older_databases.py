"""A database as an older Easel left it: migrated up to some schema version only."""

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
