"""History for the cogs: pages of a member's jobs, one job's pictures, and /forget-me."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from bot.jobs import accounting
from bot.jobs.retention import quota_window
from bot.jobs.stored_files import remove_inside
from bot.policy.member_settings import MemberSettings
from bot.user_errors import UserError
from db import history as store
from db import jobs as journal
from db.database import write_back_log

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
    guild_id: int | None  # None: made in a direct message
    private: bool
    spoiler: bool
    status: str
    prompt: str
    image_paths: list[Path]
    seeds: list[int]
    infotexts: list[str]
    channel_id: int | None = None  # where it was made (None: not recorded)


@dataclass(frozen=True)
class Forgotten:
    """What /forget-me erased. ``ledger_rows_deferred`` still count towards the member's
    current quota periods: they lose the member's id at ``deferred_until``."""

    jobs: int
    pictures: int
    uploads: int
    ledger_rows_anonymised: int
    ledger_rows_deferred: int
    deferred_until: float


class History:
    def __init__(
        self,
        conn: aiosqlite.Connection,
        images_dir: Path,
        inputs_dir: Path,
        member_settings: MemberSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._conn = conn
        self._images_dir = images_dir
        self._inputs_dir = inputs_dir
        self._member_settings = member_settings
        self._clock = clock

    async def page(
        self, user_id: int, page: int, search: str | None = None, *, guild_id: int | None
    ) -> HistoryPage:
        """Page ``page`` (clamped to the last one) of the member's jobs in the guild (None:
        direct messages), newest first: results belong to the server they were made in."""
        _, total = await store.page_of_jobs(
            self._conn, user_id, guild_id=guild_id, search=search, limit=0, offset=0
        )
        page_count = max(1, -(-total // PAGE_SIZE))
        page = min(max(page, 0), page_count - 1)
        entries, total = await store.page_of_jobs(
            self._conn,
            user_id,
            guild_id=guild_id,
            search=search,
            limit=PAGE_SIZE,
            offset=page * PAGE_SIZE,
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
            guild_id=record.guild_id,
            private=record.private,
            spoiler=record.spoiler,
            status=record.status.value,
            prompt=str(json.loads(record.request_json).get("prompt", "")),
            image_paths=[Path(image.path) for image in images],
            seeds=[image.seed for image in images],
            infotexts=[image.infotext for image in images],
            channel_id=record.channel_id,
        )

    async def unfinished(self, user_id: int, *, guild_id: int | None) -> list[HistoryLine]:
        """The member's queued and running jobs in the guild (None: direct messages), oldest
        first: jobs belong to the server they were made in."""
        records = [
            record
            for status in (journal.JobStatus.RUNNING, journal.JobStatus.QUEUED)
            for record in await journal.jobs_with_status(self._conn, status)
            if record.user_id == user_id and record.guild_id == guild_id
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
        """Erase the member's jobs, pictures and uploads (rows and files) and settings, and
        anonymise their quota ledger rows. Refused, erasing nothing, while one of their jobs
        is queued or running: the queue still owns it, and a result written after the erase
        would name the member again."""
        counted_since, period_end = quota_window(self._clock())
        erased = await accounting.erase_member(
            self._conn, user_id, counted_since=counted_since, anonymise_at=period_end
        )
        if erased.unfinished:
            ids = ", ".join(f"`{job_id}`" for job_id in erased.unfinished)
            raise UserError(
                f"Nothing was erased: your job(s) {ids} are still queued or running. Cancel "
                "them with /cancel or wait until they finish, then run /forget-me again."
            )
        self._member_settings.forget(user_id)
        pictures = await asyncio.to_thread(remove_inside, self._images_dir, erased.image_paths)
        uploads = await asyncio.to_thread(remove_inside, self._inputs_dir, erased.input_paths)
        # The erased rows stay in the database file's older pages until the write-ahead log is
        # copied back, and in the log until it is emptied: both now, or (a reader holds the
        # log) at Retention's next sweep.
        await write_back_log(self._conn)
        return Forgotten(
            jobs=erased.jobs,
            pictures=pictures,
            uploads=uploads,
            ledger_rows_anonymised=erased.ledger_rows_anonymised,
            ledger_rows_deferred=erased.ledger_rows_deferred,
            deferred_until=period_end,
        )

    async def rows_left_for(self, user_id: int) -> int:
        return await store.count_rows_of_user(self._conn, user_id)
