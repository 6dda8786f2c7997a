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
_SHOWN_JOB = (
    " AND {job}.status = 'done' AND NOT {job}.private"
    " AND {job}.withdrawn_at IS NULL AND NOT {job}.age_restricted"
)
_SHOWN_PICTURES = (
    " FROM jobs JOIN images ON images.job_id = jobs.id WHERE jobs.guild_id = :guild"
    + _SHOWN_JOB.format(job="jobs")
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
# (``jobs_shown_channels``) and sorted. The sorted read's order is ``+finished_at``: no index
# gives it, so the planner takes the channels' (SQLite plans without statistics: Easel runs no
# ANALYZE); naming the index (INDEXED BY) would fail wherever it is missing.
_GALLERY_SORTED_WHOLE = 1_000
# More are first looked for among this many of the server's newest shown jobs
# (``jobs_shown_newest``): where an admin may read most channels, the page is there. Else
# each chosen channel gives its newest (``jobs_shown_channels``, a page's worth each), so the
# work grows with the channels, never with the server's history (a walk of its newest index
# cost 23 ms at 80,000 jobs for channels holding only old ones).
_GALLERY_NEWEST_WINDOW = 500

_GALLERY_COLUMNS = (
    "SELECT jobs.id, images.idx, jobs.user_id, jobs.kind,"
    " COALESCE(json_extract(jobs.request_json, '$.prompt'), ''), jobs.finished_at,"
    " jobs.spoiler"
)
_GALLERY_ORDER = " ORDER BY {end} DESC, jobs.rowid DESC, images.idx LIMIT :limit"
_CHOSEN_CHANNELS = "(SELECT DISTINCT value FROM json_each(:channels))"
# At or after the end of the server's ``window``-th newest shown job (all, if fewer).
_IN_WINDOW = (
    " AND jobs.finished_at >= COALESCE((SELECT finished_at FROM jobs"
    " WHERE guild_id = :guild AND status = 'done' AND NOT private"
    " ORDER BY finished_at DESC LIMIT 1 OFFSET :window), -1e308)"
)


async def _gallery(
    conn: aiosqlite.Connection, sql: str, parameters: dict[str, object]
) -> list[GalleryPicture]:
    async with conn.execute(sql, parameters) as cursor:
        return [
            GalleryPicture(job_id, idx, user_id, kind, prompt, finished_at, bool(spoiler))
            for job_id, idx, user_id, kind, prompt, finished_at, spoiler in await cursor.fetchall()
        ]


async def recent_pictures(
    conn: aiosqlite.Connection, guild_id: int, channel_ids: Collection[int], limit: int
) -> list[GalleryPicture]:
    """The newest shown pictures made in ``channel_ids`` (one JSON parameter, any number)."""
    parameters: dict[str, object] = {
        "guild": guild_id,
        "channels": json.dumps(sorted(channel_ids)),
        "limit": limit,
        "whole": _GALLERY_SORTED_WHOLE + 1,
        "window": _GALLERY_NEWEST_WINDOW,
    }
    async with conn.execute(
        "SELECT COUNT(*) FROM (SELECT 1 FROM jobs"
        " WHERE guild_id = :guild AND status = 'done' AND NOT private"
        f" AND channel_id IN {_CHOSEN_CHANNELS} LIMIT :whole)",
        parameters,
    ) as cursor:
        row = await cursor.fetchone()
    if row is None or row[0] <= _GALLERY_SORTED_WHOLE:
        return await _gallery(
            conn,
            f"{_GALLERY_COLUMNS}{_SHOWN_PICTURES} AND jobs.channel_id IN {_CHOSEN_CHANNELS}"
            f"{_GALLERY_ORDER.format(end='+jobs.finished_at')}",
            parameters,
        )
    # Jobs older than the window's hold no picture newer than any it finds.
    newest = await _gallery(
        conn,
        f"{_GALLERY_COLUMNS}{_SHOWN_PICTURES} AND jobs.channel_id IN {_CHOSEN_CHANNELS}"
        f"{_IN_WINDOW}{_GALLERY_ORDER.format(end='jobs.finished_at')}",
        parameters,
    )
    if len(newest) == limit:
        return newest
    # The page's pictures are among those of each channel's ``limit`` newest jobs shown with a
    # picture; only the first ``limit`` of those jobs' prompts are read.
    return await _gallery(
        conn,
        f"{_GALLERY_COLUMNS} FROM (SELECT newest.rowid AS picked FROM {_CHOSEN_CHANNELS}"
        " AS chosen CROSS JOIN jobs AS newest ON newest.rowid IN (SELECT rowid FROM jobs AS job"
        " WHERE job.guild_id = :guild AND job.channel_id = chosen.value"
        f"{_SHOWN_JOB.format(job='job')}"
        " AND EXISTS (SELECT 1 FROM images WHERE images.job_id = job.id)"
        " ORDER BY job.finished_at DESC, job.rowid DESC LIMIT :limit)"
        " ORDER BY newest.finished_at DESC, newest.rowid DESC LIMIT :limit) AS top"
        " JOIN jobs ON jobs.rowid = top.picked JOIN images ON images.job_id = jobs.id"
        f"{_GALLERY_ORDER.format(end='jobs.finished_at')}",
        parameters,
    )


async def shown_picture(
    conn: aiosqlite.Connection, guild_id: int, job_id: str, idx: int
) -> tuple[str, int | None] | None:
    """The stored file of a picture the dashboard may show and the channel it was made in (for
    the admin's reading rights), else None."""
    async with conn.execute(
        f"SELECT images.path, jobs.channel_id{_SHOWN_PICTURES}"
        " AND jobs.id = :job AND images.idx = :idx",
        {"guild": guild_id, "job": job_id, "idx": idx},
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
