"""Refusals sent to members in a server (table ``refusals`` from ``0010_refusals.sql``), for its
admins' dashboard: recorded after the member was answered, erased by /forget-me, pruned by
retention. No prompt is stored."""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from db.database import write


@dataclass(frozen=True)
class NewRefusal:
    guild_id: int
    channel_id: int | None
    user_id: int
    reason: str
    sentence: str | None  # what the member was told; None when they keep results private
    created_at: float


@dataclass(frozen=True)
class StoredRefusal:
    user_id: int
    channel_id: int | None
    reason: str
    sentence: str | None
    created_at: float


async def record(conn: aiosqlite.Connection, refusal: NewRefusal) -> None:
    await write(
        conn,
        "INSERT INTO refusals (guild_id, channel_id, user_id, reason, sentence, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            refusal.guild_id,
            refusal.channel_id,
            refusal.user_id,
            refusal.reason,
            refusal.sentence,
            refusal.created_at,
        ),
    )


async def latest(conn: aiosqlite.Connection, guild_id: int, limit: int) -> list[StoredRefusal]:
    """The server's newest refusals, newest first."""
    async with conn.execute(
        "SELECT user_id, channel_id, reason, sentence, created_at FROM refusals"
        " WHERE guild_id = ? ORDER BY created_at DESC, id DESC LIMIT ?",
        (guild_id, limit),
    ) as cursor:
        return [StoredRefusal(*row) for row in await cursor.fetchall()]


async def counts_by_reason(
    conn: aiosqlite.Connection, guild_id: int, since: float
) -> dict[str, int]:
    """How many refusals of each reason the server sent since ``since``, most first."""
    async with conn.execute(
        "SELECT reason, COUNT(*) FROM refusals WHERE guild_id = ? AND created_at >= ?"
        " GROUP BY reason ORDER BY 2 DESC, 1",
        (guild_id, since),
    ) as cursor:
        return {str(reason): int(count) for reason, count in await cursor.fetchall()}


async def delete_member_refusals(
    conn: aiosqlite.Connection, user_id: int, dated_up_to: float | None = None
) -> int:
    """/forget-me (inside its transaction): every refusal sent to the member, in any server,
    up to ``dated_up_to`` (None: whenever)."""
    cursor = await conn.execute(
        "DELETE FROM refusals WHERE user_id = ? AND (? IS NULL OR created_at <= ?)",
        (user_id, dated_up_to, dated_up_to),
    )
    return cursor.rowcount


async def prune(conn: aiosqlite.Connection, before: float) -> int:
    """Retention: refusals older than ``before``; returns how many went."""
    cursor = await write(conn, "DELETE FROM refusals WHERE created_at < ?", (before,))
    return cursor.rowcount
