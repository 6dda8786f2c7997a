"""Per-guild policy set by admins, and the audit trail of every change (``0003``)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import aiosqlite

from db.database import outside_transactions, transaction, write

# What a guild has before its admins change anything: every channel, model and add-on, no banned
# words, no default model (Easel's), and this NSFW policy.
DEFAULT_NSFW_POLICY = "allow"


class GuildList(StrEnum):
    ALLOWED_CHANNEL = "allowed_channel"
    ALLOWED_MODEL = "allowed_model"
    PRIORITY_ROLE = "priority_role"
    BANNED_WORD = "banned_word"
    # Add-ons installed for the bot that a server allows (``bot.policy.addons``); 0018.
    ALLOWED_LORA = "allowed_lora"
    ALLOWED_EMBEDDING = "allowed_embedding"
    ALLOWED_VAE = "allowed_vae"
    ALLOWED_UPSCALER = "allowed_upscaler"
    ALLOWED_CONTROLNET = "allowed_controlnet"


@dataclass(frozen=True)
class GuildSettings:
    guild_id: int
    default_model: str | None
    nsfw_policy: str
    lists: dict[GuildList, frozenset[str]]

    def entries(self, which: GuildList) -> frozenset[str]:
        return self.lists.get(which, frozenset())


@dataclass(frozen=True)
class AuditEntry:
    user_id: int
    setting: str
    old_value: str | None
    new_value: str | None
    at: float


async def get(conn: aiosqlite.Connection, guild_id: int) -> GuildSettings:
    # One trip to the database thread per query (execute, fetch and close would be three):
    # read before /imagine is acknowledged, once for each guild.
    rows = list(
        await conn.execute_fetchall(
            "SELECT default_model, nsfw_policy FROM guild_settings WHERE guild_id = ?",
            (guild_id,),
        )
    )
    default_model, nsfw_policy = (rows[0][0], rows[0][1]) if rows else (None, DEFAULT_NSFW_POLICY)
    lists: dict[GuildList, set[str]] = {}
    for list_name, value in await conn.execute_fetchall(
        "SELECT list, value FROM guild_list_entries WHERE guild_id = ?", (guild_id,)
    ):
        lists.setdefault(GuildList(list_name), set()).add(value)
    return GuildSettings(
        guild_id, default_model, nsfw_policy, {k: frozenset(v) for k, v in lists.items()}
    )


async def _audit(
    conn: aiosqlite.Connection,
    guild_id: int,
    user_id: int,
    setting: str,
    old: str | None,
    new: str | None,
    now: float,
) -> None:
    await write(
        conn,
        "INSERT INTO settings_audit (guild_id, user_id, setting, old_value, new_value, at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (guild_id, user_id, setting, old, new, now),
    )


async def set_value(
    conn: aiosqlite.Connection,
    guild_id: int,
    user_id: int,
    setting: str,
    value: str | None,
    now: float,
) -> None:
    """Set ``default_model`` or ``nsfw_policy`` and audit it, in one transaction."""
    if setting not in {"default_model", "nsfw_policy"}:
        raise ValueError(f"unknown guild setting {setting!r}; known: default_model, nsfw_policy")
    async with transaction(conn):
        old = await get(conn, guild_id)
        old_value = old.default_model if setting == "default_model" else old.nsfw_policy
        await conn.execute(
            "INSERT INTO guild_settings (guild_id, updated_at) VALUES (?, ?)"
            " ON CONFLICT (guild_id) DO NOTHING",
            (guild_id, now),
        )
        # ``setting`` is one of the two column names checked above.
        await conn.execute(
            f"UPDATE guild_settings SET {setting} = ?, updated_at = ? WHERE guild_id = ?",
            (value, now, guild_id),
        )
        await _audit(conn, guild_id, user_id, setting, old_value, value, now)


class ListFull(Exception):
    """An entry not added: its list holds as many as it may (``change_list``'s ``at_most``)."""


async def change_list(
    conn: aiosqlite.Connection,
    guild_id: int,
    user_id: int,
    which: GuildList,
    value: str,
    *,
    add: bool,
    now: float,
    at_most: int | None = None,
) -> bool:
    """Add or remove one entry and audit it; False (nothing audited) when nothing changed.
    ``at_most``: the entries ``which`` may hold (None: any number); an addition of an entry
    not held past it raises ``ListFull``, nothing written (counted in the transaction: two
    admins' additions at once cannot both pass). An entry held is no addition, however many
    a list holds from before the limit."""
    async with transaction(conn):
        if add and at_most is not None:
            rows = await conn.execute_fetchall(
                "SELECT COUNT(*), COALESCE(MAX(value = ?), 0) FROM guild_list_entries"
                " WHERE guild_id = ? AND list = ?",
                (value, guild_id, which.value),
            )
            count, held = next(iter(rows))
            if count >= at_most and not held:
                raise ListFull
        if add:
            cursor = await conn.execute(
                "INSERT OR IGNORE INTO guild_list_entries (guild_id, list, value) VALUES (?, ?, ?)",
                (guild_id, which.value, value),
            )
        else:
            cursor = await conn.execute(
                "DELETE FROM guild_list_entries WHERE guild_id = ? AND list = ? AND value = ?",
                (guild_id, which.value, value),
            )
        changed = cursor.rowcount == 1
        if changed:
            old, new = (None, value) if add else (value, None)
            await _audit(conn, guild_id, user_id, which.value, old, new, now)
    return changed


async def record_change(
    conn: aiosqlite.Connection,
    guild_id: int,
    user_id: int,
    setting: str,
    new_value: str | None,
    now: float,
) -> None:
    """Audit a change stored elsewhere (for instance quota limits)."""
    await _audit(conn, guild_id, user_id, setting, None, new_value, now)


@dataclass(frozen=True)
class AuditPruned:
    """``prune_audit``'s answer: how many rows went, and the last row id it read, for the
    next round."""

    rows: int
    read_to: int


async def prune_audit(conn: aiosqlite.Connection, keep: int, read_to: int = 0) -> AuditPruned:
    """Delete each server's audit rows but its latest ``keep`` (by time, as ``audit_log``
    reads them), of the servers with a row after id ``read_to``: 0 (a start) reads every
    server; the last round's ``read_to`` only those with a row since (ids only grow,
    AUTOINCREMENT, and the others were within ``keep`` then): found on the ids since, each
    server's count read no further than ``keep`` rows of its index, not on a walk of the
    whole table every round. One statement per server over the limit, so other statements
    run between them."""
    # As committed: a row of another coroutine's transaction, rolled back, leaves its id to
    # the next row.
    async with outside_transactions(conn):
        rows = await conn.execute_fetchall("SELECT MAX(id) FROM settings_audit")
        last = next(iter(rows))[0] or 0
        over = await conn.execute_fetchall(
            "SELECT new.guild_id FROM (SELECT DISTINCT guild_id FROM settings_audit"
            " WHERE id > ? AND id <= ?) AS new WHERE EXISTS (SELECT 1 FROM settings_audit"
            " WHERE guild_id = new.guild_id LIMIT 1 OFFSET ?)",
            (read_to, last, keep),
        )
    pruned = 0
    for (guild_id,) in over:
        cursor = await write(
            conn,
            "DELETE FROM settings_audit WHERE guild_id = ? AND id NOT IN (SELECT id FROM"
            " settings_audit WHERE guild_id = ? ORDER BY at DESC, id DESC LIMIT ?)",
            (guild_id, guild_id, keep),
        )
        pruned += cursor.rowcount
    return AuditPruned(pruned, max(last, read_to))


async def audit_log(conn: aiosqlite.Connection, guild_id: int, limit: int) -> list[AuditEntry]:
    async with conn.execute(
        "SELECT user_id, setting, old_value, new_value, at FROM settings_audit"
        " WHERE guild_id = ? ORDER BY at DESC, id DESC LIMIT ?",
        (guild_id, limit),
    ) as cursor:
        return [AuditEntry(*row) for row in await cursor.fetchall()]
