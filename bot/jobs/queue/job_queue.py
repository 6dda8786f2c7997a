"""The job queue: journal in SQLite, fair scheduling, one dispatcher per render slot.

A job is written to the journal (with its quota reservation, in one transaction) before anyone
is told it was accepted; a start replays the journal (running jobs are queued again, finished
but undelivered results are delivered: ``Delivery``). A failed job, or one cancelled before it
started, is refunded; a finished one is charged the GPU time it really took, and one its owner
cancelled while running the GPU time it took until it stopped (no pictures; an admin's or a
ban's stop is refunded whole: ``JobQueue.cancel``); those ends are ``JobEnds``' to record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiosqlite

from bot import metrics
from bot.jobs import accounting
from bot.jobs.accounting import QuotaExceeded
from bot.jobs.queue.broker_chores import BrokerChores
from bot.jobs.queue.delivery import Delivery, DeliveryRetries
from bot.jobs.queue.ends import JobEnds
from bot.jobs.queue.journal_writes import JOURNAL_RETRY_WAITS_S, JournalWriter
from bot.jobs.queue.slots import (
    BatchRenderSlot,
    BrokeredSlot,
    JobCopies,
    PreparingSlot,
    RenderSlot,
    RenderStoppedAfter,
    SlotUnavailable,
    WarmingSlot,
)
from bot.jobs.queue.unfinished import UnfinishedJobs
from bot.jobs.queue.values import (
    CancelOutcome,
    JobState,
    ProgressListener,
    ResultSink,
    StartGate,
    Submission,
)
from bot.jobs.scheduler import (
    FairScheduler,
    PriorityClass,
    QueuedJob,
    QueueSnapshot,
    SchedulerConfig,
)
from bot.logging_setup import job_event
from bot.policy.queue_bound import QueueBoundRefusal
from bot.policy.quota import DEFAULT_LIMITS, QuotaLimits, RelaxRefusal
from bot.user_errors import Reason, UserError
from db import jobs as journal
from db import quotas as ledger
from db.database import transaction
from inference.types import (
    RenderCancelled,
    RenderedImage,
    RenderFailed,
    RenderInputError,
    RenderRequest,
    StepProgress,
)

log = logging.getLogger(__name__)

_UNFINISHED = frozenset({journal.JobStatus.QUEUED, journal.JobStatus.RUNNING})
# Stop waiting for a running render after this long on shutdown; the journal requeues it,
# and that render is no attempt (``MAX_RENDER_ATTEMPTS``): the process ended it, not the job.
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
# While a slot cannot hand jobs over (``SlotUnavailable``) it is asked again after the first
# wait, then after each wait doubled up to the last: a broker restart takes seconds, an outage
# may take hours.
UNAVAILABLE_PROBE_WAITS_S = (1.0, 30.0)


@dataclass
class _RunningBatch:
    """Jobs a slot was handed together, from the scheduler's hand-out (before the journal says
    running) until their render ends. A cancel meanwhile is the batch's to honour, never a
    refund of a job the slot renders anyway: a job cancelled before the render starts is left
    out of it; the render stops once every one of them is cancelled."""

    job_ids: tuple[str, ...]
    # Its slot renders in this process: marking its jobs running counts a render attempt.
    in_process: bool = True
    # Its render is under way: a job cancelled before is left out of it, refunded whole.
    rendering: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    # Each cancelled job: whether its owner pays the GPU time it used (they chose the stop).
    cancelled: dict[str, bool] = field(default_factory=dict)
    # Jobs left out of the render: their scheduler slots were freed when it started.
    left_out: set[str] = field(default_factory=set)

    def cancel(self, job_id: str, *, owner_pays: bool) -> bool:
        """Whether the job's owner will pay the GPU time it used: it renders, and they chose
        the stop."""
        # A refund wins: one cancel the owner did not choose (a ban) makes the stop free.
        self.cancelled[job_id] = self.cancelled.get(job_id, True) and owner_pays
        if self.cancelled.keys() >= set(self.job_ids):
            self.stop.set()
        return self.rendering and self.cancelled[job_id]


def _cancel_charge(owner_pays: bool | None, used_s: float) -> float | None:
    """The GPU seconds a cancelled job is charged: those it used when its owner chose to stop
    it; None (refunded whole) when someone else stopped it or it used none."""
    return used_s if owner_pays and used_s > 0 else None


def _shares(seconds: float, pictures: Sequence[int]) -> list[float]:
    """A batch's GPU ``seconds`` shared by its jobs in proportion to their ``pictures``."""
    total = sum(pictures) or 1
    return [seconds * count / total for count in pictures]


def _not_cancelled(job_id: str) -> UserError:
    """What the member is told of a cancel the journal refused."""
    return UserError(
        f"Job `{job_id}` was not cancelled: Easel's database is busy. Try again in a minute.",
        Reason.BUSY,
    )


def _failure(error: Exception, job_id: str, device: str) -> str:
    """What the member of a job that failed with ``error`` is told."""
    if isinstance(error, RenderInputError):
        return str(error)
    if isinstance(error, RenderFailed):
        log.warning("job %s failed on %s: %s", job_id, device, error)
        return f"{error}; reference {job_id}"
    log.error("job %s failed on %s", job_id, device, exc_info=error)
    return f"internal error ({type(error).__name__}); reference {job_id}"


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
    ) -> None:
        self._conn = conn
        self._writer = JournalWriter(journal_retry_waits)
        # What the broker's copies of ended jobs still need (``broker_chores``), when renders
        # run on one.
        self._chores = (
            None if copies is None else BrokerChores(conn, copies, clock, UNAVAILABLE_PROBE_WAITS_S)
        )
        self._dm_limits = dm_limits  # the quota in direct messages (settings: EASEL_DM_*)
        self._max_queued = max_queued_per_member  # EASEL_MAX_QUEUED_PER_MEMBER; 0: no bound
        self._slots = list(slots)
        self._images_dir = images_dir
        self._clock = clock
        self._last_now = 0.0
        # Batches only as big as every slot can render in one call (remote slots: one job).
        max_batch = min(
            (slot.max_batch if isinstance(slot, BatchRenderSlot) else 1 for slot in self._slots),
            default=1,
        )
        self._scheduler = FairScheduler(
            scheduler_config or SchedulerConfig(max_batch=max_batch),
            devices=[slot.device for slot in self._slots],
        )
        # The two latest submission times: a burst is two arrivals within the batch window.
        self._submitted_at = (-1e9, -1e9)
        self._wakeup = asyncio.Condition()
        self._running: dict[str, _RunningBatch] = {}
        # Jobs a previous process died while rendering (``start``), until they render: each
        # renders with nothing else in flight on any device, so that a job that takes the
        # process down again costs no other job an attempt (``MAX_RENDER_ATTEMPTS``).
        self._suspects: set[str] = set()
        # Jobs rendered whose outcome is still being recorded (pictures encoded and stored,
        # ``mark_done``): the journal says running, so a crash meanwhile counts them an attempt,
        # and a suspect waits until this is empty; one in it is still a suspect.
        self._recording: set[str] = set()
        # Jobs queued again after a start that did not happen (``_queue_again``), until they
        # end: their next start logs "started" again, but adds no second queue-wait sample.
        self._requeued: set[str] = set()
        # Jobs queued here whose start did not happen while the journal refused to say so
        # (``_not_handed_over``): it says running, and their next start here marks them so.
        self._running_in_journal: set[str] = set()
        # Queued jobs whose cancel is being written (``cancel``): out of the scheduler
        # meanwhile, so a second click is told so, not that the job ended.
        self._cancelling: set[str] = set()
        # Those of them a stop was imposed on meanwhile (a ban's): their cancel, refused, ends
        # them all the same rather than queues them again.
        self._imposed_meanwhile: set[str] = set()
        # Set while a slot cannot hand jobs over (``SlotUnavailable``): no batch starts.
        self._paused = False
        # The kind of each job not yet ended, for the metrics that count jobs by kind.
        self._kinds: dict[str, str] = {}
        # Each member's jobs not yet ended, for the queue bound's check before the
        # acknowledgement (``quota_refusal``): counted without a read of SQLite.
        self._unfinished = UnfinishedJobs()
        metrics.watch_queue_depth(self.queued_count)
        self._dispatchers: list[asyncio.Task[None]] = []
        # Rendered batches being stored, charged and delivered while their slot renders on.
        self._finishing: set[asyncio.Task[None]] = set()
        self._start_gate: StartGate | None = None
        self._progress: ProgressListener | None = None
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

    def set_sink(self, sink: ResultSink) -> None:
        self._delivery.set_sink(sink)

    def set_start_gate(self, gate: StartGate) -> None:
        """Asked about each job as its batch starts: one it refuses uses no GPU time."""
        self._start_gate = gate

    def set_progress_listener(self, listener: ProgressListener) -> None:
        """``listener(job_id, step)`` is called on the event loop after each sampling step."""
        self._progress = listener

    async def start(
        self, before_delivery: Callable[[], Coroutine[Any, Any, None]] | None = None
    ) -> None:
        """Replay the journal, then start one dispatcher per slot.

        ``before_delivery``: what must decide about the restored jobs once they are queued
        again and before any is delivered or rendered (``bot.bans``: members banned, kicked or
        timed out while Easel was offline); it may cancel them."""
        await self._settle_ended()
        requeued, spent = await journal.requeue_running(self._conn, MAX_RENDER_ATTEMPTS)
        if requeued:
            log.info("requeued %d job(s) left running by a previous process", requeued)
        for job_id in spent:  # delivered with the jobs finished undelivered, below
            log.error("job %s: Easel stopped during each of its renders; failed", job_id)
            await self._ends.record_failure(
                job_id,
                f"failed after {MAX_RENDER_ATTEMPTS} tries: Easel stopped while rendering it "
                f"each time, so it is not rendered again; reference {job_id}",
            )
        queued = await journal.jobs_with_status(self._conn, journal.JobStatus.QUEUED)
        for replayed, job in enumerate(queued):
            if replayed and replayed % REPLAYED_AT_ONCE == 0:
                await asyncio.sleep(0)  # the health check and web pages answer meanwhile
            request = RenderRequest.from_json(job.request_json)
            self._kinds[job.id] = job.kind
            self._unfinished.add(job.id, (job.user_id, job.guild_id), request.count)
            if job.cancel_asked_at is not None:
                # Its stop was asked (``_ask_stop``) and its end not written before the stop:
                # ended now, refunded whole (the GPU time it used was not journaled), and
                # delivered with the ended jobs below. Tried once: a database held by another
                # writer must not delay the login by minutes per job; one it refuses is kept
                # for the sweep, and not rendered.
                await self._ends.record_cancel(job.id, "cancelled", retried=False, ask_first=False)
                continue
            priority = PriorityClass(job.priority)
            if job.attempts > 0:
                self._suspects.add(job.id)
            # Started before, by a process that died: alone, so no partner dies with it again.
            self._schedule(
                job.id,
                job.user_id,
                job.guild_id,
                request,
                job.created_at,
                priority,
                alone=job.attempts > 0,
            )
        if before_delivery is not None:
            await before_delivery()
        # In the background, each in its lane's turn: one may wait for Discord (the delivery
        # gate's checks), and the start must not hold the gateway's connection for it.
        restored = await journal.finished_undelivered(self._conn)
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

    async def stop(self) -> None:
        """Take no new work; let running renders finish (bounded), then close the slots.

        A render still running after the grace period is abandoned: its journal row stays
        ``running`` and the next start queues it again, its attempt given back (the job did
        not end the process). So is a post still running (or waiting for its turn) after
        another grace period: the next start posts it.
        """
        self._stopping = True
        self._stop_requested.set()
        async with self._wakeup:
            self._wakeup.notify_all()
        abandoned: list[str] = []
        if self._dispatchers:
            _, still_running = await asyncio.wait(self._dispatchers, timeout=SHUTDOWN_GRACE_S)
            # Read before the cancels: each batch leaves ``_running`` as its task ends.
            abandoned = [job_id for job_id, batch in self._running.items() if batch.in_process]
            for task in still_running:
                task.cancel()
        # The posts, then the broker's chores, share one grace: with the renders' the stop
        # takes 30 s at most (SIGTERM's bound); chores left over wait for the next start.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHUTDOWN_GRACE_S
        await self._settle_background(SHUTDOWN_GRACE_S)
        if self._chores is not None:  # once the last ends are recorded
            await self._chores.stop(max(0.0, deadline - loop.time()))
        # After the cancels: a start a cancelled task was marking is journaled before this
        # (the connection runs its statements in order).
        await journal.give_back_attempts(self._conn, abandoned)
        for slot in self._slots:
            await asyncio.to_thread(slot.close)

    async def submit(self, submission: Submission) -> str:
        """Reserve quota and journal the job, then queue it; returns its id once it cannot be
        lost. Raises ``QuotaExceeded`` (nothing written) when the member's limits say no.

        While the queue stops, a submission is still journaled: the next start runs it."""
        job_id = uuid.uuid4().hex[:16]
        created_at = self._now()
        async with transaction(self._conn):
            refusal = await accounting.admit(
                self._conn,
                job_id,
                submission.member,
                submission.request,
                created_at,
                self._dm_limits,
                max_queued=self._max_queued,
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
                        priority=int(submission.priority),
                        private=submission.private,
                        age_restricted=submission.age_restricted,
                    ),
                )
        if refusal is not None:
            raise QuotaExceeded.of(refusal)  # counted where the member is told
        self._kinds[job_id] = submission.kind
        member = (submission.user_id, submission.guild_id)
        self._unfinished.add(job_id, member, submission.request.count)
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
                created_at,
                submission.priority,
            )
            self._wakeup.notify_all()
        return job_id

    async def quota_refusal(self, submission: Submission, jobs: int = 1) -> QuotaExceeded | None:
        """Why the member's limits, the queue bound or the relax caps would refuse this
        submission now, or None (reads only: nothing counted, the caller may never tell it,
        ``bot.refusals.quota_refused``); ``jobs``: how many jobs its pictures are split into
        (``--repeat``).

        For answering before the interaction is deferred, so a refusal can be ephemeral:
        from memory once warm, a refusal confirmed in SQLite; ``submit`` checks again,
        atomically, and stays the authority."""
        refusal = await accounting.refusal_for(
            self._conn,
            submission.member,
            submission.request,
            self._now(),
            self._dm_limits,
        )
        if refusal is not None:
            return QuotaExceeded.of(refusal)
        waiting = await self._unfinished_refusal(submission.member, submission.request, jobs)
        return None if waiting is None else QuotaExceeded.of(waiting)

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

    async def cancel(
        self, job_id: str, by: accounting.Member, *, imposed: bool = False
    ) -> CancelOutcome:
        """Cancel a queued job (refunded, the owner is told) or stop a running one.

        ``by`` acts where they are: a job of another guild (or of DMs) is answered as unknown,
        so its existence does not leak; there only its owner or an admin may cancel it.

        Who pays for a stop: a running job its owner stops themselves is charged the GPU time
        it used (no pictures); one an admin stops (another member's job), or whose stop is
        ``imposed`` on its owner (a ban: they did not choose it), or that was handed to its
        device but not yet rendering, is refunded whole: STOPPING_FREE tells it from STOPPING.

        A job whose cancel the journal never takes (``JournalWriter.write``) is not cancelled:
        a queued one stays queued here, a running one renders on (``_ask_stop``), and
        ``UserError`` tells the member so; its tries take minutes, so its callers answer
        Discord first (defer). Not so for a stop ``imposed`` on its owner: a refused write
        protects no member there, so each is tried once (a ban's or a withdrawal's stop must
        not wait minutes for a busy database) and the job is stopped all the same, its end
        kept for the sweep (``JobEnds.record_cancel``), so it never raises ``UserError`` (nor
        when another cancel of the job is being written: ``_impose_meanwhile``); nor once this
        call recorded the stop as asked: the next start ends the job whatever this process
        manages, so it is kept and answered cancelled rather than "not cancelled"; nor when
        another stop ended the job meanwhile (``_ask_stop``): its asker is told it stops."""
        job = await journal.get_job(self._conn, job_id)
        if job is None or job.guild_id != by.guild_id:
            return CancelOutcome.UNKNOWN
        if job.user_id != by.user_id and not by.is_admin:  # an admin of this job's guild
            return CancelOutcome.NOT_YOURS
        if job_id in self._cancelling:
            return await self._meet_other_cancel(job_id, imposed=imposed)
        owner_pays = job.user_id == by.user_id and not imposed
        # Stopped already, its end waiting for the journal: the journal says running still.
        if (kept := self._ends.kept_cancel(job_id, owner_pays=owner_pays)) is not None:
            return kept
        asked = False  # this call recorded the stop as asked (``_ask_stop``)
        # Its batch as the stop was asked: one another cancel stopped meanwhile ends cancelled.
        asked_of: _RunningBatch | None = None
        while True:
            if (running := self._running.get(job_id)) is not None:
                if not asked:
                    asked_of = running
                    asked = await self._ask_stop(job_id, imposed=imposed, of=running)
                if (stopping := self._stop_running(job_id, owner_pays=owner_pays)) is not None:
                    return stopping
                # Ended meanwhile, or queued again as its start did not happen.
            async with self._wakeup:
                removed = self._scheduler.cancel(job_id)  # queued only
                self._wakeup.notify_all()
            if removed:
                break
            if job_id not in self._running:
                if asked_of is not None and job_id in asked_of.cancelled:
                    # Another cancel stopped it meanwhile (left out of its batch, or its render
                    # stopped): it ends cancelled, so this ask is kept and answered so.
                    owner_charged = asked_of.rendering and asked_of.cancelled[job_id]
                    return CancelOutcome.STOPPING if owner_charged else CancelOutcome.STOPPING_FREE
                if job_id in self._cancelling:
                    # Another cancel took it from the queue while this waited for the lock, and
                    # writes its end: not finished yet, and that write may be refused.
                    return await self._meet_other_cancel(job_id, imposed=imposed)
                if (kept := self._ends.kept_cancel(job_id, owner_pays=owner_pays)) is not None:
                    return kept  # another cancel ended it, and its end waits for the sweep
                if (
                    asked_of is not None
                    and (ended := await self._ended_cancelled(job_id)) is not None
                ):
                    # Another cancel stopped it in a batch released since (alone, after
                    # ``asked_of`` failed), while this one's ask was tried for minutes.
                    return ended
                if asked:
                    await self._forget_ask(job_id)
                return CancelOutcome.FINISHED
            # Handed to its device while this waited for the lock (the dispatcher registers a
            # batch as running before its first await): stopped as a running job.
        self._cancelling.add(job_id)
        try:
            if imposed and asked_of is None:
                # Recorded as asked like a running job's stop, so that a start ends it should
                # its end be refused and kept only in this process.
                asked = await self._ask_stop(job_id, imposed=True)
            if asked or imposed:
                # Kept for the sweep if the journal refuses its end, not rendered here.
                await self._ends.end_cancelled(
                    job_id, "cancelled", retried=not imposed, ask_first=not asked
                )
                return CancelOutcome.CANCELLED
            recorded = await self._ends.finish_unsuccessfully(job_id, "cancelled", cancelled=True)
            if not recorded:
                async with self._wakeup:
                    # Read under the lock that queues it again: a stop imposed while this was
                    # written, or while this waited for the lock, ends it whatever this write
                    # managed (``_impose_meanwhile``); none can come after, as it leaves
                    # ``_cancelling`` before the next await.
                    imposed_meanwhile = job_id in self._imposed_meanwhile
                    if not imposed_meanwhile:
                        # Back in the scheduler, so this process renders it as the journal
                        # still says: queued and reserved. Left out, the next start would
                        # render and charge it unseen.
                        self._schedule(
                            job.id,
                            job.user_id,
                            job.guild_id,
                            RenderRequest.from_json(job.request_json),
                            job.created_at,
                            PriorityClass(job.priority),
                            alone=job.attempts > 0,
                        )
                        self._wakeup.notify_all()
                if imposed_meanwhile:
                    await self._ends.end_cancelled(job_id, "cancelled", retried=False)
                    return CancelOutcome.CANCELLED
        finally:
            self._cancelling.discard(job_id)
            self._imposed_meanwhile.discard(job_id)
        if not recorded:
            raise _not_cancelled(job_id)
        return CancelOutcome.CANCELLED

    async def _meet_other_cancel(self, job_id: str, *, imposed: bool) -> CancelOutcome:
        """A cancel of ``job_id`` meeting another one whose end is being written
        (``_cancelling``): a stop ``imposed`` on its owner is kept (``_impose_meanwhile``);
        any other is told the job is being cancelled."""
        if imposed:
            return await self._impose_meanwhile(job_id)
        raise UserError(f"Job `{job_id}` is being cancelled already.", Reason.BUSY)

    async def _impose_meanwhile(self, job_id: str) -> CancelOutcome:
        """A stop imposed on queued ``job_id``'s owner (a ban's, a withdrawal's) while another
        cancel of it (its owner's) is written, tried for minutes: not dropped, nor made to
        wait. Its ask is recorded (tried once), so that a start ends the job, and the other
        cancel, should the journal refuse its end, ends it all the same (kept for the sweep),
        rather than queues it again to be rendered and withheld unrefunded."""
        self._imposed_meanwhile.add(job_id)
        await self._ask_stop(job_id, imposed=True)
        return CancelOutcome.CANCELLED

    async def _ask_stop(
        self, job_id: str, *, imposed: bool, of: _RunningBatch | None = None
    ) -> bool:
        """Record in the journal that a stop of running ``job_id`` (its batch ``of``; or of a
        queued one, ``imposed``) was asked, before it is stopped and its asker told so; whether
        it was recorded. Its end is written once its render stops (a queued one's at once), and
        a journal that refuses that write then keeps it only in this process
        (``JobEnds.record_cancel``): were Easel stopped before it is written, the next start
        would render and charge a job its member was told stops. With the ask recorded, that
        start ends it instead, refunded whole. An ask the journal refuses raises ``UserError``
        (the job is not stopped, and its asker is told to try again, rather than told a stop
        the journal may lose), unless the stop is ``imposed``: that one is tried once, and
        made all the same (``JobEnds.write_ask``); nor when another stop (a ban's, imposed
        while this one's tries ran) stopped the job meanwhile (``_stopped_meanwhile``): its
        asker is told it stops."""
        try:
            await self._ends.write_ask(job_id, retried=not imposed)
        except aiosqlite.OperationalError:
            if not (imposed or await self._stopped_meanwhile(job_id, of)):
                log.critical("job %s: its stop's ask was not recorded; not stopped", job_id)
                raise _not_cancelled(job_id) from None
            log.critical(
                "job %s: its stop's ask was not recorded; stopped all the same (%s), its end "
                "kept for the sweep if refused too",
                job_id,
                "imposed" if imposed else "by another stop meanwhile",
            )
            return False
        return True

    async def _stopped_meanwhile(self, job_id: str, of: _RunningBatch | None) -> bool:
        """Whether another stop ended running ``job_id`` since a stop of it was asked in its
        batch ``of``: one marked in ``of``, or in the batch it renders alone in since ``of``
        failed; or, that batch released (the ask's tries take minutes), its end kept for the
        sweep or written cancelled (``_ended_cancelled``)."""
        batches = (of, self._running.get(job_id))
        if any(batch is not None and job_id in batch.cancelled for batch in batches):
            return True
        # Read only: the asker's stop is not made, so it changes no charge.
        if self._ends.kept_cancel(job_id, owner_pays=True) is not None:
            return True
        return await self._ended_cancelled(job_id) is not None

    async def _ended_cancelled(self, job_id: str) -> CancelOutcome | None:
        """How a stop asked of ``job_id`` while it ran is answered once the journal says it
        ended cancelled (another stop ended it, its batch released): it stopped, free unless
        its owner was charged for its GPU time. None: it did not (it finished; or its end is
        not written yet, or cannot be read now)."""
        try:
            job = await journal.get_job(self._conn, job_id)
            if job is None or job.status is not journal.JobStatus.CANCELLED:
                return None
            refunded = await ledger.refunded(self._conn, job_id)
        except aiosqlite.OperationalError:
            log.warning("job %s: its end could not be read", job_id, exc_info=True)
            return None
        return CancelOutcome.STOPPING_FREE if refunded else CancelOutcome.STOPPING

    async def _forget_ask(self, job_id: str) -> None:
        """The stop asked of ``job_id`` came too late: its render finished, and its asker is
        told so. Tried once to clear (``journal.clear_cancel_ask``), so that a start that finds
        it running (its pictures' record refused, or Easel stopped before it) renders and
        posts it as told, rather than ends it; one refused leaves it to be ended, refunded."""
        try:
            async with transaction(self._conn):
                await journal.clear_cancel_ask(self._conn, job_id)
        except aiosqlite.OperationalError as refused:
            log.warning(
                "job %s: its late stop's ask not cleared (%s); a start before its outcome is "
                "recorded ends it, refunded",
                job_id,
                refused,
            )

    def _stop_running(self, job_id: str, *, owner_pays: bool) -> CancelOutcome | None:
        """Stop ``job_id`` if its batch is running (None: it is not)."""
        if (running := self._running.get(job_id)) is None:
            return None
        if running.cancel(job_id, owner_pays=owner_pays):
            return CancelOutcome.STOPPING
        return CancelOutcome.STOPPING_FREE

    async def stop_withdrawn(self, job_ids: Sequence[str]) -> list[str]:
        """Stop those of ``job_ids`` still queued or running: withdrawn because a moderator
        deleted the picture they are made from (``db.history.withdraw_deleted_results``), so
        their results would be withheld anyway (``FinishedJob.withdrawn``). The stop is imposed
        on their makers: refunded whole, each write tried once (``cancel``), so a busy
        database delays each by a busy timeout per write (its ask, its end), not minutes.
        Returns those stopped (one its owner's cancel is being written for among them:
        ``_impose_meanwhile``)."""
        stopped = []
        for job_id in job_ids:
            job = await journal.get_job(self._conn, job_id)
            if job is None or job.status not in _UNFINISHED:
                continue
            owner = accounting.Member(job.user_id, job.guild_id)
            outcome = await self.cancel(job_id, owner, imposed=True)
            if outcome in (CancelOutcome.CANCELLED, CancelOutcome.STOPPING_FREE):
                stopped.append(job_id)
        return stopped

    async def refund_withheld(self, job_id: str) -> bool:
        """Give back a finished job's quota, its charge included: its result is withheld for a
        rule changed since its submit, not by its maker (``accounting.refund_withheld``);
        whether it stands refunded."""
        return await accounting.refund_withheld(self._conn, job_id, self._now())

    async def state(self, job_id: str) -> JobState | None:
        job = await journal.get_job(self._conn, job_id)
        if job is None:
            return None
        now = self._now()
        eta = self._scheduler.eta(job_id, now)
        position = self._scheduler.position(job_id, now)
        return JobState(
            status=job.status,
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
        """Running jobs with their devices, and queued ones in the order they would start:
        the first ``limit`` of them (None: all, walking the whole queue)."""
        return self._scheduler.snapshot(self._now(), limit)

    async def request_of(self, job_id: str) -> RenderRequest | None:
        job = await journal.get_job(self._conn, job_id)
        return RenderRequest.from_json(job.request_json) if job else None

    def _now(self) -> float:
        # The scheduler needs a clock that never goes back, even if the wall clock does.
        self._last_now = self._peek_now()
        return self._last_now

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
    ) -> None:
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
                est_seconds=accounting.estimated_cost(request).gpu_seconds,
            )
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
        if not self._suspects.isdisjoint(self._running.keys() | self._recording):
            return True
        busy = self._scheduler.running_count > 0 or bool(self._recording)
        return batch[0].job_id in self._suspects and busy

    async def _dispatch(self, slot: RenderSlot) -> None:
        while (batch := await self._next_batch(slot.device)) is not None:
            # Before the first await: from the hand-out on, a cancel is the batch's to honour.
            running = _RunningBatch(
                tuple(job.job_id for job in batch), in_process=not isinstance(slot, BrokeredSlot)
            )
            self._running.update(dict.fromkeys(running.job_ids, running))
            try:
                await self._run(slot, running)
            except Exception:
                # The jobs stay in the journal as they were; the next start retries them.
                log.exception("jobs %s: the queue could not record the outcome", running.job_ids)
            async with self._wakeup:
                self._release([id_ for id_ in running.job_ids if id_ not in running.left_out])
                self._wakeup.notify_all()

    def _release(self, job_ids: Sequence[str]) -> None:
        """Free the scheduler's slots of a batch whose render ended. One id it does not hold
        (a bug elsewhere) is logged: it must not end the device's dispatcher."""
        for job_id in job_ids:
            self._running.pop(job_id, None)
            if job_id not in self._recording:  # else a suspect until its outcome is recorded
                self._suspects.discard(job_id)  # it ended before it rendered
            try:
                self._scheduler.finish(job_id)
            except KeyError:
                log.exception("job %s: released twice; the dispatcher goes on", job_id)

    async def _prepare_next(self, slot: PreparingSlot) -> None:
        """Hand ``slot`` the batch expected after the one it starts now, to prepare while it
        renders (a guess: a later submission may change the order, then it is unused)."""
        try:
            expected = self._scheduler.peek_batch(slot.device, self._now())
            jobs = [await journal.get_job(self._conn, job.job_id) for job in expected]
            requests = [RenderRequest.from_json(job.request_json) for job in jobs if job]
            if requests:
                slot.prepare(requests)
        except Exception:
            log.exception("could not prepare the next batch on %s", slot.device)

    async def _run(self, slot: RenderSlot, running: _RunningBatch) -> None:
        now = self._now()
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
        cancelled = {job.id: "cancelled" for job in jobs if job.id in running.cancelled}
        ended = refused | cancelled  # a job cancelled is told so, whatever the rules say
        running.left_out.update(ended)
        jobs = [job for job in jobs if job.id not in running.left_out]
        if ended:
            for job_id in ended:
                self._running.pop(job_id, None)  # a second cancel finds it ended: FINISHED
            self._in_background(self._leave_out(ended))
        if not jobs:
            return
        requests = [RenderRequest.from_json(job.request_json) for job in jobs]
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
            await self._ends.end_cancelled(job_id, error, ask_first=error == "cancelled")

    async def _queue_again(self, running: _RunningBatch) -> None:
        """The jobs of ``running`` did not start (the journal stayed unwritable at their start:
        ``JournalWriter.write``; or their slot could not hand them over: ``SlotUnavailable``), and
        the journal says queued: they wait in the queue again at their places (a cancel finds
        them), and a next start finds them queued if this process ends first. One cancelled
        meanwhile is ended as such; one left out of the render already was."""
        cancelled = {
            job_id: "cancelled" for job_id in running.cancelled if job_id not in running.left_out
        }
        async with self._wakeup:
            for job_id in running.job_ids:
                if job_id in running.left_out:
                    continue
                self._running.pop(job_id, None)
                if job_id not in cancelled:
                    self._scheduler.requeue(job_id)
            running.left_out.update(running.job_ids)  # requeued or ended here: not released
            self._wakeup.notify_all()
        if cancelled:
            self._in_background(self._leave_out(cancelled))

    async def _not_handed_over(self, running: _RunningBatch, unavailable: SlotUnavailable) -> None:
        """``running``'s slot could not hand its jobs over (``SlotUnavailable``): they did not
        start, so they are queued again, their attempts given back, and no batch starts until
        the slot answers. A job is failed only by its own render, never by an outage."""
        log.warning("jobs %s not started: %s; queued again", running.job_ids, unavailable)
        self._pause_until_answered(unavailable.probe)
        running.rendering = False  # one cancelled meanwhile did not start: refunded whole
        not_started = [job_id for job_id in running.job_ids if job_id not in running.left_out]
        try:
            await self._writer.write(
                f"jobs {not_started}: queued again",
                lambda: journal.queue_again(
                    self._conn, not_started, attempt_counted=running.in_process
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
        await self._queue_again(running)

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
        running: _RunningBatch,
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
                        requests[0], self._progress_for(ids), running.stop, job_id=ids[0]
                    )
                ]
            else:
                assert isinstance(slot, BatchRenderSlot)
                results = await slot.render_batch(requests, self._progress_for(ids), running.stop)
        except SlotUnavailable as unavailable:
            await self._not_handed_over(running, unavailable)
        except RenderCancelled as stop:
            # Stopped while running: no pictures; an owner who chose the stop pays the device
            # time until it (as the slot measured it, when it did: RenderStoppedAfter).
            elapsed = (
                stop.used_s
                if isinstance(stop, RenderStoppedAfter)
                else time.perf_counter() - started
            )
            used = _shares(elapsed, [request.count for request in requests])
            for job_id, used_s in zip(ids, used, strict=True):
                charge = _cancel_charge(running.cancelled.get(job_id), used_s)
                await self._ends.end_cancelled(job_id, "cancelled", charge)
        except Exception as error:
            if len(ids) == 1:
                await self._ends.finish_unsuccessfully(ids[0], _failure(error, ids[0], slot.device))
                return
            # One job's bad input must not fail the jobs batched with it (nor show them its
            # error): each renders again alone, so only the culprit fails.
            log.warning(
                "batch %s failed on %s (%s); rendering it job by job", ids, slot.device, error
            )
            running.rendering = False  # a job cancelled while it waits for its turn is refunded
            for job, request in zip(jobs, requests, strict=True):
                if job.id in running.cancelled:
                    await self._ends.end_cancelled(job.id, "cancelled")
                else:
                    alone = _RunningBatch((job.id,), in_process=running.in_process, rendering=True)
                    self._running[job.id] = alone
                    await self._render(slot, alone, (job,), [request])
        else:
            # The slot is free now: its next batch renders while this one is stored.
            elapsed = time.perf_counter() - started
            metrics.render_finished(requests[0].model, slot.device, requests[0].steps, elapsed)
            cancelled = dict(running.cancelled)
            self._recording.update(ids)
            self._in_background(self._finish_rendered(jobs, requests, results, cancelled, elapsed))
        finally:
            # A cancel from now on is too late (FINISHED): the scheduler holds no queued job.
            for job_id in ids:
                self._running.pop(job_id, None)

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
        cancelled: dict[str, bool],
        elapsed: float,
    ) -> None:
        """Store, charge and deliver the jobs of a rendered batch; one ``cancelled`` while it
        rendered gets no pictures, and its share of ``elapsed`` is charged when its owner
        chose the stop (the value: ``_RunningBatch.cancelled``), else refunded whole.

        Recorded one job after another, each in its own transaction (their partners' failures
        are not theirs). Delivered once all are recorded, each in its lane's turn
        (``Delivery.in_turn``): one member's upload to Discord never waits for another's."""
        used = _shares(elapsed, [len(rendered) for rendered in results])
        recorded: list[tuple[journal.JobRecord, bytes | None]] = []
        try:
            for job, request, rendered, used_s in zip(jobs, requests, results, used, strict=True):
                try:
                    if job.id in cancelled:
                        # One the journal refuses is kept for the sweep, which posts its notice.
                        charge = _cancel_charge(cancelled[job.id], used_s)
                        if await self._ends.record_cancel(job.id, "cancelled", charge):
                            recorded.append((job, None))
                    else:
                        composed = await self._ends.record_success(
                            job.id, request, rendered, used_s
                        )
                        recorded.append((job, composed))
                except Exception:
                    # Running in the journal still (its pictures kept): the next start renders
                    # it again, or ends it if a stop was asked of it too late
                    # (``JobQueue._forget_ask``). Its partners are recorded and delivered.
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

    def _progress_for(self, job_ids: Sequence[str]) -> Callable[[StepProgress], None] | None:
        """The render's reports, each to the job it names (``StepProgress.request_index``):
        members batched together (other servers, private jobs) never see each other's
        pictures. A batch's report that names no job is every job's step count, without its
        preview."""
        listener = self._progress
        if listener is None:
            return None

        def report(step: StepProgress) -> None:
            if len(job_ids) == 1:
                listener(job_ids[0], step)
            elif step.request_index is not None:
                listener(job_ids[step.request_index], step)
            else:
                for job_id in job_ids:
                    listener(job_id, replace(step, preview=None))

        return report

    def _ended(self, job_id: str, outcome: str) -> None:
        """Count and log a job's end: done, failed or cancelled (its error is the member's
        to read, not the log's: it may quote the prompt)."""
        kind = self._kinds.pop(job_id, "unknown")
        self._unfinished.ended(job_id)
        self._requeued.discard(job_id)
        self._running_in_journal.discard(job_id)
        metrics.job_ended(kind, outcome)
        log.info("job %s %s", job_id, outcome, extra=job_event(job_id, outcome, kind=kind))
        if self._chores is not None:
            self._chores.owed()
