"""Personal /imagine defaults (table ``user_settings`` from ``0003_settings_and_audit.sql``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, fields

import aiosqlite


@dataclass(frozen=True)
class UserSettings:
    """A member's defaults; None means "no preference"."""

    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    size: str | None = None
    negative: str | None = None
    private_results: bool = False
    results_by_dm: bool = False  # a copy of each result in the member's direct messages
    clip_skip: int | None = None  # 0008_presets.sql


_COLUMNS = tuple(field.name for field in fields(UserSettings))


def _stored(value: object) -> object:
    """A setting as SQLite stores it (flags as 0/1)."""
    return int(value) if isinstance(value, bool) else value


async def get(conn: aiosqlite.Connection, user_id: int) -> UserSettings:
    # One trip to the database thread (execute, fetch and close would be three): read before
    # /imagine is acknowledged, once for each member new to the bot.
    rows = list(
        await conn.execute_fetchall(
            f"SELECT {', '.join(_COLUMNS)} FROM user_settings WHERE user_id = ?", (user_id,)
        )
    )
    if not rows:
        return UserSettings()
    [row] = rows
    values = dict(zip(_COLUMNS, row, strict=True))
    values["private_results"] = bool(values["private_results"])
    values["results_by_dm"] = bool(values["results_by_dm"])
    return UserSettings(**values)


async def members_with_settings(conn: aiosqlite.Connection, page: int) -> AsyncIterator[list[int]]:
    """Every member who has saved settings (the others' are the defaults), in pages of at
    most ``page``, each its own query resuming after the last member: another read waits on
    one page, not on all of them (aiosqlite runs one statement at a time per connection)."""
    after = -1
    while True:
        rows = await conn.execute_fetchall(
            "SELECT user_id FROM user_settings WHERE user_id > ? ORDER BY user_id LIMIT ?",
            (after, page),
        )
        found = [int(row[0]) for row in rows]
        if found:
            yield found
        if len(found) < page:
            return
        after = found[-1]


async def put(conn: aiosqlite.Connection, user_id: int, settings: UserSettings, now: float) -> None:
    updates = ", ".join(f"{column} = excluded.{column}" for column in _COLUMNS)
    await conn.execute(
        f"INSERT INTO user_settings (user_id, {', '.join(_COLUMNS)}, updated_at)"
        f" VALUES (?, {', '.join('?' for _ in _COLUMNS)}, ?)"
        f" ON CONFLICT (user_id) DO UPDATE SET {updates}, updated_at = excluded.updated_at",
        (user_id, *(_stored(getattr(settings, column)) for column in _COLUMNS), now),
    )
