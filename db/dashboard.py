"""What the admin dashboard reads about one server: its unfinished jobs, its latest pictures
(never a private job's, only from channels the viewing admin may read) and each member's
spending today. Every query names the server."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass

import aiosqlite

from db.quotas import COUNTED_RESERVATIONS


@dataclass(frozen=True)
class UnfinishedJob:
    job_id: str
    kind: str
    user_id: int
    channel_id: int | None
    status: str  # queued or running
    created_at: float
    prompt: str | None  # None for a private job


@dataclass(frozen=True)
class GalleryPicture:
    job_id: str
    idx: int
    user_id: int
    kind: str
    prompt: str
    finished_at: float
    spoiler: bool


@dataclass(frozen=True)
class MemberUsage:
    user_id: int  # 0: members who used /forget-me
    images: int
    gpu_seconds: float


async def unfinished_jobs(conn: aiosqlite.Connection, guild_id: int) -> list[UnfinishedJob]:
    async with conn.execute(
        "SELECT id, kind, user_id, channel_id, status, created_at,"
        " CASE WHEN private THEN NULL ELSE json_extract(request_json, '$.prompt') END"
        " FROM jobs WHERE guild_id = ? AND status IN ('queued', 'running')"
        " ORDER BY created_at, rowid",
        (guild_id,),
    ) as cursor:
        return [UnfinishedJob(*row) for row in await cursor.fetchall()]


# The pictures a dashboard may show: done, in this server, not private, not withdrawn by a
# moderator (not shown anywhere again, to its admins neither), not made in an age-restricted
# channel (nobody age-gates a web page; channels that are age-restricted now, the caller).
_SHOWN_PICTURES = (
    " FROM jobs JOIN images ON images.job_id = jobs.id"
    " WHERE jobs.guild_id = ? AND jobs.status = 'done' AND NOT jobs.private"
    " AND jobs.withdrawn_at IS NULL AND NOT jobs.age_restricted"
)


async def picture_channels(conn: aiosqlite.Connection, guild_id: int) -> set[int]:
    """The channels the server's shown pictures were made in (the gallery's candidates; a
    done job without pictures adds one in vain, and keeps the query on one index)."""
    async with conn.execute(
        "SELECT DISTINCT channel_id FROM jobs WHERE guild_id = ? AND status = 'done'"
        " AND NOT private AND channel_id IS NOT NULL",
        (guild_id,),
    ) as cursor:
        return {int(channel_id) for (channel_id,) in await cursor.fetchall()}


async def recent_pictures(
    conn: aiosqlite.Connection, guild_id: int, channel_ids: Collection[int], limit: int
) -> list[GalleryPicture]:
    """The newest shown pictures made in ``channel_ids`` (one JSON parameter, any number)."""
    async with conn.execute(
        "SELECT jobs.id, images.idx, jobs.user_id, jobs.kind,"
        " COALESCE(json_extract(jobs.request_json, '$.prompt'), ''), jobs.finished_at,"
        " jobs.spoiler"
        f"{_SHOWN_PICTURES} AND jobs.channel_id IN (SELECT value FROM json_each(?))"
        " ORDER BY jobs.finished_at DESC, jobs.rowid DESC, images.idx LIMIT ?",
        (guild_id, json.dumps(sorted(channel_ids)), limit),
    ) as cursor:
        return [
            GalleryPicture(job_id, idx, user_id, kind, prompt, finished_at, bool(spoiler))
            for job_id, idx, user_id, kind, prompt, finished_at, spoiler in await cursor.fetchall()
        ]


async def shown_picture(
    conn: aiosqlite.Connection, guild_id: int, job_id: str, idx: int
) -> tuple[str, int | None] | None:
    """The stored file of a picture the dashboard may show and the channel it was made in (for
    the admin's reading rights), else None."""
    async with conn.execute(
        f"SELECT images.path, jobs.channel_id{_SHOWN_PICTURES} AND jobs.id = ? AND images.idx = ?",
        (guild_id, job_id, idx),
    ) as cursor:
        row = await cursor.fetchone()
    return None if row is None else (str(row[0]), row[1])


async def usage_by_member(
    conn: aiosqlite.Connection, guild_id: int, since: float
) -> list[MemberUsage]:
    """Each member's spending in the server on jobs reserved since ``since``, as the quota
    counts it (committed costs, else outstanding reservations; refunds count nothing)."""
    async with conn.execute(
        "SELECT r.user_id, SUM(COALESCE(c.images, r.images)),"
        f" SUM(COALESCE(c.gpu_seconds, r.gpu_seconds)) {COUNTED_RESERVATIONS}"
        " AND r.guild_id = ? AND r.at >= ?"
        " GROUP BY r.user_id ORDER BY 2 DESC, 3 DESC",
        (guild_id, since),
    ) as cursor:
        return [MemberUsage(*row) for row in await cursor.fetchall()]
