"""The in-process job queue: journal in SQLite, one dispatcher per device worker, delivery.

A job is written to the journal before anyone is told it was accepted; a start replays the
journal (running jobs are queued again, finished but undelivered results are delivered), and
delivery is claimed in the database first so a result is posted once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiosqlite

from bot.scheduler import FairScheduler, PriorityClass, QueuedJob, SchedulerConfig
from db import jobs as journal
from inference.types import RenderCancelled, RenderedImage, RenderInputError, RenderRequest
from inference.worker import DeviceWorker

log = logging.getLogger(__name__)

# Stop waiting for a running render after this long on shutdown; the journal requeues it.
SHUTDOWN_GRACE_S = 25.0


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


@dataclass(frozen=True)
class ResultImage:
    path: Path
    seed: int
    infotext: str


@dataclass(frozen=True)
class FinishedJob:
    """What a delivery needs to know about a job that ended, successfully or not."""

    job_id: str
    kind: str
    succeeded: bool
    error: str | None
    request: RenderRequest
    user_id: int
    channel_id: int | None
    application_id: int | None
    interaction_token: str | None
    interaction_created_at: float | None
    images: tuple[ResultImage, ...]


class ResultSink(Protocol):
    async def deliver(self, job: FinishedJob) -> int | None:
        """Post the result (or the failure); returns the posted message's id when known."""


class JobQueue:
    def __init__(
        self,
        conn: aiosqlite.Connection,
        workers: list[DeviceWorker],
        images_dir: Path,
        clock: Callable[[], float] = time.time,
        scheduler_config: SchedulerConfig | None = None,
    ) -> None:
        self._conn = conn
        self._workers = workers
        self._images_dir = images_dir
        self._clock = clock
        self._last_now = 0.0
        # One job per batch until the engine renders a batch in one pipeline call.
        self._scheduler = FairScheduler(
            scheduler_config or SchedulerConfig(max_batch=1),
            devices=[worker.device for worker in workers],
        )
        self._wakeup = asyncio.Condition()
        self._cancel_events: dict[str, threading.Event] = {}
        self._dispatchers: list[asyncio.Task[None]] = []
        self._sink: ResultSink | None = None
        self._stopping = False

    def set_sink(self, sink: ResultSink) -> None:
        self._sink = sink

    async def start(self) -> None:
        """Replay the journal, then start one dispatcher per device."""
        requeued = await journal.requeue_running(self._conn)
        if requeued:
            log.info("requeued %d job(s) left running by a previous process", requeued)
        for job in await journal.jobs_with_status(self._conn, journal.JobStatus.QUEUED):
            self._schedule(job.id, job.user_id, job.guild_id, job.request_json, job.created_at)
        for job in await journal.finished_undelivered(self._conn):
            await self._deliver(job.id)
        self._dispatchers = [
            asyncio.create_task(self._dispatch(worker), name=f"easel-dispatch-{worker.device}")
            for worker in self._workers
        ]

    async def stop(self) -> None:
        """Take no new work; let running renders finish (bounded), then stop the workers."""
        self._stopping = True
        async with self._wakeup:
            self._wakeup.notify_all()
        if self._dispatchers:
            _, still_running = await asyncio.wait(self._dispatchers, timeout=SHUTDOWN_GRACE_S)
            for task in still_running:
                task.cancel()
            for event in self._cancel_events.values():
                event.set()
        for worker in self._workers:
            await asyncio.to_thread(worker.close)

    async def submit(self, submission: Submission) -> str:
        """Journal the job, then queue it; returns its id once it cannot be lost."""
        job_id = uuid.uuid4().hex[:16]
        created_at = self._now()
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
            ),
        )
        async with self._wakeup:
            self._schedule(
                job_id,
                submission.user_id,
                submission.guild_id,
                submission.request.to_json(),
                created_at,
            )
            self._wakeup.notify_all()
        return job_id

    def queued_count(self) -> int:
        return self._scheduler.queued_count

    def _now(self) -> float:
        # The scheduler needs a clock that never goes back, even if the wall clock does.
        self._last_now = max(self._last_now, self._clock())
        return self._last_now

    def _schedule(
        self, job_id: str, user_id: int, guild_id: int | None, request_json: str, at: float
    ) -> None:
        request = RenderRequest.from_json(request_json)
        self._scheduler.submit(
            QueuedJob(
                job_id=job_id,
                user_id=user_id,
                guild_id=guild_id,
                batch_key=request.batch_key(),
                priority=PriorityClass.STANDARD,
                submitted_at=min(at, self._now()),
                images=request.count,
            )
        )

    async def request_of(self, job_id: str) -> RenderRequest | None:
        job = await journal.get_job(self._conn, job_id)
        return RenderRequest.from_json(job.request_json) if job else None

    async def _next_batch(self, device: str) -> list[QueuedJob] | None:
        async with self._wakeup:
            while not self._stopping:
                if batch := self._scheduler.next_batch(device, self._now()):
                    return batch
                await self._wakeup.wait()
            return None

    async def _dispatch(self, worker: DeviceWorker) -> None:
        while (batch := await self._next_batch(worker.device)) is not None:
            for job in batch:
                try:
                    await self._run(worker, job.job_id)
                except Exception:
                    # The job stays in the journal as it was; the next start retries it.
                    log.exception("job %s: the queue could not record its outcome", job.job_id)
                async with self._wakeup:
                    self._scheduler.finish(job.job_id)
                    self._wakeup.notify_all()

    async def _run(self, worker: DeviceWorker, job_id: str) -> None:
        job = await journal.get_job(self._conn, job_id)
        if job is None or job.status is not journal.JobStatus.QUEUED:
            return
        request = RenderRequest.from_json(job.request_json)
        await journal.mark_running(self._conn, [job_id], self._now())
        cancel = self._cancel_events[job_id] = threading.Event()
        started = time.perf_counter()
        try:
            rendered = await worker.render(request, cancel=cancel)
        except RenderCancelled:
            await journal.mark_failed(
                self._conn, job_id, "cancelled", self._now(), cancelled=True
            )
            return
        except RenderInputError as error:
            await journal.mark_failed(self._conn, job_id, str(error), self._now())
        except Exception as error:
            log.exception("job %s failed on %s", job_id, worker.device)
            await journal.mark_failed(
                self._conn, job_id, f"internal error ({type(error).__name__})", self._now()
            )
        else:
            gpu_seconds = time.perf_counter() - started
            records = await asyncio.to_thread(self._store_images, job_id, rendered)
            await journal.mark_done(self._conn, job_id, records, gpu_seconds, self._now())
        finally:
            self._cancel_events.pop(job_id, None)
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
        if self._sink is None or not await journal.claim_delivery(
            self._conn, job_id, self._now()
        ):
            return
        job = await journal.get_job(self._conn, job_id)
        assert job is not None
        images = await journal.images_of(self._conn, job_id)
        finished = FinishedJob(
            job_id=job.id,
            kind=job.kind,
            succeeded=job.status is journal.JobStatus.DONE,
            error=job.error,
            request=RenderRequest.from_json(job.request_json),
            user_id=job.user_id,
            channel_id=job.channel_id,
            application_id=job.application_id,
            interaction_token=job.interaction_token,
            interaction_created_at=job.interaction_created_at,
            images=tuple(ResultImage(Path(i.path), i.seed, i.infotext) for i in images),
        )
        try:
            message_id = await self._sink.deliver(finished)
        except Exception:
            log.exception("job %s: delivery failed; it will be retried at the next start", job_id)
            await journal.release_delivery(self._conn, job_id)
            return
        if message_id is not None:
            await journal.set_result_message(self._conn, job_id, message_id)
