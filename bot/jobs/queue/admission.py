"""A job's admission: whether the member's limits, the queue bound and the relax caps let it in
(``Admission.refusal``, answered before the interaction is deferred), and its journaling with
its quota reservation in one transaction (``Admission.admit``), which checks them again and
stays the authority; and no new job while the data disk is full (``Admission.refusal``)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from bot.jobs import accounting
from bot.jobs.accounting import QuotaExceeded
from bot.jobs.queue.room_log import RoomLog
from bot.jobs.queue.unfinished import UnfinishedJobs
from bot.jobs.queue.values import Submission
from bot.jobs.retention import START_ROOM_BYTES, free_bytes
from bot.jobs.stored_files import stored_request
from bot.policy.queue_bound import QueueBoundRefusal
from bot.policy.quota import QuotaLimits, RelaxRefusal
from bot.storage_trouble import STORAGE_FULL
from bot.user_errors import Reason, UserError
from db import jobs as journal
from db.database import transaction
from inference.types import RenderRequest

# How long one reading of the pictures' disk's free space answers admission
# (``Admission.refusal``): a statfs every few seconds, not one per interaction.
ROOM_READ_EVERY_S = 5.0


def job_gone(job_id: str) -> UserError:
    """One refusal for a job that is gone, another server's, or another member's private
    one: none of them tells the clicker which it is."""
    return UserError(
        f"Job `{job_id}` is no longer in the history; make a new picture with /imagine."
    )


@dataclass(frozen=True)
class Admitted:
    """A job journaled with its quota reserved."""

    job_id: str
    created_at: float
    # Its member has a job the journal holds as started: the scheduler places one it holds
    # nothing of (forgotten, or from before a restart) after those who never started.
    started_before: bool


class Admission:
    def __init__(
        self,
        conn: aiosqlite.Connection,
        unfinished: UnfinishedJobs,
        now: Callable[[], float],
        dm_limits: QuotaLimits,
        max_queued_per_member: int,
        data_dir: Path,
    ) -> None:
        self._conn = conn
        self._data_dir = data_dir  # the journal names pictures inside it (``stored_request``)
        # Each member's jobs not yet ended, for the queue bound's check before the
        # acknowledgement (``refusal``): counted without a read of SQLite.
        self._unfinished = unfinished
        self._now = now
        self._dm_limits = dm_limits  # the quota in direct messages (settings: EASEL_DM_*)
        self._max_queued = max_queued_per_member  # EASEL_MAX_QUEUED_PER_MEMBER; 0: no bound
        # The last reading of the pictures' disk's free space (``_storage_full``), and when.
        self._free: int | None = None
        self._free_read_at: float | None = None
        # Admission refusing jobs for want of room, logged as it begins and ends.
        self._room = RoomLog(
            data_dir,
            f"has less free than the {START_ROOM_BYTES // 2**20} MiB a job needs",
            "new jobs are refused",
            "new jobs are accepted",
        )

    async def admit(self, submission: Submission) -> Admitted:
        """Reserve quota and journal the job; returns it once it cannot be lost. Raises
        ``QuotaExceeded`` (nothing written) when the member's limits say no. Runs after the
        interaction is deferred, and so does its read of whether the member ever started a
        job (``refusal`` answers before it, from memory).

        Raises ``job_gone`` (nothing written) when the job it is made from
        (``parent_job_id``) was erased by its maker's /forget-me or pruned since it was
        read: its inputs are gone with it."""
        job_id = uuid.uuid4().hex[:16]
        created_at = self._now()
        parent = submission.parent_job_id
        refused: UserError | QuotaExceeded | None = None
        started = False
        async with transaction(self._conn):
            # Read first, under the write lock (jobs are deleted only in transactions): no
            # erasure comes between it and the journal row. Raised after it, not in it: a
            # rollback would undo another coroutine's lone write that joined it.
            if parent is not None and not await journal.job_exists(self._conn, parent):
                refused = job_gone(parent)
            elif (
                quota := await accounting.admit(
                    self._conn,
                    job_id,
                    submission.member,
                    submission.request,
                    created_at,
                    self._dm_limits,
                    max_queued=self._max_queued,
                    render_size=submission.render_size,
                )
            ) is not None:
                refused = QuotaExceeded.of(quota)  # counted where the member is told
            else:
                started = await self._journal(job_id, created_at, submission)
        if refused is not None:
            raise refused
        member = (submission.user_id, submission.guild_id)
        self._unfinished.add(job_id, member, submission.request.count)
        return Admitted(job_id, created_at, started_before=started)

    async def _journal(self, job_id: str, created_at: float, submission: Submission) -> bool:
        """In ``admit``'s transaction: ``submission`` journaled as ``job_id``; whether its
        member has a job the journal holds as started."""
        await journal.insert_job(
            self._conn,
            journal.NewJob(
                id=job_id,
                kind=submission.kind,
                user_id=submission.user_id,
                guild_id=submission.guild_id,
                channel_id=submission.channel_id,
                request_json=stored_request(self._data_dir, submission.request).to_json(),
                created_at=created_at,
                parent_job_id=submission.parent_job_id,
                application_id=submission.application_id,
                interaction_token=submission.interaction_token,
                interaction_created_at=submission.interaction_created_at,
                filesize_limit=submission.filesize_limit,
                spoiler=submission.spoiler,
                priority=int(submission.priority),
                private=submission.private,
                age_restricted=submission.age_restricted,
                thread_parent_id=submission.thread_parent_id,
            ),
        )
        if not submission.private:
            # Its maker's /settings saved private results after its submit read them:
            # private as the save made their other jobs (the transactions take turns).
            await journal.make_private_if_kept(self._conn, job_id)
        return bool(await journal.members_who_started(self._conn, [submission.user_id]))

    async def refusal(self, submission: Submission, jobs: int) -> QuotaExceeded | None:
        """Why the member's limits, the queue bound or the relax caps would refuse this
        submission now, or None (reads only: nothing counted, the caller may never tell it,
        ``bot.refusals.quota_refused``); ``jobs``: how many jobs its pictures are split into
        (``--repeat``).

        For answering before the interaction is deferred, so a refusal can be ephemeral:
        from memory once warm, a refusal confirmed in SQLite; ``admit`` checks again,
        atomically, and stays the authority.

        Raises ``UserError`` (``STORAGE_FULL``) while the pictures' disk has less free than a
        start needs (``START_ROOM_BYTES``): the job would render in full, then fail to store
        its pictures."""
        if await self._storage_full():
            raise UserError(STORAGE_FULL.told(), Reason.BUSY)
        refusal = await accounting.refusal_for(
            self._conn,
            submission.member,
            submission.request,
            self._now(),
            self._dm_limits,
            submission.render_size,
        )
        if refusal is not None:
            return QuotaExceeded.of(refusal)
        waiting = await self._unfinished_refusal(submission.member, submission.request, jobs)
        return None if waiting is None else QuotaExceeded.of(waiting)

    async def _storage_full(self) -> bool:
        """Whether the disk of the pictures (``EASEL_DATA_DIR/images``) has less free than
        ``START_ROOM_BYTES``, as read at most ``ROOM_READ_EVERY_S`` ago (off the loop); not
        when it cannot be read. A reading that crosses the floor is logged (``RoomLog``)."""
        now = time.monotonic()
        if self._free_read_at is None or now - self._free_read_at >= ROOM_READ_EVERY_S:
            self._free_read_at = now
            self._free = free = await asyncio.to_thread(free_bytes, self._data_dir / "images")
            if free is not None and free < START_ROOM_BYTES:
                await self._room.ran_short(free)
            else:
                self._room.has_room()
        return self._free is not None and self._free < START_ROOM_BYTES

    async def _unfinished_refusal(
        self, member: accounting.Member, request: RenderRequest, jobs: int
    ) -> RelaxRefusal | QueueBoundRefusal | None:
        """Why ``jobs`` more of ``member``'s (``request``'s pictures in all) do not fit beside
        their unfinished ones (``accounting.unfinished_refusal``: a ``--relax`` request's caps,
        the queue bound), or None: counted in memory (``_unfinished``); a refusal is confirmed
        in SQLite, whose count replaces memory's (it may have missed an end)."""
        key, bound = (member.user_id, member.guild_id), self._max_queued
        if accounting.unfinished_refusal(self._unfinished.of(key), request, jobs, bound) is None:
            return None
        self._unfinished.found(key, await journal.unfinished_pictures_of(self._conn, *key))
        return accounting.unfinished_refusal(self._unfinished.of(key), request, jobs, bound)
