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


_UNFINISHED_OF_SERVER = "FROM jobs WHERE guild_id = ? AND status IN ('queued', 'running')"


async def unfinished_jobs(
    conn: aiosqlite.Connection, guild_id: int, job_ids: Collection[str]
) -> list[UnfinishedJob]:
    """Those of ``job_ids`` (one JSON parameter, any number) that are the server's and
    unfinished, in no particular order."""
    async with conn.execute(
        "SELECT id, kind, user_id, channel_id, status, created_at,"
        " CASE WHEN private THEN NULL ELSE json_extract(request_json, '$.prompt') END"
        f" {_UNFINISHED_OF_SERVER} AND id IN (SELECT value FROM json_each(?))",
        (guild_id, json.dumps(sorted(job_ids))),
    ) as cursor:
        return [UnfinishedJob(*row) for row in await cursor.fetchall()]


async def unfinished_count(conn: aiosqlite.Connection, guild_id: int) -> int:
    async with conn.execute(f"SELECT COUNT(*) {_UNFINISHED_OF_SERVER}", (guild_id,)) as cursor:
        row = await cursor.fetchone()
    return 0 if row is None else int(row[0])


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


# Up to this many of a server's done jobs made in the gallery's channels are read whole
# (``jobs_shown_channels``) and sorted; more are found walking the server's newest
# (``jobs_shown_newest``), which, for channels holding few of its jobs, walked all of them
# (31 ms at 80,000 jobs). The sorted read's order is ``+finished_at``: no index gives it, so
# the planner takes the channels' (SQLite plans without statistics: Easel runs no ANALYZE);
# naming the index (INDEXED BY) would fail wherever it is missing.
_GALLERY_SORTED_WHOLE = 1_000


async def recent_pictures(
    conn: aiosqlite.Connection, guild_id: int, channel_ids: Collection[int], limit: int
) -> list[GalleryPicture]:
    """The newest shown pictures made in ``channel_ids`` (one JSON parameter, any number)."""
    channels = json.dumps(sorted(channel_ids))
    async with conn.execute(
        "SELECT COUNT(*) FROM (SELECT 1 FROM jobs"
        " WHERE guild_id = ? AND status = 'done' AND NOT private"
        " AND channel_id IN (SELECT value FROM json_each(?)) LIMIT ?)",
        (guild_id, channels, _GALLERY_SORTED_WHOLE + 1),
    ) as cursor:
        row = await cursor.fetchone()
    walk = row is not None and row[0] > _GALLERY_SORTED_WHOLE
    async with conn.execute(
        "SELECT jobs.id, images.idx, jobs.user_id, jobs.kind,"
        " COALESCE(json_extract(jobs.request_json, '$.prompt'), ''), jobs.finished_at,"
        " jobs.spoiler"
        f"{_SHOWN_PICTURES} AND jobs.channel_id IN (SELECT value FROM json_each(?))"
        f" ORDER BY {'' if walk else '+'}jobs.finished_at DESC, jobs.rowid DESC, images.idx"
        " LIMIT ?",
        (guild_id, channels, limit),
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
