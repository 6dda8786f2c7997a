"""A member's past jobs, read for /history and /show, and erased for /forget-me."""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from db.database import transaction


@dataclass(frozen=True)
class HistoryEntry:
    job_id: str
    kind: str
    status: str
    request_json: str
    created_at: float
    image_count: int


@dataclass(frozen=True)
class ErasedData:
    """What /forget-me removed; ``image_paths`` are files the caller still has to delete."""

    jobs: int
    image_paths: list[str]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def page_of_jobs(
    conn: aiosqlite.Connection,
    user_id: int,
    *,
    search: str | None,
    limit: int,
    offset: int,
) -> tuple[list[HistoryEntry], int]:
    """One page of the member's jobs, newest first, and how many match in all.

    ``search`` is a case-insensitive substring of the request (which holds the prompt).
    """
    pattern = f"%{_escape_like(search)}%" if search else "%"
    where = "user_id = ? AND json_extract(request_json, '$.prompt') LIKE ? ESCAPE '\\'"
    async with conn.execute(
        f"SELECT COUNT(*) FROM jobs WHERE {where}", (user_id, pattern)
    ) as cursor:
        row = await cursor.fetchone()
    total = int(row[0]) if row else 0
    async with conn.execute(
        "SELECT j.id, j.kind, j.status, j.request_json, j.created_at,"
        " (SELECT COUNT(*) FROM images i WHERE i.job_id = j.id)"
        f" FROM jobs j WHERE {where} ORDER BY j.created_at DESC, j.id LIMIT ? OFFSET ?",
        (user_id, pattern, limit, offset),
    ) as cursor:
        rows = await cursor.fetchall()
    return [HistoryEntry(*row) for row in rows], total


async def count_rows_of_user(conn: aiosqlite.Connection, user_id: int) -> int:
    """Jobs, images and settings rows that still name the member (0 after /forget-me)."""
    async with conn.execute(
        "SELECT (SELECT COUNT(*) FROM jobs WHERE user_id = ?)"
        " + (SELECT COUNT(*) FROM images WHERE job_id IN (SELECT id FROM jobs WHERE user_id = ?))"
        " + (SELECT COUNT(*) FROM user_settings WHERE user_id = ?)",
        (user_id, user_id, user_id),
    ) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def erase_user(conn: aiosqlite.Connection, user_id: int) -> ErasedData:
    """Delete the member's finished jobs, their images rows and their settings, atomically.

    Queued and running jobs are kept: the queue still owns them (cancel them first).
    """
    finished = "user_id = ? AND status NOT IN ('queued', 'running')"
    async with transaction(conn):
        async with conn.execute(
            f"SELECT path FROM images WHERE job_id IN (SELECT id FROM jobs WHERE {finished})",
            (user_id,),
        ) as cursor:
            paths = [str(row[0]) for row in await cursor.fetchall()]
        # images go with their job (ON DELETE CASCADE).
        cursor = await conn.execute(f"DELETE FROM jobs WHERE {finished}", (user_id,))
        jobs = cursor.rowcount
        await conn.execute("DELETE FROM user_settings WHERE user_id = ?", (user_id,))
    return ErasedData(jobs=jobs, image_paths=paths)
