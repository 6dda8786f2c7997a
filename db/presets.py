"""Named /imagine presets of a member or a server (table ``presets`` from ``0008_presets.sql``).

A preset's values are a JSON object (the setting names of ``bot.presets.Preset``); names are
compared casefolded, shown as they were saved."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiosqlite

from db.database import write


class Scope(StrEnum):
    MEMBER = "member"  # owner: the member's user id
    SERVER = "server"  # owner: the guild id


@dataclass(frozen=True)
class StoredPreset:
    name: str
    values: dict[str, Any]


def _key(name: str) -> str:
    return name.strip().casefold()


async def find(
    conn: aiosqlite.Connection, scope: Scope, owner_id: int, name: str
) -> StoredPreset | None:
    async with conn.execute(
        "SELECT name, values_json FROM presets WHERE scope = ? AND owner_id = ? AND name_key = ?",
        (scope.value, owner_id, _key(name)),
    ) as cursor:
        row = await cursor.fetchone()
    return None if row is None else StoredPreset(str(row[0]), json.loads(row[1]))


async def list_all(conn: aiosqlite.Connection, scope: Scope, owner_id: int) -> list[StoredPreset]:
    async with conn.execute(
        "SELECT name, values_json FROM presets WHERE scope = ? AND owner_id = ? ORDER BY name_key",
        (scope.value, owner_id),
    ) as cursor:
        rows = await cursor.fetchall()
    return [StoredPreset(str(row[0]), json.loads(row[1])) for row in rows]


async def count(conn: aiosqlite.Connection, scope: Scope, owner_id: int) -> int:
    async with conn.execute(
        "SELECT COUNT(*) FROM presets WHERE scope = ? AND owner_id = ?", (scope.value, owner_id)
    ) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def put(
    conn: aiosqlite.Connection,
    scope: Scope,
    owner_id: int,
    preset: StoredPreset,
    now: float,
) -> None:
    """Save the preset, replacing the owner's preset of the same (casefolded) name."""
    await conn.execute(
        "INSERT INTO presets (scope, owner_id, name_key, name, values_json, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (scope, owner_id, name_key) DO UPDATE SET name = excluded.name,"
        " values_json = excluded.values_json, updated_at = excluded.updated_at",
        (
            scope.value,
            owner_id,
            _key(preset.name),
            preset.name.strip(),
            json.dumps(preset.values, sort_keys=True),
            now,
        ),
    )


async def delete(conn: aiosqlite.Connection, scope: Scope, owner_id: int, name: str) -> None:
    await write(
        conn,
        "DELETE FROM presets WHERE scope = ? AND owner_id = ? AND name_key = ?",
        (scope.value, owner_id, _key(name)),
    )


async def delete_member_presets(
    conn: aiosqlite.Connection, user_id: int, dated_up_to: float | None = None
) -> int:
    """/forget-me: the member's own presets (a server's presets belong to the server), those
    saved up to ``dated_up_to`` (None: whenever)."""
    cursor = await conn.execute(
        "DELETE FROM presets WHERE scope = 'member' AND owner_id = ?"
        " AND (? IS NULL OR updated_at <= ?)",
        (user_id, dated_up_to, dated_up_to),
    )
    return cursor.rowcount


async def audit_server_change(
    conn: aiosqlite.Connection,
    guild_id: int,
    admin_id: int,
    setting: str,
    old: StoredPreset | None,
    new: StoredPreset | None,
    now: float,
) -> None:
    """A server preset saved or deleted, in the server's settings audit (``0003``) as
    ``setting`` (``bot.presets.audited_setting``)."""

    def shown(preset: StoredPreset | None) -> str | None:
        return None if preset is None else json.dumps(preset.values, sort_keys=True)

    await conn.execute(
        "INSERT INTO settings_audit (guild_id, user_id, setting, old_value, new_value, at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (guild_id, admin_id, setting, shown(old), shown(new), now),
    )
