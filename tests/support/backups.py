"""A backup of the database as the docs take it, a restore done by hand, and the -wal a crashed
bot leaves: real SQLite files on disk."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

# What SQLite keeps beside a database in WAL mode.
SIDE_FILES = ("-wal", "-shm")


def backed_up(database: Path, to: Path) -> Path:
    """``database`` copied to ``to`` with ``VACUUM INTO`` from a connection of its own, as the
    docs take a backup while the bot runs; ``to``."""
    to.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(database, timeout=60)) as raw:
        raw.execute("VACUUM INTO ?", (str(to),))
    return to


def put_back_by_hand(backup: Path, database: Path) -> None:
    """The restore the docs told before ``easel restore``: the -wal and -shm deleted, the
    backup copied over the database (the rest of the data folder, ``easel.run`` included,
    left as it is)."""
    for suffix in SIDE_FILES:
        database.with_name(f"{database.name}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, database)


# Writes to the database in WAL mode, then dies without a checkpoint: its -wal stays, full.
_DIES_WRITING = """
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA wal_autocheckpoint=0")
conn.execute("CREATE TABLE IF NOT EXISTS filler (x BLOB)")
for _ in range(300):
    conn.execute("INSERT INTO filler VALUES (randomblob(3000))")
conn.commit()
os._exit(0)
"""


def died_writing(database: Path) -> None:
    """A bot that crashed while writing ``database``: 300 rows of a table ``filler``
    committed to its -wal, left full, none in the database file itself."""
    subprocess.run([sys.executable, "-c", _DIES_WRITING, str(database)], check=True)
    assert database.with_name(f"{database.name}-wal").stat().st_size > 0


def left_with_a_stale_wal(database: Path, backup: Path) -> None:
    """A bot that crashed while writing ``database`` (its -wal left, full), and then the
    backup copied over it by hand with that -wal forgotten beside it."""
    died_writing(database)
    shutil.copyfile(backup, database)
