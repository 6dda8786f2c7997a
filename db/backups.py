"""A backup of the database copied in for ``easel restore``: read through SQLite (so a -wal
beside the backup counts), written to a new file, and checked whole before it replaces the
database."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from urllib.parse import quote

from db.database import SchemaTooNew, pending_migrations


class BackupUnusable(Exception):
    """The backup cannot be read, is damaged, or is no Easel database this Easel can use."""


def copy_checked(backup: Path, to: Path) -> int:
    """Copy the database ``backup`` to the new file ``to``, check the copy
    (``PRAGMA integrity_check``) and return its schema version; ``BackupUnusable`` says why
    not (``to`` is then left for the caller to remove)."""
    try:
        source = sqlite3.connect(f"file:{quote(str(backup.resolve()))}?mode=ro", uri=True)
        with contextlib.closing(source):
            target = sqlite3.connect(to)
            with contextlib.closing(target):
                source.backup(target)
        copy = sqlite3.connect(to)
        with contextlib.closing(copy):
            problems = [str(row[0]) for row in copy.execute("PRAGMA integrity_check(5)")]
            version = int(copy.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as error:
        raise BackupUnusable(f"it cannot be read as an SQLite database ({error})") from None
    if problems != ["ok"]:
        raise BackupUnusable(f"it is damaged (integrity check: {'; '.join(problems)})")
    if version == 0:
        raise BackupUnusable("it is no Easel database (schema version 0: no Easel table)")
    try:
        pending_migrations(version)
    except SchemaTooNew as error:
        raise BackupUnusable(str(error)) from None
    return version
