"""The job queue: journal in SQLite, fair scheduling, one dispatcher per render slot.

A job is written to the journal (with its quota reservation, in one transaction: ``Admission``)
before anyone is told it was accepted; a start replays the journal (running jobs are queued
again, finished but undelivered results are delivered: ``Delivery``). A failed job, or one
cancelled before it started, is refunded; a finished one is charged the GPU time it really
took, and one its owner cancelled while running the GPU time it took until the cancel (no
pictures; an admin's or a ban's stop is refunded whole: ``Cancels``); those ends are
``JobEnds``' to record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiosqlite

from bot import metrics
from bot.jobs import accounting
from bot.jobs.accounting import QuotaExceeded
from bot.jobs.queue.admission import Admission
from bot.jobs.queue.broker_chores import BrokerChores
from bot.jobs.queue.cancels import Cancels, RunningBatch, Stop
from bot.jobs.queue.delivery import Delivery, DeliveryRetries
from bot.jobs.queue.ends import JobEnds
from bot.jobs.queue.journal_writes import JOURNAL_RETRY_WAITS_S, JournalWriter
from bot.jobs.queue.slots import (
    BatchRenderSlot,
    BrokeredSlot,
    JobCopies,
    MeasuredImages,
    PreparingSlot,
    ProbingSlot,
    RenderSlot,
    RenderStoppedAfter,
    SlotUnavailable,
    WarmingSlot,
)
from bot.jobs.queue.unfinished import UnfinishedJobs
from bot.jobs.queue.values import (
    INTERNAL_FAILURE,
    SERVER_NOT_SERVED,
    STOPPED_BEFORE_ITS_START,
    CancelOutcome,
    JobState,
    ProgressListener,
    ResultSink,
    StartGate,
    StoppedListener,
    Submission,
)
from bot.jobs.scheduler import (
    Fairness,
    FairScheduler,
    PriorityClass,
    QueuedJob,
    QueueSnapshot,
    SchedulerConfig,
)
from bot.jobs.stored_files import journaled_request
from bot.logging_setup import job_event
from bot.policy.quota import DEFAULT_LIMITS, QuotaLimits
from db import jobs as journal
from db import quotas as ledger
from inference.device_loss import device_lost, lost_reason
from inference.types import (
    PartlyRendered,
    RenderCancelled,
    RenderedImage,
    RenderFailed,
    RenderInputError,
    RenderRequest,
    StepProgress,
    steps_run,
)

log = logging.getLogger(__name__)

# Stop waiting for a running render after this long on shutdown (sooner when the stop's own
# deadline says so: ``stop``); the journal requeues it, and that render is no attempt
# (``MAX_RENDER_ATTEMPTS``): the process ended it, not the job. The posts and broker chores
# left then share as long again.
SHUTDOWN_GRACE_S = 15.0
# Renders a job gets in this process: a job the process died during this often is failed at
# the next start, not rendered again (the broker delivers a job as often to its workers:
# ``BrokerConfig.max_attempts``).
MAX_RENDER_ATTEMPTS = 3
# Queued jobs a start replays between two turns of the event loop's other tasks (a deep
# backlog's replay takes seconds: about 0.1 ms a job).
REPLAYED_AT_ONCE = 256
# Set apart in a job's batch key, it shares a batch with no other job.
_ALONE = "alone"
# After the why of a job a narrowed list stopped (``stop_refused_now``): its maker is told once
# its batch ends, maybe after the list was changed back.
_AT_THE_STOP = " (as the server's settings stood when it was stopped)"
# While a slot cannot hand jobs over (``SlotUnavailable``) it is asked again after the first
# wait, then after each wait doubled up to the last: a broker restart takes seconds, an outage
# may take hours.
UNAVAILABLE_PROBE_WAITS_S = (1.0, 30.0)


def _renders_alone(job: journal.JobRecord) -> bool:
    """Whether ``job`` renders alone, batched with nothing: it was started before, by a
    process that died, or its device was lost under it alone (an attempt counted); or its
    device was lost under a batch of it and others (``JobRecord.renders_alone``). So no
    partner dies with it again."""
    return job.attempts > 0 or job.renders_alone


def _shares(
    seconds: float, requests: Sequence[RenderRequest], pictures: Sequence[int]
) -> list[float]:
    """A batch's GPU ``seconds`` shared by its jobs (``requests``) in proportion to what each
    would cost alone: its ``pictures`` at its prompts' work (``accounting.batch_weight``)."""
    weights = [
        accounting.batch_weight(request, count)
        for request, count in zip(requests, pictures, strict=True)
    ]
    total = sum(weights) or 1
    return [seconds * weight / total for weight in weights]


def _device_seconds(results: Sequence[list[RenderedImage]], waited_s: float) -> float:
    """The GPU seconds a render used: what its slot measured itself (``MeasuredImages``: a
    worker's own render, not its wait in the broker), kept from 0 to ``waited_s``, the time
    the queue waited for it; else ``waited_s``."""
    if len(results) == 1 and isinstance(results[0], MeasuredImages):
        return min(max(results[0].used_s, 0.0), waited_s)
    return waited_s


def _failure_seconds(error: Exception, running: RunningBatch, waited_s: float) -> float | None:
    """The device seconds a render that failed with ``error`` after ``waited_s`` used, which
    its member's fair share pays (``FairScheduler.finish``; the quota is refunded whole):
    none when it was refused (``RenderInputError``, a worker's too) before any step was
    reported (``RunningBatch.steps_seen``): a refusal after steps (a /compare's later cell, a
    wildcard's LoRA set) follows work. Else, rendered here, ``waited_s``. None (its estimate
    stands): a worker's failure, which reports no device time (the bot's wait counts the
    broker's too)."""
    if isinstance(error, RenderInputError) and not running.steps_seen:
        return 0.0
    return waited_s if running.in_process else None


async def _restored_estimate(request: RenderRequest, reserved_s: float | None) -> float:
    """A job read back from the journal: its estimate is the GPU seconds its submit reserved,
    reckoned with its model's native side (1024 for SDXL) and its input picture's size, which
    the journal keeps neither of. A relax job reserved none: its request's, an edit's or an
    upscale's picture read off the loop (an edit's size makes the native side, not known here,
    irrelevant)."""
    if reserved_s:
        return reserved_s
    input_size = None
    if accounting.costs_by_its_picture(request):
        input_size = await asyncio.to_thread(accounting.input_picture_size, request)
    render_size = accounting.RenderSize(input_size=input_size)
    return accounting.estimated_cost(request, render_size).gpu_seconds


def _failure(error: Exception, job_id: str, device: str) -> tuple[str, str]:
    """What the member of a job that failed with ``error`` is told, and the failure's reason
    for the log's ``failed`` line: input (the member's to fix; never logged, it may quote the
    prompt), render_failed or internal (logged here, with the traceback)."""
    if isinstance(error, RenderInputError):
        return str(error), "input"
    if isinstance(error, RenderFailed):
        log.warning("job %s failed on %s: %s", job_id, device, error)
        return f"{error}; reference {job_id}", "render_failed"
    # The class names the bug for an operator; its member gets plain words and the job id,
    # which this line carries for them to find.
    log.error(
        "job %s failed on %s: internal error (%s)",
        job_id,
        device,
        type(error).__name__,
        exc_info=error,
    )
    return f"{INTERNAL_FAILURE}; reference {job_id}", "internal"


class JobQueue:
    def __init__(
        self,
        conn: aiosqlite.Connection,
        slots: Sequence[RenderSlot],
        images_dir: Path,
        clock: Callable[[], float] = time.time,
        scheduler_config: SchedulerConfig | None = None,
        dm_limits: QuotaLimits = DEFAULT_LIMITS,
        copies: JobCopies | None = None,
        max_queued_per_member: int = 0,
        delivery_retries: DeliveryRetries | None = None,
        journal_retry_waits: Sequence[float] = JOURNAL_RETRY_WAITS_S,
        priority_servers: frozenset[int] = frozenset(),
        serves_server: Callable[[int], bool] = lambda guild_id: True,
        fairness: Fairness = "members",
    ) -> None:
        self._conn = conn
        # Whether Easel serves a server (EASEL_ALLOWED_SERVERS): ``start`` ends the queued
        # jobs of the others.
        self._serves_server = serves_server
        self._writer = JournalWriter(journal_retry_waits)
        # What the broker's copies of ended jobs still need (``broker_chores``), when renders
        # run on one.
        self._chores = (
            None if copies is None else BrokerChores(conn, copies, clock, UNAVAILABLE_PROBE_WAITS_S)
        )
        self._slots = list(slots)
        self._images_dir = images_dir
        # ``EASEL_DATA_DIR``: the journal names pictures by their path inside it (``stored_name``).
        self._data_dir = images_dir.parent
        self._clock = clock
        self._last_now = 0.0
        self._last_start = 0.0  # ``_start_time``'s last
        # Batches only as big as every slot can render in one call (remote slots: one job).
        max_batch = min(
            (slot.max_batch if isinstance(slot, BatchRenderSlot) else 1 for slot in self._slots),
            default=1,
        )
        self._scheduler = FairScheduler(
            scheduler_config
            or SchedulerConfig(
                max_batch=max_batch, priority_across_guilds=priority_servers, fairness=fairness
            ),
            devices=[slot.device for slot in self._slots],
        )
        # The two latest submission times: a burst is two arrivals within the batch window.
        self._submitted_at = (-1e9, -1e9)
        self._wakeup = asyncio.Condition()
        self._running: dict[str, RunningBatch] = {}
        # The batch each slot's dispatcher has in hand (``_dispatch``), by device: a stop keeps
        # the attempt of the jobs on a device that did not close in time (``stop``).
        self._on_device: dict[str, RunningBatch] = {}
        # Jobs a previous process died while rendering (``start``), until they render: each
        # renders with nothing else in flight on any device, so that a job that takes the
        # process down again costs no other job an attempt (``MAX_RENDER_ATTEMPTS``).
        self._suspects: set[str] = set()
        # Jobs rendered whose outcome is still being recorded (pictures encoded and stored,
        # ``mark_done``): the journal says running, so a crash meanwhile counts them an attempt,
        # and a suspect waits until this is empty; one in it is still a suspect.
        self._recording: set[str] = set()
        # Each rendered job's share of its batch's measured GPU seconds, until its scheduler
        # slot is freed (``_release``): its member's fair share moves by it.
        self._measured: dict[str, float] = {}
        # Jobs queued again after a start that did not happen (``_queue_again``), until they
        # end: their next start logs "started" again, but adds no second queue-wait sample.
        self._requeued: set[str] = set()
        # Jobs queued here whose start did not happen while the journal refused to say so
        # (``_not_handed_over``): it says running, and their next start here marks them so.
        self._running_in_journal: set[str] = set()
        # Set while a slot cannot hand jobs over (``SlotUnavailable``): no batch starts.
        self._paused = False
        # Each device whose render said it is gone (``device_lost``), with why: its slot takes
        # no more work, and once none is left ``_no_device_left`` is called.
        self._lost: dict[str, str] = {}
        self._no_device_left: Callable[[], None] | None = None
        self._told_no_device_left = False
        # Jobs handed out that wait, out of their slot's way, for what the start gate says
        # their start waits for (``_wait_to_start``), each with that wait, which its cancel
        # ends (``Cancels``), and the job with it: in ``_running``, none renders.
        self._waiting_to_start: dict[str, asyncio.Future[None]] = {}
        # The kind of each job not yet ended, for the metrics that count jobs by kind.
        self._kinds: dict[str, str] = {}
        # Why each job failing here failed (``_failure``'s reasons, or interrupted), until its
        # ``failed`` line; the one failure ``JobEnds`` makes alone is its pictures unstored.
        self._failed_because: dict[str, str] = {}
        # Each job's estimated GPU seconds, until it ends, as reckoned at its submit (its
        # model's native side, its input picture's size) or its restore: the journal keeps
        # neither, so a job queued again here (``_schedule_again``) keeps it.
        self._estimates: dict[str, float] = {}
        # Each member's jobs not yet ended: counted by admission, found at a start, ended here.
        self._unfinished = UnfinishedJobs()
        self._admission = Admission(
            conn, self._unfinished, self._now, dm_limits, max_queued_per_member, self._data_dir
        )
        metrics.watch_queue_depth(self.queued_count)
        self._dispatchers: list[asyncio.Task[None]] = []
        # Rendered batches being stored, charged and delivered while their slot renders on.
        self._finishing: set[asyncio.Task[None]] = set()
        self._start_gate: StartGate | None = None
        self._first_wait: Callable[[], Awaitable[None]] | None = None
        self._progress: ProgressListener | None = None
        self._stopped_listener: StoppedListener | None = None
        self._stopping = False
        self._stop_requested = asyncio.Event()  # ends a delivery's wait to try again
        self._delivery = Delivery(
            conn,
            self._writer,
            images_dir,
            self._now,
            delivery_retries or DeliveryRetries(),
            self._in_background,
            self._stop_requested,
            self._delivery_waits_for,
        )
        self._ends = JobEnds(
            conn,
            self._writer,
            self._delivery,
            images_dir,
            self._now,
            self._ended,
            settles_copies=copies is not None,
        )
        self._cancels = Cancels(
            conn,
            self._ends,
            self._scheduler,
            self._wakeup,
            self._running,
            self._waiting_to_start,
            self._schedule_again,
            self._now,
            self._stopped_in_batch,
        )

    def set_sink(self, sink: ResultSink) -> None:
        self._delivery.set_sink(sink)

    def set_token_check(self, check: Callable[[], Awaitable[bool]]) -> None:
        """``check()``: whether Discord still takes the bot's token, asked after a result's
        post was refused with a 401 (``Delivery.set_token_check``)."""
        self._delivery.set_token_check(check)

    def set_start_gate(
        self, gate: StartGate, first_wait: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Asked about each job as its batch starts: one it refuses uses no GPU time. Each
        device's dispatcher awaits ``first_wait`` before its first job (Discord's READY, for
        the gate to tell of jobs restored at start-up): the jobs stay queued meanwhile, in
        their places."""
        self._start_gate = gate
        self._first_wait = first_wait

    def _delivery_waits_for(self, job: journal.JobRecord) -> Callable[[], Awaitable[None]] | None:
        """What ``job``'s delivery waits for before its lane's turn: as its start would
        (``StartGate.start_waits_for``), a result restored at start-up, for Discord's answer
        about its maker."""
        gate = self._start_gate
        return None if gate is None else gate.start_waits_for(job.id, job.user_id, job.guild_id)

    def set_no_device_left(self, listener: Callable[[], None]) -> None:
        """``listener()`` is called once every slot's device is lost (``device_lost``): only a
        new process renders again."""
        self._no_device_left = listener

    def device_trouble(self) -> str | None:
        """One line saying which devices were lost, and why; None while none was."""
        return "; ".join(self._lost.values()) or None

    def set_progress_listener(
        self, listener: ProgressListener, stopped: StoppedListener | None = None
    ) -> None:
        """``listener(job_id, step)`` is called on the event loop after each sampling step of
        a job not cancelled; ``stopped(job_id, charged)`` when a job is stopped while its batch
        renders on for others' jobs."""
        self._progress, self._stopped_listener = listener, stopped

    async def start(
        self, before_delivery: Callable[[], Coroutine[Any, Any, None]] | None = None
    ) -> None:
        """Replay the journal, then start one dispatcher per slot.

        ``before_delivery``: what must be done once the restored jobs are queued again and
        before any is delivered or rendered (``bot.bans``: their makers' answers awaited, asked
        in the background, the gates holding each one's restored work until theirs comes).
        Who spent nothing lately is read after, in the background (``read_ahead``)."""
        await self._settle_ended()
        requeued, spent = await journal.requeue_running(self._conn, MAX_RENDER_ATTEMPTS)
        if requeued:
            log.info("requeued %d job(s) left running by a previous process", requeued)
        for job_id, kind in spent:  # delivered with the jobs finished undelivered, below
            log.error("job %s: Easel stopped during each of its renders; failed", job_id)
            self._failed_because[job_id] = "interrupted"
            self._kinds[job_id] = kind  # counted under it (``_ended``)
            await self._ends.record_failure(
                job_id,
                f"failed after {MAX_RENDER_ATTEMPTS} tries: Easel stopped while rendering it "
                f"each time, so it is not rendered again; reference {job_id}",
            )
        queued = await journal.jobs_with_status(self._conn, journal.JobStatus.QUEUED)
        # Members who started a job before this start come back after those who never did.
        returners = await journal.members_who_started(self._conn, {job.user_id for job in queued})
        reserved = await ledger.reserved_gpu_seconds(self._conn, [job.id for job in queued])
        unserved: list[str] = []
        for replayed, job in enumerate(queued):
            if replayed and replayed % REPLAYED_AT_ONCE == 0:
                await asyncio.sleep(0)  # the health check and web pages answer meanwhile
            request = journaled_request(self._data_dir, job.request_json)
            self._kinds[job.id] = job.kind
            self._estimates[job.id] = await _restored_estimate(request, reserved.get(job.id))
            self._unfinished.add(job.id, (job.user_id, job.guild_id), request.count)
            if job.cancel_asked_at is not None:
                # Its stop was asked (``Cancels._ask_stop``) and its end not written before
                # the stop: ended now, refunded whole (the GPU time it used was not journaled), and
                # delivered with the ended jobs below. Tried once: a database held by another
                # writer must not delay the login by minutes per job; one it refuses is kept
                # for the sweep, and not rendered.
                await self._ends.record_cancel(job.id, "cancelled", retried=False, ask_first=False)
                continue
            if job.guild_id is not None and not self._serves_server(job.guild_id):
                # Queued before the operator left its server out (or running at the stop, and
                # requeued): ended before this process renders it (never scheduled; a broker's
                # worker may still finish one it held, its result discarded), refunded whole,
                # and its maker told why by DM (``SERVER_NOT_SERVED``: nothing new is posted
                # there); imposed, as the start gate's ends. Not asked: one the journal refuses
                # now is ended by the sweep, or judged again at the next start.
                if await self._ends.record_cancel(
                    job.id,
                    SERVER_NOT_SERVED,
                    retried=False,
                    ask_first=False,
                    stopped_by=journal.StoppedBy.IMPOSED,
                ):
                    unserved.append(job.id)  # one kept for the sweep is not refunded yet
                continue
            priority = PriorityClass(job.priority)
            if _renders_alone(job):
                self._suspects.add(job.id)
            self._schedule(
                job.id,
                job.user_id,
                job.guild_id,
                request,
                job.created_at,
                priority,
                alone=_renders_alone(job),
                started_before=job.user_id in returners,
            )
        if unserved:
            log.warning(
                "%d queued job(s) of servers not in EASEL_ALLOWED_SERVERS cancelled and "
                "refunded, not rendered (again) nor posted: %s",
                len(unserved),
                ", ".join(unserved),
            )
        if before_delivery is not None:
            await before_delivery()
        # In the background, each in its lane's turn: one may wait for Discord (the delivery
        # gate's checks), and the start must not hold the gateway's connection for it.
        restored = await journal.finished_undelivered(self._conn)
        metrics.undelivered_jobs(len(restored))  # until the sweep's first count
        await self._delivery.in_turn([(job, None) for job in restored])
        self._in_background(self._delivery.sweep(self._ends.retry_kept))
        for slot in self._slots:
            if isinstance(slot, WarmingSlot):
                # Ahead of the dispatcher's first job on the slot's thread, with its model.
                slot.warm_up(self._first_model(slot.device))
        if self._chores is not None:
            self._chores.start()
        self._dispatchers = [
            asyncio.create_task(self._dispatch(slot), name=f"easel-dispatch-{slot.device}")
            for slot in self._slots
        ]

    async def _settle_ended(self) -> None:
        """Charge or refund the ended jobs whose reservation a previous process left open (it
        died between the two writes, before they shared a transaction): a done job is charged
        the GPU time it measured, one failed or cancelled is refunded whole (the time a
        cancelled one used was not journaled)."""
        for end in await journal.ended_unsettled(self._conn):
            log.warning("job %s: %s, its quota unsettled; settled now", end.job_id, end.status)
            now = self._now()
            if end.status is journal.JobStatus.DONE:
                await accounting.charge(self._conn, end.job_id, end.gpu_seconds, end.images, now)
            else:
                await accounting.refund(self._conn, end.job_id, now)

    async def read_ahead(self) -> None:
        """Read who spent anything in the current quota periods and which guilds store a limit
        (``accounting.read_ahead``; the bot runs it in the background after ``start``): until it
        ends, a member's first check reads their spending and limits, as without it. None once
        the queue stops (a start's read-ahead still going then would undo ``stop``'s end of the
        spenders' read again)."""
        if self._stopping:
            return
        await accounting.read_ahead(self._conn, self._peek_now())

    async def stop(self, deadline: float | None = None) -> None:
        """Take no new work; let running renders finish (bounded), then close the slots.

        A render still running after ``SHUTDOWN_GRACE_S`` is abandoned: told to stop, its
        journal row stays ``running`` and the next start queues it again, its attempt given
        back once its device closed by ``deadline`` (the job did not end the process); one
        whose device is still stuck in it rendering alone keeps the attempt: the job may be
        what hangs the device, so it renders alone next time and fails after
        ``MAX_RENDER_ATTEMPTS`` (a batch stuck together gets it back at the next start, each
        job to render alone: ``journal.requeue_running``). So is
        a post still running (or waiting for its turn) after another grace period: the next
        start posts it. No wait runs past ``deadline`` (a loop time; the process's stop:
        ``bot.app.STOP_BUDGET_S``), nor does the wait for the slots to close (one whose render
        ignores its stop is left to it)."""
        loop = asyncio.get_running_loop()

        def grace(most_s: float) -> float:
            return most_s if deadline is None else max(0.0, min(most_s, deadline - loop.time()))

        self._stopping = True
        self._stop_requested.set()
        await accounting.stop_reading_again(self._conn)  # its reads need the open database
        async with self._wakeup:
            self._wakeup.notify_all()
        abandoned: set[str] = set()
        on_device: dict[str, set[str]] = {}
        if self._dispatchers:
            _, still_running = await asyncio.wait(
                self._dispatchers, timeout=grace(SHUTDOWN_GRACE_S)
            )
            # Read before the cancels: each batch leaves ``_running`` as its task ends.
            abandoned = {job_id for job_id, batch in self._running.items() if batch.in_process}
            on_device = {
                device: abandoned.intersection(batch.job_ids)
                for device, batch in self._on_device.items()
            }
            for batch in self._running.values():
                if batch.in_process:  # a device stops at its next step: its slot can close
                    batch.stop.set()
            for task in still_running:
                task.cancel()
        # The posts, then the broker's chores, share one grace; chores left over wait for the
        # next start.
        posts_end = loop.time() + grace(SHUTDOWN_GRACE_S)
        await self._settle_background(posts_end - loop.time())
        if self._chores is not None:  # once the last ends are recorded
            await self._chores.stop(max(0.0, posts_end - loop.time()))
        closing = {
            slot.device: asyncio.create_task(asyncio.to_thread(slot.close)) for slot in self._slots
        }
        stuck: set[str] = set()
        if closing:
            closing_s = None if deadline is None else max(0.0, deadline - loop.time())
            await asyncio.wait(closing.values(), timeout=closing_s)
            stuck_devices = [device for device, task in closing.items() if not task.done()]
            stuck = set().union(*(on_device.get(device, set()) for device in stuck_devices))
            if stuck:  # a device busy with no job (its warm-up, its probe): the process names it
                log.warning(
                    "stopping: %s still inside a render step past the stop's deadline, left to "
                    "it; jobs %s stay journaled running and are queued again at the next start, "
                    "each to render alone (a job stuck alone has its attempt counted)",
                    ", ".join(device for device in stuck_devices if on_device.get(device)),
                    sorted(stuck),
                )
        # After the cancels: a start a cancelled task was marking is journaled before this
        # (the connection runs its statements in order).
        await journal.give_back_attempts(self._conn, abandoned - stuck)

    async def submit(self, submission: Submission) -> str:
        """Reserve quota and journal the job, then queue it; returns its id once it cannot be
        lost. Raises ``QuotaExceeded`` (nothing written) when the member's limits say no.

        While the queue stops, a submission is still journaled: the next start runs it."""
        admitted = await self._admission.admit(submission)
        job_id = admitted.job_id
        self._kinds[job_id] = submission.kind
        self._estimates[job_id] = accounting.estimated_cost(
            submission.request, submission.render_size
        ).gpu_seconds
        metrics.job_submitted(submission.kind)
        log.info(
            "job %s queued",
            job_id,
            extra=job_event(job_id, "queued", kind=submission.kind, private=submission.private),
        )
        async with self._wakeup:
            self._submitted_at = (self._submitted_at[1], time.monotonic())
            self._schedule(
                job_id,
                submission.user_id,
                submission.guild_id,
                submission.request,
                admitted.created_at,
                submission.priority,
                started_before=admitted.started_before,
            )
            self._wakeup.notify_all()
        return job_id

    async def quota_refusal(self, submission: Submission, jobs: int = 1) -> QuotaExceeded | None:
        """Why the member's limits, the queue bound or the relax caps would refuse this
        submission now, or None (``Admission.refusal``): reads only, for answering before the
        interaction is deferred; ``submit`` checks again, atomically."""
        return await self._admission.refusal(submission, jobs)

    async def cancel(
        self, job_id: str, by: accounting.Member, *, imposed: bool = False
    ) -> CancelOutcome:
        """Cancel a queued job (refunded, the owner is told) or stop a running one, as ``by``
        (``Cancels.cancel``: who may, who pays, and what a refused write answers); a stop
        ``imposed`` on its owner (a ban's) is refunded whole and never waits minutes."""
        return await self._cancels.cancel(job_id, by, imposed=imposed)

    async def stop_withdrawn(self, job_ids: Sequence[str]) -> list[str]:
        """Stop those of ``job_ids`` still queued or running, withdrawn by a moderator's
        deletion (``Cancels.stop_withdrawn``); returns those stopped."""
        return await self._cancels.stop_withdrawn(job_ids)

    async def stop_refused_now(self, guild_id: int) -> list[str]:
        """Stop the server's jobs rendering that the rules of now refuse (an admin narrowed
        its channels, models or add-ons), judged by the start gate as at their start, and
        ended as it ends one there: refunded whole, their makers told why, not "Cancelled";
        rather than rendered to their last step to be withheld at delivery. Queued ones are
        judged at their start. Returns those stopped (``Cancels.stop_imposed``)."""
        refused = await self._refused_at_start(await journal.running_in(self._conn, guild_id))
        return await self._cancels.stop_imposed(
            {
                job_id: why if why == STOPPED_BEFORE_ITS_START else why + _AT_THE_STOP
                for job_id, why in refused.items()
            }
        )

    async def refund_withheld(self, job_id: str) -> bool:
        """Give back a finished job's quota, its charge included: its result is withheld for a
        rule changed since its submit, not by its maker (``accounting.refund_withheld``);
        whether it stands refunded."""
        return await self._cancels.refund_withheld(job_id)

    async def state(self, job_id: str) -> JobState | None:
        job = await journal.get_job(self._conn, job_id)
        if job is None:
            return None
        if job_id in self._waiting_to_start:  # out of the queue, rendering neither
            return JobState(status=job.status, position=None, eta_s=None, awaiting_check=True)
        if kept := self._ends.ended_unrecorded(job_id):  # running in the journal, ended here
            return JobState(status=job.status, position=None, eta_s=None, end_unrecorded=kept)
        if self._cancels.stopping(job_id):
            # The first stop recorded stands (a withdrawal recorded before a ban's stop).
            stopped_by = job.stopped_by or self._cancels.stopper(job_id)
            return JobState(
                status=job.status, position=None, eta_s=None, stopping=True, stopped_by=stopped_by
            )
        return self._placed(job_id, job.status, self._now())

    async def queued_progress_posts(self) -> list[tuple[str, int, int]]:
        """The queued jobs' public progress messages as the journal recorded them (job,
        channel, message): after a restart, only it knows them."""
        return await journal.queued_progress_posts(self._conn)

    async def queued_private_tokens(self) -> list[tuple[str, int, str, float]]:
        """The queued private jobs' kept interaction tokens (job, application, token, when
        made): after a restart, their ephemeral places are edited through these alone."""
        return await journal.queued_private_tokens(self._conn)

    def queued_places(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        """The state of each of ``job_ids`` still queued, from one fair order (the walk after
        the last change serves them all) and no journal read: for refreshing their places."""
        now = self._now()
        return {
            job_id: self._placed(job_id, journal.JobStatus.QUEUED, now)
            for job_id in job_ids
            if self._scheduler.position(job_id, now) is not None
        }

    def _placed(self, job_id: str, status: journal.JobStatus, now: float) -> JobState:
        eta = self._scheduler.eta(job_id, now, not_rendering=self._waiting_to_start)
        position = self._scheduler.position(job_id, now)
        return JobState(
            status=status,
            position=position,
            eta_s=None if eta is None else max(0.0, eta - now),
            at_least=position is not None and position >= self._scheduler.config.positions_counted,
        )

    @property
    def slots(self) -> Sequence[RenderSlot]:
        return tuple(self._slots)

    def queued_count(self) -> int:
        return self._scheduler.queued_count

    def snapshot(self, limit: int | None = None) -> QueueSnapshot:
        """Running jobs with their devices, queued ones in the order they would start: the
        first ``limit`` of them (None: all, walking the whole queue), and those handed out that
        wait to start (``_wait_to_start``), which render nowhere yet."""
        snapshot = self._scheduler.snapshot(self._now(), limit)
        waiting = self._waiting_to_start
        return replace(
            snapshot,
            running=tuple(r for r in snapshot.running if r.job.job_id not in waiting),
            awaiting_check=tuple(r.job for r in snapshot.running if r.job.job_id in waiting),
        )

    async def request_of(self, job_id: str) -> RenderRequest | None:
        job = await journal.get_job(self._conn, job_id)
        return journaled_request(self._data_dir, job.request_json) if job else None

    def _now(self) -> float:
        # The scheduler needs a clock that never goes back, even if the wall clock does.
        self._last_now = self._peek_now()
        return self._last_now

    def _start_time(self) -> float:
        """The queue's time for a batch's start, after every other start of this process's
        (``_now`` stands still while the wall clock is stepped back): the journal tells a
        batch's jobs by their start (``journal.requeue_running``)."""
        self._last_start = max(self._now(), math.nextafter(self._last_start, math.inf))
        return self._last_start

    def _peek_now(self) -> float:
        """What ``_now`` would say, without moving the queue's clock on."""
        return max(self._last_now, self._clock())

    def _schedule(
        self,
        job_id: str,
        user_id: int,
        guild_id: int | None,
        request: RenderRequest,
        at: float,
        priority: PriorityClass = PriorityClass.STANDARD,
        *,
        alone: bool = False,
        started_before: bool,
    ) -> None:
        """Hand the job to the scheduler with its estimate (``_estimates``);
        ``started_before``: its member ever started a job (``FairScheduler.submit``)."""
        batch_key = request.batch_key()
        self._scheduler.submit(
            QueuedJob(
                job_id=job_id,
                user_id=user_id,
                guild_id=guild_id,
                batch_key=(*batch_key, (_ALONE, job_id)) if alone else batch_key,
                priority=priority,
                submitted_at=min(at, self._now()),
                images=request.count,
                est_seconds=self._estimate_of(job_id, request),
            ),
            started_before=started_before,
        )

    def _estimate_of(self, job_id: str, request: RenderRequest) -> float:
        """``job_id``'s estimate as reckoned at its submit or restore (``_estimates``); one
        whose end was recorded meanwhile: ``request``'s, sized without its model and picture."""
        estimate = self._estimates.get(job_id)
        return accounting.estimated_cost(request).gpu_seconds if estimate is None else estimate

    def _schedule_again(self, job: journal.JobRecord, started_before: bool) -> None:
        """Queue ``job`` again as the journal holds it: queued, its quota reserved;
        ``started_before``: as the scheduler held its member when it left the queue."""
        self._schedule(
            job.id,
            job.user_id,
            job.guild_id,
            journaled_request(self._data_dir, job.request_json),
            job.created_at,
            PriorityClass(job.priority),
            alone=_renders_alone(job),
            started_before=started_before,
        )

    def _first_model(self, device: str) -> str | None:
        """The model the job ``device`` would start first asks for (None: none is queued
        there, or it asks for the default). Peeked at the clock's time without moving the
        queue's own clock on, which submissions read."""
        first = self._scheduler.peek_batch(device, self._peek_now())
        model = first[0].model if first else None
        return model if isinstance(model, str) else None

    async def _next_batch(self, device: str) -> list[QueuedJob] | None:
        """The next fair batch for ``device``; during a burst of submissions (two within the
        window), a batch that could grow waits up to the scheduler's window for partners. A
        lone request never waits."""
        window = self._scheduler.config.batch_window_s
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        async with self._wakeup:
            while not self._stopping:
                batch = self._scheduler.peek_batch(device, self._now())
                if not batch or self._held_back(batch):
                    deadline = None
                    await self._wakeup.wait()
                    continue
                previous, latest = self._submitted_at
                burst = latest - previous < window and time.monotonic() - latest < window
                if burst and self._scheduler.could_grow(batch):
                    deadline = deadline or loop.time() + window
                    if (remaining := deadline - loop.time()) > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wakeup.wait(), remaining)
                        continue
                return self._scheduler.next_batch(device, self._now())
            return None

    def _held_back(self, batch: Sequence[QueuedJob]) -> bool:
        """Whether ``batch`` must wait for a wakeup: dispatch is paused (``SlotUnavailable``),
        a suspect (``_suspects``) renders, or ``batch`` is one (a suspect renders alone, so it
        is batched with nothing) and something else is in flight on a device or still being
        recorded (``_recording``)."""
        if self._paused:
            return True
        if not self._suspects:
            return False
        in_flight = self._running.keys() - self._waiting_to_start
        if not self._suspects.isdisjoint(in_flight | self._recording):
            return True
        busy = self._scheduler.running_count > len(self._waiting_to_start) or bool(self._recording)
        return batch[0].job_id in self._suspects and busy

    async def _dispatch(self, slot: RenderSlot) -> None:
        # A device still broken at the start (the restart did not bring it back) takes no
        # job: lost without costing one an attempt.
        if (failed := await self._probe(slot)) is not None:
            self._lose(slot.device, failed, ())
        if self._first_wait is not None:
            await self._first_wait()
        while slot.device not in self._lost:
            if (batch := await self._next_batch(slot.device)) is None:
                break
            # Before the first await: from the hand-out on, a cancel is the batch's to honour.
            if not (batch := self._wait_to_start(batch)):
                continue
            running = RunningBatch(
                tuple(job.job_id for job in batch), in_process=not isinstance(slot, BrokeredSlot)
            )
            self._running.update(dict.fromkeys(running.job_ids, running))
            self._on_device[slot.device] = running
            try:
                await self._run(slot, running)
            except Exception:
                # The jobs stay in the journal as they were; the next start retries them.
                log.exception("jobs %s: the queue could not record the outcome", running.job_ids)
            finally:
                del self._on_device[slot.device]
            async with self._wakeup:
                self._release([id_ for id_ in running.job_ids if id_ not in running.left_out])
                self._wakeup.notify_all()
        # Here, not in ``_device_lost``: an error while its jobs were put back must not keep
        # the process from stopping.
        none_left = self._lost.keys() >= {each.device for each in self._slots}
        if slot.device in self._lost and none_left and not self._told_no_device_left:
            self._told_no_device_left = True
            if self._no_device_left is not None:
                self._no_device_left()

    def _wait_to_start(self, batch: list[QueuedJob]) -> list[QueuedJob]:
        """Those of ``batch`` that may start now. Each other one (``StartGate.start_waits_for``:
        restored, its maker's standing not yet answered by Discord) waits for that out of its
        slot's way, its scheduler slot held (other members' jobs start meanwhile), then goes
        back to its place in the queue (``_queue_again``); a cancel meanwhile finds it handed
        out and not rendering, so it ends refunded whole."""
        if (gate := self._start_gate) is None:
            return batch
        ready = []
        for job in batch:
            waits_for = gate.start_waits_for(job.job_id, job.user_id, job.guild_id)
            if waits_for is None:
                ready.append(job)
                continue
            waiting = RunningBatch((job.job_id,), in_process=False)
            self._running[job.job_id] = waiting
            self._waiting_to_start[job.job_id] = asyncio.ensure_future(waits_for())
            self._in_background(self._queue_again_after(waiting))
        return ready

    async def _queue_again_after(self, waiting: RunningBatch) -> None:
        """Once the wait of ``waiting``'s one job is over, queue it again; or end it, when its
        cancel ended that wait (``Cancels``)."""
        (job_id,) = waiting.job_ids
        try:
            await self._waiting_to_start[job_id]
        except asyncio.CancelledError:
            # Easel stops (the journal says queued, for the next start), unless the job's
            # cancel ended the wait: then ``_queue_again`` ends it now.
            task = asyncio.current_task()
            if job_id not in waiting.cancelled or (task is not None and task.cancelling()):
                raise
        finally:
            del self._waiting_to_start[job_id]
        await self._queue_again(waiting, started=False)

    def _release(self, job_ids: Sequence[str]) -> None:
        """Free the scheduler's slots of a batch whose render ended. One id it does not hold
        (a bug elsewhere) is logged: it must not end the device's dispatcher."""
        for job_id in job_ids:
            self._running.pop(job_id, None)
            if job_id not in self._recording:  # else a suspect until its outcome is recorded
                self._suspects.discard(job_id)  # it ended before it rendered
            try:
                self._scheduler.finish(job_id, self._measured.pop(job_id, None))
            except KeyError:
                log.exception("job %s: released twice; the dispatcher goes on", job_id)

    async def _prepare_next(self, slot: PreparingSlot) -> None:
        """Hand ``slot`` the batch expected after the one it starts now, to prepare while it
        renders (a guess: a later submission may change the order, then it is unused)."""
        try:
            expected = self._scheduler.peek_batch(slot.device, self._now())
            jobs = [await journal.get_job(self._conn, job.job_id) for job in expected]
            requests = [journaled_request(self._data_dir, job.request_json) for job in jobs if job]
            if requests:
                slot.prepare(requests)
        except Exception:
            log.exception("could not prepare the next batch on %s", slot.device)

    async def _run(self, slot: RenderSlot, running: RunningBatch) -> None:
        now = self._start_time()
        # One statement: only the jobs still queued are marked, and only those it returns
        # render (one cancelled or erased since the hand-out is in neither).
        try:
            jobs = await self._writer.write(
                f"jobs {running.job_ids}: their start",
                lambda: journal.mark_running(
                    self._conn,
                    running.job_ids,
                    now,
                    counts_attempt=running.in_process,
                    running_still=self._running_in_journal,
                ),
            )
            self._running_in_journal.difference_update(running.job_ids)
        except aiosqlite.OperationalError:
            log.critical(
                "jobs %s: the database stayed unwritable at their start; queued again",
                running.job_ids,
            )
            await self._queue_again(running)
            return
        # Before the render is under way: a cancel meanwhile still leaves its job out.
        refused = await self._refused_at_start(jobs)
        # No await from here to the render's start: a job cancelled until now stays out of it,
        # refunded whole (it used no device time), and so does one the rules of now refuse.
        running.rendering = True
        cancelled = {job.id: running.why[job.id] for job in jobs if job.id in running.cancelled}
        ended = refused | cancelled  # a job cancelled is told so, whatever the rules say
        running.left_out.update(ended)
        jobs = [job for job in jobs if job.id not in running.left_out]
        if ended:
            for job_id in ended:
                self._running.pop(job_id, None)  # a second cancel finds it ended: FINISHED
            self._in_background(self._leave_out(ended))
        if not jobs:
            return
        requests = [journaled_request(self._data_dir, job.request_json) for job in jobs]
        running.started_render(
            {job.id: request for job, request in zip(jobs, requests, strict=True)}
        )
        for job in jobs:
            if job.id not in self._requeued:  # one sample of its wait: until it first started
                metrics.job_started(now - job.created_at)
            log.info(
                "job %s started on %s",
                job.id,
                slot.device,
                extra=job_event(job.id, "started", kind=job.kind, device=slot.device),
            )
        await self._render(slot, running, jobs, requests)

    async def _refused_at_start(self, jobs: Sequence[journal.JobRecord]) -> dict[str, str]:
        """Those of ``jobs`` the start gate refuses, with why. Rules it cannot read now let a
        job render: its delivery asks them again."""
        gate, refused = self._start_gate, {}
        if gate is None:
            return {}
        for job in jobs:
            try:
                why = await gate.why_not_started(await self._delivery.finished(job))
            except Exception:
                log.exception("job %s: the rules of now were not read at its start", job.id)
                continue
            if why is not None:
                refused[job.id] = why
        return refused

    async def _leave_out(self, ended: dict[str, str]) -> None:
        """Jobs ended before their batch's render started (the value: their recorded error,
        "cancelled" or the start gate's why): their member's and server's slots are free at
        once (not once their partners rendered), and they are refunded."""
        async with self._wakeup:
            self._release(tuple(ended))
            self._wakeup.notify_all()
        for job_id, error in ended.items():
            # One the rules of now ended (their why in place of "cancelled") had no stop
            # asked: kept, it is judged again at the next start. One whose maker was stopped
            # (``STOPPED_BEFORE_ITS_START``) has its ask written first, as a stop's cancel.
            # Imposed, unless a stop's ask recorded its stopper first (a member's, a
            # moderator's cancel: ``Cancels.cancel``).
            await self._ends.end_cancelled(
                job_id,
                error,
                ask_first=error == "cancelled",
                stopped_by=journal.StoppedBy.IMPOSED,
            )

    async def _queue_again(
        self,
        running: RunningBatch,
        *,
        started: bool = True,
        as_suspects: Sequence[journal.JobRecord] = (),
    ) -> None:
        """The jobs of ``running`` did not start (the journal stayed unwritable at their start:
        ``JournalWriter.write``; or their slot could not hand them over: ``SlotUnavailable``,
        or they waited for what their start waits for: ``_wait_to_start``, both ``started``
        False, so their members and servers get back the turns their hand-out took), and
        the journal says queued: they wait in the queue again at their places (a cancel finds
        them), and a next start finds them queued if this process ends first. One cancelled
        meanwhile is ended as such; one left out of the render already was. Those of
        ``as_suspects`` (as the journal holds them, their attempt counted) are queued as
        ``start`` queues a job a dead process left running: alone, a suspect."""
        put_back = self._scheduler.requeue if started else self._scheduler.put_back_unstarted
        suspects = {job.id: job for job in as_suspects}
        async with self._wakeup:
            # Read under the lock, with no await before the requeue: a cancel landing while
            # this waited for it finds the job in its batch, and is honoured here.
            cancelled = {
                job_id: running.why[job_id]
                for job_id in running.cancelled
                if job_id not in running.left_out
            }
            for job_id in running.job_ids:
                if job_id in running.left_out:
                    continue
                self._running.pop(job_id, None)
                if job_id in cancelled:
                    continue
                if (job := suspects.get(job_id)) is None:
                    put_back(job_id)
                    continue
                started_before = self._scheduler.started_before(job.user_id)
                self._scheduler.finish(job_id)
                self._suspects.add(job_id)
                self._schedule_again(job, started_before)
            running.left_out.update(running.job_ids)  # requeued or ended here: not released
            self._wakeup.notify_all()
        if cancelled:
            self._in_background(self._leave_out(cancelled))

    async def _not_handed_over(self, running: RunningBatch, unavailable: SlotUnavailable) -> None:
        """``running``'s slot could not hand its jobs over (``SlotUnavailable``): they did not
        start, so they are queued again, their attempts given back, and no batch starts until
        the slot answers. A job is failed only by its own render, never by an outage."""
        log.warning("jobs %s not started: %s; queued again", running.job_ids, unavailable)
        self._pause_until_answered(unavailable.probe)
        await self._put_back(running, give_back_attempt=running.in_process, started=False)

    async def _probe(self, slot: RenderSlot) -> Exception | None:
        """What ``slot``'s device raised at its probe (``ProbingSlot.probe``) when that says
        it is lost (``device_lost``); None while it computes, or when it cannot say (no probe;
        an error not the device's, as an engine that cannot be built: its jobs fail as ever)."""
        if not isinstance(slot, ProbingSlot):
            return None
        failed = await slot.probe()
        return failed if failed is not None and device_lost(failed) else None

    def _lose(self, device: str, error: BaseException, job_ids: Sequence[str]) -> None:
        """``device`` is gone: its slot takes no more work (``_dispatch``); logged once."""
        if device in self._lost:
            return
        self._lost[device] = lost_reason(device, error)
        log.critical(
            "%s; it takes no more jobs%s; a new process gets it back",
            self._lost[device],
            f", its jobs {tuple(job_ids)} are queued again" if job_ids else "",
            exc_info=error,
        )

    async def _device_lost(
        self,
        slot: RenderSlot,
        running: RunningBatch,
        jobs: Sequence[journal.JobRecord],
        error: Exception,
        failed_s: float | None,
    ) -> None:
        """``slot``'s device is gone (its render raised, then its probe: ``_probe``): not the
        jobs' failure. They are queued again as suspects, as a start queues the jobs a dead
        process left running, each to render alone with nothing else in flight. A job lost
        alone spends the attempt, so one that kills every device it renders on ends after
        ``MAX_RENDER_ATTEMPTS`` (failed as any other, refunded); jobs lost together spend
        none, since which of them killed it is not known, and render alone from then on, in
        the journal too (``queue_again``'s ``renders_alone``): a batch-mate of a poison job
        loses no attempt to it. One failed pays its member's fair share ``failed_s`` (its
        render's time, ``_failure_seconds``). The slot takes no more work (``_dispatch``)."""
        together = len(jobs) > 1
        spent = [
            job.id
            for job in jobs
            if not together
            and job.attempts >= MAX_RENDER_ATTEMPTS
            and job.id not in running.cancelled
        ]
        back = [job_id for job_id in running.job_ids if job_id not in {*spent, *running.cancelled}]
        self._lose(slot.device, error, back)
        if spent:
            running.left_out.update(spent)
            if failed_s is not None:  # alone (spent only so): the render's time was its own
                self._measured.update(dict.fromkeys(spent, failed_s))
            async with self._wakeup:
                self._release(spent)
                self._wakeup.notify_all()
            for job_id in spent:
                await self._fail(job_id, error, slot.device)
        await self._put_back(
            running, give_back_attempt=together, as_suspects=jobs, renders_alone=together
        )

    async def _put_back(
        self,
        running: RunningBatch,
        *,
        give_back_attempt: bool,
        as_suspects: Sequence[journal.JobRecord] = (),
        renders_alone: bool = False,
        started: bool = True,
    ) -> None:
        """The jobs of ``running`` not left out go back to the queue, in the journal (their
        attempt given back when ``give_back_attempt``, each to render alone from then on
        with ``renders_alone``) and here (those of ``as_suspects`` as ``_queue_again``
        says; their members' and servers' turns given back unless ``started``)."""
        running.rendering = False  # one cancelled meanwhile did not start: refunded whole
        not_started = [job_id for job_id in running.job_ids if job_id not in running.left_out]
        try:
            await self._writer.write(
                f"jobs {not_started}: queued again",
                lambda: journal.queue_again(
                    self._conn,
                    not_started,
                    attempt_counted=give_back_attempt,
                    renders_alone=renders_alone,
                ),
            )
        except aiosqlite.OperationalError:
            # Queued here all the same: out of both the scheduler and the running batches, a
            # job would wait for the next start, and a cancel would find it ended. Their next
            # start here marks them running from running (a start that counts attempts counts
            # one more); a stop meanwhile leaves them running, and the next start requeues them.
            log.critical("jobs %s: their 'queued again' was not recorded", not_started)
            self._running_in_journal.update(not_started)
        for job_id in not_started:  # its "started" was logged: the log says it did not
            self._requeued.add(job_id)
            log.info("job %s queued again", job_id, extra=job_event(job_id, "requeued"))
        await self._queue_again(running, started=started, as_suspects=as_suspects)

    def _pause_until_answered(self, probe: Callable[[], Awaitable[bool]]) -> None:
        """Start no batch until ``probe`` says the slot that could not hand its jobs over
        answers again (every slot: they share the broker)."""
        if not self._paused:
            self._paused = True
            self._in_background(self._resume_once_answered(probe))

    async def _resume_once_answered(self, probe: Callable[[], Awaitable[bool]]) -> None:
        """Ask ``probe`` after each wait of ``UNAVAILABLE_PROBE_WAITS_S``'s backoff until it
        answers (or the queue stops), then let the dispatchers start batches again."""
        wait, longest = UNAVAILABLE_PROBE_WAITS_S
        log.warning("dispatch paused: the jobs' broker does not answer; asked in %.0f s", wait)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), wait)
            if self._stopping:
                return
            try:
                answered = await probe()
            except Exception:
                log.exception("the broker's probe raised; asked again later")
                answered = False
            if answered:
                break
            wait = min(2 * wait, longest)
            log.info("the jobs' broker still does not answer; asked again in %.0f s", wait)
        log.warning("dispatch resumed: the jobs' broker answers again")
        async with self._wakeup:
            self._paused = False
            self._wakeup.notify_all()

    async def _render(
        self,
        slot: RenderSlot,
        running: RunningBatch,
        jobs: Sequence[journal.JobRecord],
        requests: list[RenderRequest],
    ) -> None:
        """Render the ``jobs`` of ``running``, marked running, and record each one's
        outcome."""
        ids = tuple(job.id for job in jobs)
        started = time.perf_counter()
        if isinstance(slot, PreparingSlot):
            # It starts once the render below is on the device: nothing delays the render.
            self._in_background(self._prepare_next(slot))
        try:
            if len(ids) == 1:
                results = [
                    await slot.render(
                        requests[0], self._progress_for(ids, running), running.stop, job_id=ids[0]
                    )
                ]
            else:
                assert isinstance(slot, BatchRenderSlot)
                results = await slot.render_batch(
                    requests, self._progress_for(ids, running), running.stop, job_ids=ids
                )
        except SlotUnavailable as unavailable:
            await self._not_handed_over(running, unavailable)
        except RenderCancelled as stop:
            # Stopped while running: no pictures; an owner who chose the stop pays the device
            # time until it (as the slot measured it, when it did: RenderStoppedAfter). One
            # stopped in a shared render before the last stop pays until its own.
            ended = time.perf_counter()
            elapsed = stop.used_s if isinstance(stop, RenderStoppedAfter) else ended - started
            used = _shares(elapsed, requests, [request.count for request in requests])
            stops = running.stops(started, ended)
            for job_id, used_s in zip(ids, used, strict=True):
                if job_id in running.left_out:  # ended at its stop (``_stopped_in_batch``)
                    continue
                self._measured[job_id] = used_s
                # Not cancelled (Easel stops): refunded whole.
                if (stopped := stops.get(job_id)) is None:
                    await self._ends.end_cancelled(job_id, "cancelled")
                else:
                    await self._ends.end_cancelled(job_id, stopped.why, stopped.charge(used_s))
        except PartlyRendered as partly:
            # A job whose pictures came out blank fails alone, refunded and told: the rows of
            # one call do not mix, so alone it would come out blank again, at the device's
            # cost. Its partners' pictures are delivered as the batch rendered them.
            failed = {ids[index]: error for index, error in partly.failures.items()}
            rendered = [partly.rendered.get(index, []) for index in range(len(ids))]
            self._rendered(slot, running, jobs, requests, rendered, started, failed)
        except Exception as error:
            failed_s = _failure_seconds(error, running, time.perf_counter() - started)
            # The same errors come from a launch too big for its batch, which leaves the
            # device sound: only a failed probe says it is lost.
            if running.in_process and device_lost(error) and await self._probe(slot) is not None:
                await self._device_lost(slot, running, jobs, error, failed_s)
                return
            if len(ids) == 1:
                if failed_s is not None:  # its member's fair share pays it (``_release``)
                    self._measured[ids[0]] = failed_s
                await self._fail(ids[0], error, slot.device)
                return
            # One job's bad input must not fail the jobs batched with it (nor show them its
            # error): each renders again alone, so only the culprit fails.
            # The class alone: a member's bad input may quote their prompt, and the culprit's
            # own failure is logged (or told) as it renders alone.
            log.warning(
                "batch %s failed on %s (%s); rendering it job by job",
                ids,
                slot.device,
                type(error).__name__,
            )
            running.rendering = False  # a job cancelled while it waits for its turn is refunded
            for job, request in zip(jobs, requests, strict=True):
                if job.id in running.left_out:  # ended at its stop (``_stopped_in_batch``)
                    continue
                if job.id in running.cancelled:
                    await self._ends.end_cancelled(job.id, running.why[job.id])
                else:
                    alone = RunningBatch((job.id,), in_process=running.in_process, rendering=True)
                    self._running[job.id] = alone
                    if slot.device in self._lost:  # lost meanwhile: the rest go to another
                        await self._put_back(alone, give_back_attempt=True)
                    else:
                        await self._render(slot, alone, (job,), [request])
                    running.left_out.update(alone.left_out)  # queued again: not released
        else:
            self._rendered(slot, running, jobs, requests, results, started)
        finally:
            # A cancel from now on is too late (FINISHED): the scheduler holds no queued job.
            for job_id in ids:
                self._running.pop(job_id, None)

    def _rendered(
        self,
        slot: RenderSlot,
        running: RunningBatch,
        jobs: Sequence[journal.JobRecord],
        requests: list[RenderRequest],
        results: list[list[RenderedImage]],
        started: float,
        failed: Mapping[str, RenderFailed] | None = None,
    ) -> None:
        """The render of ``jobs``, begun at ``started``, ended with ``results`` (none for the
        jobs ``failed``, each with why): they are stored, charged and delivered in the
        background, while the slot, free now, renders its next batch."""
        ended = time.perf_counter()
        waited = ended - started  # a remote slot's: the broker's wait too
        ran = sum(steps_run(images) for images in results)
        metrics.render_finished(requests[0].model, slot.device, ran, waited)
        elapsed = _device_seconds(results, waited)
        pictures = [
            request.count if job.id in (failed or {}) else len(rendered)
            for job, request, rendered in zip(jobs, requests, results, strict=True)
        ]
        used = _shares(elapsed, requests, pictures)
        cancelled = running.stops(started, ended)
        # Those ended at their stop (``_stopped_in_batch``) keep their share of ``elapsed``
        # (their partners pay only their own), and nothing more of them is recorded.
        kept = [index for index, job in enumerate(jobs) if job.id not in running.left_out]
        jobs = [jobs[index] for index in kept]
        requests = [requests[index] for index in kept]
        results = [results[index] for index in kept]
        used = [used[index] for index in kept]
        self._measured.update((job.id, used_s) for job, used_s in zip(jobs, used, strict=True))
        self._recording.update(job.id for job in jobs)
        self._in_background(
            self._finish_rendered(
                jobs, requests, results, cancelled, used, failed or {}, slot.device
            )
        )

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _settle_background(self, grace_s: float) -> None:
        """Wait until no background work is left (work started meanwhile included: a lane a
        finishing batch opens) or ``grace_s`` ran out; then cancel what is left and wait for
        it to end, so nothing posts once the client and the database are closed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self._finishing and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._finishing), timeout=remaining)
        while self._finishing:  # a task cancelled may start another as it ends
            left = set(self._finishing)
            for task in left:
                task.cancel()
            await asyncio.wait(left)

    async def _finish_rendered(
        self,
        jobs: Sequence[journal.JobRecord],
        requests: list[RenderRequest],
        results: list[list[RenderedImage]],
        cancelled: Mapping[str, Stop],
        used: Sequence[float],
        failed: Mapping[str, RenderFailed],
        device: str,
    ) -> None:
        """Store, charge and deliver the jobs of a rendered batch (none ended at its stop:
        ``_rendered``); one ``cancelled`` while it rendered gets no pictures, and its share of
        the render's time (``used``) until its stop is charged when its owner chose the stop
        (``Stop.charge``), else refunded whole. One ``failed`` on ``device`` (its pictures
        came out blank) ends failed, refunded and told: its share is charged to no one, its
        partners pay their own.

        Recorded one job after another, each in its own transaction (their partners' failures
        are not theirs). Delivered once all are recorded, each in its lane's turn
        (``Delivery.in_turn``): one member's upload to Discord never waits for another's."""
        recorded: list[tuple[journal.JobRecord, bytes | None]] = []
        try:
            for job, request, rendered, used_s in zip(jobs, requests, results, used, strict=True):
                try:
                    if job.id in cancelled:
                        # One the journal refuses is kept for the sweep, which posts its notice.
                        stop = cancelled[job.id]
                        if await self._ends.record_cancel(job.id, stop.why, stop.charge(used_s)):
                            recorded.append((job, None))
                    elif job.id in failed:
                        # Only recorded here: its notice is delivered with the others.
                        told = self._failure_told(job.id, failed[job.id], device)
                        if await self._ends.failure_recorded(job.id, told):
                            recorded.append((job, None))
                    elif ended := await self._ends.record_success(
                        job.id, request, rendered, used_s
                    ):
                        recorded.append((job, ended.composed))
                    # Else kept: the sweep writes and delivers it (``JobEnds.retry_kept``).
                except Exception:
                    # Running in the journal still (its pictures kept): the next start renders
                    # it again, or ends it if a stop was asked of it too late
                    # (``Cancels._forget_ask``). Its partners are recorded and delivered.
                    log.critical(
                        "job %s: its outcome was not recorded; the next start renders it "
                        "again, or ends it, refunded, if its stop was asked",
                        job.id,
                        exc_info=True,
                    )
        finally:
            await self._recorded(job.id for job in jobs)
        results.clear()  # the pixels are not held while the uploads run
        await asyncio.gather(*await self._delivery.in_turn(recorded))

    async def _recorded(self, job_ids: Iterable[str]) -> None:
        """The outcomes of ``job_ids`` are recorded (or will not be in this process): they are
        no longer suspects, and a suspect held back for them may start."""
        async with self._wakeup:
            for job_id in job_ids:
                self._recording.discard(job_id)
                self._suspects.discard(job_id)
            self._wakeup.notify_all()

    def _progress_for(
        self, job_ids: Sequence[str], running: RunningBatch
    ) -> Callable[[StepProgress], None]:
        """The render's reports, each to the job it names (``StepProgress.request_index``):
        members batched together (other servers, private jobs) never see each other's
        pictures. A batch's report that names no job is every job's step count, without its
        preview. None reaches a job of ``running`` cancelled: its member saw it end (its
        batch may render on for the others). Each, listened to or not, notes that device
        work began (``RunningBatch.steps_seen``)."""
        listener = self._progress

        def tell(job_id: str, step: StepProgress) -> None:
            if listener is not None and job_id not in running.cancelled:
                listener(job_id, step)

        def report(step: StepProgress) -> None:
            running.steps_seen = True
            if len(job_ids) == 1:
                tell(job_ids[0], step)
            elif step.request_index is not None:
                tell(job_ids[step.request_index], step)
            else:
                for job_id in job_ids:
                    tell(job_id, replace(step, preview=None))

        return report

    async def _stopped_in_batch(self, job_id: str, charged: bool, imposed: bool) -> bool:
        """Job ``job_id`` was stopped while its batch renders on for others' jobs (one
        rendered here: a broker's slot renders one job at a time): its listener shows it
        ended at once, and it ends at once: left out of its batch before any await (the
        render's end, a device lost, a put back skip it), its scheduler slot freed, its end
        written, charged ``RunningBatch.charge_at_stop`` (free should a stop be imposed
        meanwhile), and its notice delivered (a refused
        end kept for the sweep, as any cancel's). A stop ``imposed`` on its owner tries its
        end once (``Cancels.cancel``: a ban's must not wait minutes for a busy database).
        Whether its owner was charged, as its end was written (or kept)."""
        if self._stopped_listener is not None:
            self._stopped_listener(job_id, charged)
        running = self._running[job_id]  # ``Cancels._stop_running`` calls this before any await
        running.left_out.add(job_id)
        # The scheduler is paid as measured (``FairScheduler.finish``), as the render's end pays.
        self._measured[job_id] = running.share_until_stop(job_id)
        self._release([job_id])
        async with self._wakeup:
            self._wakeup.notify_all()

        charged_s: float | None = None

        def charge() -> float | None:
            # Read as its end commits: a stop imposed while it is written (a ban's) makes it
            # free, as a refund wins (``RunningBatch.cancel``). The last read is what was paid.
            nonlocal charged_s
            imposed_since = self._cancels.imposed_meanwhile(job_id)
            charged_s = None if imposed_since else running.charge_at_stop(job_id)
            return charged_s

        await self._ends.end_cancelled(job_id, running.why[job_id], charge, retried=not imposed)
        return charged_s is not None

    async def _fail(self, job_id: str, error: Exception, device: str) -> None:
        """End a job whose render failed with ``error``: its member told."""
        await self._ends.finish_unsuccessfully(job_id, self._failure_told(job_id, error, device))

    def _failure_told(self, job_id: str, error: Exception, device: str) -> str:
        """What the member of ``job_id``, failed with ``error`` on ``device``, is told; its
        reason is kept for its ``failed`` line (``_ended``)."""
        told, self._failed_because[job_id] = _failure(error, job_id, device)
        return told

    def _ended(self, job_id: str, outcome: str) -> None:
        """Count and log a job's end: done, failed or cancelled (its error is the member's
        to read, not the log's: it may quote the prompt)."""
        kind = self._kinds.pop(job_id, "unknown")
        self._estimates.pop(job_id, None)
        self._unfinished.ended(job_id)
        self._requeued.discard(job_id)
        self._running_in_journal.discard(job_id)
        metrics.job_ended(kind, outcome)
        because = self._failed_because.pop(job_id, "unstored")
        if outcome == "failed":
            event = job_event(job_id, outcome, kind=kind, reason=because)
            log.info("job %s failed (%s)", job_id, because, extra=event)
        else:
            log.info("job %s %s", job_id, outcome, extra=job_event(job_id, outcome, kind=kind))
        if self._chores is not None:
            self._chores.owed()
