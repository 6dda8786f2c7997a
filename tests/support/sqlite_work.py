"""The work SQLite does for a call, in its virtual machine's instructions: a test bounds the
rows a statement reads by how that work grows with the data, never by a time (the machine
running the suite may be loaded)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import aiosqlite

T = TypeVar("T")


async def instructions_of(
    conn: aiosqlite.Connection, call: Awaitable[T], every: int = 10
) -> tuple[int, T]:
    """The instructions (in ``every``s) ``conn`` runs while ``call`` is awaited, and what it
    returned."""
    raw = conn._conn  # the sqlite3 connection: its progress handler counts its work
    counted = 0

    def count() -> int:
        nonlocal counted
        counted += 1
        return 0  # go on

    await conn._execute(raw.set_progress_handler, count, every)
    try:
        result = await call
    finally:
        await conn._execute(raw.set_progress_handler, None, 0)
    return counted, result
