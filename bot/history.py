"""History for the cogs: pages of a member's jobs, one job's pictures, and /forget-me."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from bot.member_settings import MemberSettings
from db import history as store
from db import jobs as journal

PAGE_SIZE = 5


@dataclass(frozen=True)
class HistoryLine:
    job_id: str
    status: str
    prompt: str
    created_at: float
    image_count: int


@dataclass(frozen=True)
class HistoryPage:
    lines: list[HistoryLine]
    page: int  # 0-based
    page_count: int
    total: int


@dataclass(frozen=True)
class StoredJob:
    job_id: str
    user_id: int
    status: str
    prompt: str
    image_paths: list[Path]
    seeds: list[int]
    infotexts: list[str]


@dataclass(frozen=True)
class Forgotten:
    jobs: int
    files: int


class History:
    def __init__(
        self, conn: aiosqlite.Connection, images_dir: Path, member_settings: MemberSettings
    ) -> None:
        self._conn = conn
        self._images_dir = images_dir
        self._member_settings = member_settings

    async def page(self, user_id: int, page: int, search: str | None = None) -> HistoryPage:
        """Page ``page`` (clamped to the last one) of the member's jobs, newest first."""
        _, total = await store.page_of_jobs(self._conn, user_id, search=search, limit=0, offset=0)
        page_count = max(1, -(-total // PAGE_SIZE))
        page = min(max(page, 0), page_count - 1)
        entries, total = await store.page_of_jobs(
            self._conn, user_id, search=search, limit=PAGE_SIZE, offset=page * PAGE_SIZE
        )
        lines = [
            HistoryLine(
                e.job_id,
                e.status,
                str(json.loads(e.request_json).get("prompt", "")),
                e.created_at,
                e.image_count,
            )
            for e in entries
        ]
        return HistoryPage(lines, page, page_count, total)

    async def job(self, job_id: str) -> StoredJob | None:
        record = await journal.get_job(self._conn, job_id)
        if record is None:
            return None
        images = await journal.images_of(self._conn, job_id)
        return StoredJob(
            job_id=record.id,
            user_id=record.user_id,
            status=record.status.value,
            prompt=str(json.loads(record.request_json).get("prompt", "")),
            image_paths=[Path(image.path) for image in images],
            seeds=[image.seed for image in images],
            infotexts=[image.infotext for image in images],
        )

    async def unfinished(self, user_id: int | None) -> list[HistoryLine]:
        """The member's (None: everyone's) queued and running jobs, oldest first."""
        records = [
            record
            for status in (journal.JobStatus.RUNNING, journal.JobStatus.QUEUED)
            for record in await journal.jobs_with_status(self._conn, status)
            if user_id is None or record.user_id == user_id
        ]
        records.sort(key=lambda record: record.created_at)
        return [
            HistoryLine(
                record.id,
                record.status.value,
                str(json.loads(record.request_json).get("prompt", "")),
                record.created_at,
                0,
            )
            for record in records
        ]

    async def forget(self, user_id: int) -> Forgotten:
        """Erase the member's finished jobs, pictures (rows and files) and settings."""
        erased = await store.erase_user(self._conn, user_id)
        self._member_settings.forget(user_id)
        removed = await asyncio.to_thread(self._remove_files, erased.image_paths)
        return Forgotten(jobs=erased.jobs, files=removed)

    def _remove_files(self, paths: list[str]) -> int:
        removed = 0
        root = self._images_dir.resolve()
        for text in paths:
            path = Path(text).resolve()
            # Only ever delete inside the images folder, whatever a row says.
            if root not in path.parents:
                continue
            if path.exists():
                path.unlink()
                removed += 1
            if path.parent != root and not any(path.parent.iterdir()):
                path.parent.rmdir()
        return removed

    async def rows_left_for(self, user_id: int) -> int:
        return await store.count_rows_of_user(self._conn, user_id)
