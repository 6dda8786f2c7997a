"""The job queue: journal in SQLite, fair scheduling, one dispatcher per render slot, delivery.

A job is written to the journal (with its quota reservation, in one transaction) before anyone
is told it was accepted; a start replays the journal (running jobs are queued again, finished
but undelivered results are delivered), and a delivery is recorded once it is posted. A failed
or cancelled job is refunded; a finished one is charged the GPU time it really took.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import aiosqlite

from bot import accounting
from bot.accounting import QuotaExceeded
from bot.scheduler import FairScheduler, PriorityClass, QueuedJob, SchedulerConfig
from db import jobs as journal
from db.database import transaction
from inference.types import (
    RenderCancelled,
    RenderedImage,
    RenderFailed,
    RenderInputError,
    RenderRequest,
    StepProgress,
)

__all__ = [
    "CancelOutcome",
    "FinishedJob",
    "JobQueue",
    "JobState",
    "QuotaExceeded",
    "RenderSlot",
    "ResultImage",
    "ResultSink",
    "Submission",
]

log = logging.getLogger(__name__)

# Stop waiting for a running render after this long on shutdown; the journal requeues it.
SHUTDOWN_GRACE_S = 25.0


class RenderSlot(Protocol):
    """Somewhere one render runs at a time: a local device thread, or a remote worker."""

    @property
    def device(self) -> str: ...

    async def render(
        self,
        request: RenderRequest,
        progress: Callable[[StepProgress], None] | None = None,
        cancel: threading.Event | None = None,
        *,
        job_id: str,
    ) -> list[RenderedImage]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Submission:
    kind: str
    request: RenderRequest
    user_id: int
    guild_id: int | None = None
    channel_id: int | None = None
    parent_job_id: str | None = None
    application_id: int | None = None
    interaction_token: str | None = None
    interaction_created_at: float | None = None
    role_ids: tuple[int, ...] = ()
    is_admin: bool = False
    priority: PriorityClass = PriorityClass.STANDARD
    # How the result must be posted: the interaction's attachment limit, spoilered or not.
    filesize_limit: int | None = None
    spoiler: bool = False


@dataclass(frozen=True)
class ResultImage:
    path: Path
    seed: int
    infotext: str


@dataclass(frozen=True)
class FinishedJob:
    """What a delivery needs to know about a job that ended: done, failed or cancelled."""

    job_id: str
    kind: str
    succeeded: bool
    error: str | None
    request: RenderRequest
    user_id: int
    guild_id: int | None
    channel_id: int | None
    application_id: int | None
    interaction_token: str | None
    interaction_created_at: float | None
    images: tuple[ResultImage, ...]
    filesize_limit: int | None = None
    spoiler: bool = False


class ResultSink(Protocol):
    async def deliver(self, job: FinishedJob) -> int | None:
        """Post the result (or the failure); returns the posted message's id when known."""


ProgressListener = Callable[[str, StepProgress], None]


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"  # it was queued: it will not run
    STOPPING = "stopping"  # it was running: it stops at the next step
    NOT_YOURS = "not-yours"
    FINISHED = "finished"  # too late: it already ended
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class JobState:
    status: journal.JobStatus
    position: int | None  # jobs that start before it; None unless queued
    eta_s: float | None  # seconds until it should be finished; None unless queued or running


class JobQueue:
    def __init__(
        self,
        conn: aiosqlite.Connection,
        slots: Sequence[RenderSlot],
        images_dir: Path,
        clock: Callable[[], float] = time.time,
        scheduler_config: SchedulerConfig | None = None,
    ) -> None:
        self._conn = conn
        self._slots = list(slots)
        self._images_dir = images_dir
        self._clock = clock
        self._last_now = 0.0
        # One job per batch until the engine renders a batch in one pipeline call.
        self._scheduler = FairScheduler(
            scheduler_config or SchedulerConfig(max_batch=1),
            devices=[slot.device for slot in self._slots],
        )
        self._wakeup = asyncio.Condition()
        self._cancel_events: dict[str, threading.Event] = {}
        self._dispatchers: list[asyncio.Task[None]] = []
        self._sink: ResultSink | None = None
        self._progress: ProgressListener | None = None
        self._stopping = False

    def set_sink(self, sink: ResultSink) -> None:
        self._sink = sink

    def set_progress_listener(self, listener: ProgressListener) -> None:
        """``listener(job_id, step)`` is called on the event loop after each sampling step."""
        self._progress = listener

    async def start(self) -> None:
        """Replay the journal, then start one dispatcher per slot."""
        requeued = await journal.requeue_running(self._conn)
        if requeued:
            log.info("requeued %d job(s) left running by a previous process", requeued)
        for job in await journal.jobs_with_status(self._conn, journal.JobStatus.QUEUED):
            self._schedule(job.id, job.user_id, job.guild_id, job.request_json, job.created_at)
        for job in await journal.finished_undelivered(self._conn):
            await self._deliver(job.id)
        self._dispatchers = [
            asyncio.create_task(self._dispatch(slot), name=f"easel-dispatch-{slot.device}")
            for slot in self._slots
        ]

    async def stop(self) -> None:
        """Take no new work; let running renders finish (bounded), then close the slots.

        A render still running after the grace period is abandoned: its journal row stays
        ``running`` and the next start queues it again.
        """
        self._stopping = True
        async with self._wakeup:
            self._wakeup.notify_all()
        if self._dispatchers:
            _, still_running = await asyncio.wait(self._dispatchers, timeout=SHUTDOWN_GRACE_S)
            for task in still_running:
                task.cancel()
        for slot in self._slots:
            await asyncio.to_thread(slot.close)

    async def submit(self, submission: Submission) -> str:
        """Reserve quota and journal the job, then queue it; returns its id once it cannot be
        lost. Raises ``QuotaExceeded`` (nothing written) when the member's limits say no."""
        job_id = uuid.uuid4().hex[:16]
        created_at = self._now()
        async with transaction(self._conn):
            refusal = await accounting.admit(
                self._conn,
                job_id,
                submission.request,
                submission.user_id,
                submission.guild_id,
                submission.role_ids,
                submission.is_admin,
                created_at,
            )
            if refusal is None:
                await journal.insert_job(
                    self._conn,
                    journal.NewJob(
                        id=job_id,
                        kind=submission.kind,
                        user_id=submission.user_id,
                        guild_id=submission.guild_id,
                        channel_id=submission.channel_id,
                        request_json=submission.request.to_json(),
                        created_at=created_at,
                        parent_job_id=submission.parent_job_id,
                        application_id=submission.application_id,
                        interaction_token=submission.interaction_token,
                        interaction_created_at=submission.interaction_created_at,
                        filesize_limit=submission.filesize_limit,
                        spoiler=submission.spoiler,
                    ),
                )
        if refusal is not None:
            raise QuotaExceeded(refusal.message)
        async with self._wakeup:
            self._schedule(
                job_id,
                submission.user_id,
                submission.guild_id,
                submission.request.to_json(),
                created_at,
                submission.priority,
            )
            self._wakeup.notify_all()
        return job_id

    async def quota_refusal(self, submission: Submission) -> str | None:
        """Why the member's limits would refuse this submission now, or None (reads only).

        For answering before the interaction is deferred, so a refusal can be ephemeral;
        ``submit`` checks again, atomically, and stays the authority."""
        refusal = await accounting.refusal_for(
            self._conn,
            submission.request,
            submission.user_id,
            submission.guild_id,
            submission.role_ids,
            submission.is_admin,
            self._now(),
        )
        return refusal.message if refusal else None

    async def cancel(self, job_id: str, user_id: int, is_admin: bool = False) -> CancelOutcome:
        """Cancel a queued job (refunded, the owner is told) or stop a running one."""
        job = await journal.get_job(self._conn, job_id)
        if job is None:
            return CancelOutcome.UNKNOWN
        if job.user_id != user_id and not is_admin:
            return CancelOutcome.NOT_YOURS
        if job_id in self._cancel_events:
            self._cancel_events[job_id].set()
            return CancelOutcome.STOPPING
        async with self._wakeup:
            removed = self._scheduler.cancel(job_id)
            self._wakeup.notify_all()
        if not removed:
            return CancelOutcome.FINISHED
        await self._finish_unsuccessfully(job_id, "cancelled", cancelled=True)
        return CancelOutcome.CANCELLED

    async def state(self, job_id: str) -> JobState | None:
        job = await journal.get_job(self._conn, job_id)
        if job is None:
            return None
        now = self._now()
        eta = self._scheduler.eta(job_id, now)
        return JobState(
            status=job.status,
            position=self._scheduler.position(job_id, now),
            eta_s=None if eta is None else max(0.0, eta - now),
        )

    def queued_count(self) -> int:
        return self._scheduler.queued_count

    async def request_of(self, job_id: str) -> RenderRequest | None:
        job = await journal.get_job(self._conn, job_id)
        return RenderRequest.from_json(job.request_json) if job else None

    def _now(self) -> float:
        # The scheduler needs a clock that never goes back, even if the wall clock does.
        self._last_now = max(self._last_now, self._clock())
        return self._last_now

    def _schedule(
        self,
        job_id: str,
        user_id: int,
        guild_id: int | None,
        request_json: str,
        at: float,
        priority: PriorityClass = PriorityClass.STANDARD,
    ) -> None:
        request = RenderRequest.from_json(request_json)
        self._scheduler.submit(
            QueuedJob(
                job_id=job_id,
                user_id=user_id,
                guild_id=guild_id,
                batch_key=request.batch_key(),
                priority=priority,
                submitted_at=min(at, self._now()),
                images=request.count,
                est_seconds=accounting.estimated_cost(request).gpu_seconds,
            )
        )

    async def _next_batch(self, device: str) -> list[QueuedJob] | None:
        async with self._wakeup:
            while not self._stopping:
                if batch := self._scheduler.next_batch(device, self._now()):
                    return batch
                await self._wakeup.wait()
            return None

    async def _dispatch(self, slot: RenderSlot) -> None:
        while (batch := await self._next_batch(slot.device)) is not None:
            for job in batch:
                try:
                    await self._run(slot, job.job_id)
                except Exception:
                    # The job stays in the journal as it was; the next start retries it.
                    log.exception("job %s: the queue could not record its outcome", job.job_id)
                async with self._wakeup:
                    self._scheduler.finish(job.job_id)
                    self._wakeup.notify_all()

    async def _run(self, slot: RenderSlot, job_id: str) -> None:
        job = await journal.get_job(self._conn, job_id)
        if job is None or job.status is not journal.JobStatus.QUEUED:
            return
        request = RenderRequest.from_json(job.request_json)
        await journal.mark_running(self._conn, [job_id], self._now())
        cancel = self._cancel_events[job_id] = threading.Event()
        started = time.perf_counter()
        try:
            rendered = await slot.render(request, self._progress_for(job_id), cancel, job_id=job_id)
        except RenderCancelled:
            await self._finish_unsuccessfully(job_id, "cancelled", cancelled=True)
        except RenderInputError as error:
            await self._finish_unsuccessfully(job_id, str(error))
        except RenderFailed as error:
            log.warning("job %s failed on %s: %s", job_id, slot.device, error)
            await self._finish_unsuccessfully(job_id, f"{error}; reference {job_id}")
        except Exception as error:
            log.exception("job %s failed on %s", job_id, slot.device)
            await self._finish_unsuccessfully(
                job_id, f"internal error ({type(error).__name__}); reference {job_id}"
            )
        else:
            gpu_seconds = time.perf_counter() - started
            records = await asyncio.to_thread(self._store_images, job_id, rendered)
            now = self._now()
            await journal.mark_done(self._conn, job_id, records, gpu_seconds, now)
            await accounting.charge(self._conn, job_id, gpu_seconds, len(records), now)
            await self._deliver(job_id)
        finally:
            self._cancel_events.pop(job_id, None)

    def _progress_for(self, job_id: str) -> Callable[[StepProgress], None] | None:
        listener = self._progress
        if listener is None:
            return None
        return lambda step: listener(job_id, step)

    async def _finish_unsuccessfully(
        self, job_id: str, error: str, *, cancelled: bool = False
    ) -> None:
        now = self._now()
        await journal.mark_failed(self._conn, job_id, error, now, cancelled=cancelled)
        await accounting.refund(self._conn, job_id, now)
        await self._deliver(job_id)

    def _store_images(
        self, job_id: str, rendered: list[RenderedImage]
    ) -> list[journal.ImageRecord]:
        folder = self._images_dir / job_id
        folder.mkdir(parents=True, exist_ok=True)
        records = []
        for idx, image in enumerate(rendered):
            path = folder / f"{idx}.png"
            path.write_bytes(image.png)
            records.append(
                journal.ImageRecord(
                    job_id, idx, image.seed, str(path), image.infotext, image.width, image.height
                )
            )
        return records

    async def _deliver(self, job_id: str) -> None:
        """Post the job's outcome, then record that it was posted.

        At least once: a crash between the two posts again at the next start. Editing the
        interaction's original response is idempotent, so only the channel-message fallback
        (token expired) can show a result twice, and only after such a crash.
        """
        job = await journal.get_job(self._conn, job_id)
        if self._sink is None or job is None or job.delivered_at is not None:
            return
        images = await journal.images_of(self._conn, job_id)
        finished = FinishedJob(
            job_id=job.id,
            kind=job.kind,
            succeeded=job.status is journal.JobStatus.DONE,
            error=job.error,
            request=RenderRequest.from_json(job.request_json),
            user_id=job.user_id,
            guild_id=job.guild_id,
            channel_id=job.channel_id,
            application_id=job.application_id,
            interaction_token=job.interaction_token,
            interaction_created_at=job.interaction_created_at,
            images=tuple(ResultImage(Path(i.path), i.seed, i.infotext) for i in images),
            filesize_limit=job.filesize_limit,
            spoiler=job.spoiler,
        )
        try:
            message_id = await self._sink.deliver(finished)
        except Exception:
            log.exception("job %s: delivery failed; it will be retried at the next start", job_id)
            return
        await journal.mark_delivered(self._conn, job_id, self._now(), message_id)
