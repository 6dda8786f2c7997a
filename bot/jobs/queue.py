"""The job queue: journal in SQLite, fair scheduling, one dispatcher per render slot, delivery.

A job is written to the journal (with its quota reservation, in one transaction) before anyone
is told it was accepted; a start replays the journal (running jobs are queued again, finished
but undelivered results are delivered), and a delivery is recorded once it is posted; one that
fails is tried again while the queue runs, within a bound (``DeliveryRetries``). A failed
job, or one cancelled before it started, is refunded; a finished one is charged the GPU time it
really took, and one its owner cancelled while running the GPU time it took until it stopped (no
pictures; an admin's or a ban's stop is refunded whole: ``JobQueue.cancel``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import aiohttp
import aiosqlite

from bot import metrics
from bot.images import (
    decoded,
    pixel_digest,
    pixel_digest_of,
    posted_as_grid,
    posted_file,
    posted_grid_png,
)
from bot.jobs import accounting
from bot.jobs.accounting import QuotaExceeded
from bot.jobs.delivery_lanes import DeliveryLanes
from bot.jobs.scheduler import (
    FairScheduler,
    PriorityClass,
    QueuedJob,
    QueueSnapshot,
    SchedulerConfig,
)
from bot.logging_setup import job_event
from bot.policy.quota import DEFAULT_LIMITS, QuotaLimits
from bot.user_errors import Reason, UserError
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
    "DeliveryRetries",
    "FinishedJob",
    "JobCopies",
    "JobQueue",
    "JobState",
    "QuotaExceeded",
    "RenderSlot",
    "RenderStoppedAfter",
    "ResultImage",
    "ResultSink",
    "SlotUnavailable",
    "StartGate",
    "Submission",
]

log = logging.getLogger(__name__)

_UNFINISHED = frozenset({journal.JobStatus.QUEUED, journal.JobStatus.RUNNING})
# Stop waiting for a running render after this long on shutdown; the journal requeues it,
# and that render is no attempt (``MAX_RENDER_ATTEMPTS``): the process ended it, not the job.
SHUTDOWN_GRACE_S = 15.0
# Renders a job gets in this process: a job the process died during this often is failed at
# the next start, not rendered again (the broker delivers a job as often to its workers:
# ``BrokerConfig.max_attempts``).
MAX_RENDER_ATTEMPTS = 3
# Set apart in a job's batch key, it shares a batch with no other job.
_ALONE = "alone"
# The waits before each further try of a result's post that failed for a passing reason
# (``_passing``), in its lane; one still failing is the delivery sweep's (``DeliveryRetries``).
DELIVERY_RETRY_WAITS_S = (2.0, 8.0)


@dataclass(frozen=True)
class DeliveryRetries:
    """How the running queue tries again a result whose post failed (docs/architecture.md):
    a sweep every ``sweep_every_s`` takes at most ``per_sweep`` whose next try is due; each
    failed delivery waits twice as long as the one before, from ``first_wait_s`` up to
    ``longest_wait_s``; a job failing ``give_up_after_s`` is failed, refunded and its maker
    told, as is at once one whose failure cannot heal (``_cannot_heal``)."""

    sweep_every_s: float = 30.0
    per_sweep: int = 20
    first_wait_s: float = 30.0
    longest_wait_s: float = 3600.0
    give_up_after_s: float = 86400.0

    def __post_init__(self) -> None:
        for name in ("sweep_every_s", "first_wait_s", "longest_wait_s", "give_up_after_s"):
            if not (value := getattr(self, name)) > 0:
                raise ValueError(f"DeliveryRetries.{name} must be over 0 seconds, not {value}")
        if self.per_sweep < 1:
            raise ValueError(f"DeliveryRetries.per_sweep must be 1 or more, not {self.per_sweep}")

    def wait_after(self, failed: int) -> float:
        """The wait before the next try of a delivery that failed ``failed`` times before."""
        return min(self.first_wait_s * 2.0 ** min(failed, 32), self.longest_wait_s)


# While a slot cannot hand jobs over (``SlotUnavailable``) it is asked again after the first
# wait, then after each wait doubled up to the last: a broker restart takes seconds, an outage
# may take hours.
UNAVAILABLE_PROBE_WAITS_S = (1.0, 30.0)
# The waits before each further try of a journal write that failed (the database locked by
# another writer past its busy timeout, or a full disk): about two minutes with the busy
# timeouts between them. The job is held meanwhile (its pictures kept); one still failing is
# left as the journal says, for the next start (``JobQueue._journal_write``).
JOURNAL_RETRY_WAITS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0, 15.0)

_Written = TypeVar("_Written")


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


@runtime_checkable
class BatchRenderSlot(RenderSlot, Protocol):
    """A slot that can render several compatible requests in one call (a local device)."""

    max_batch: int

    async def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: Callable[[StepProgress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]: ...


@runtime_checkable
class BrokeredSlot(RenderSlot, Protocol):
    """A slot that hands its job to a broker's workers (``bot.jobs.broker``). The job is
    running from then on, waiting in the broker's stream as well as rendering, and the broker
    caps the deliveries of one that takes its workers down: a stop of this process is no
    render attempt of it."""

    @property
    def brokered(self) -> bool: ...


@runtime_checkable
class PreparingSlot(RenderSlot, Protocol):
    """A slot that can do a batch's CPU work (prompt expansion) ahead, while it renders."""

    def prepare(self, requests: Sequence[RenderRequest]) -> None: ...


@runtime_checkable
class WarmingSlot(RenderSlot, Protocol):
    """A slot that can load a model ahead of the first job (a local device): ``model``,
    or its default (None)."""

    def warm_up(self, model: str | None = None) -> None: ...


class JobCopies(Protocol):
    """Where a transport keeps copies of jobs outside the bot (a broker: their requests,
    results and pictures): dropped once a job's outcome is recorded, and by /forget-me. The
    in-process transport keeps none, so it has none of these. Both raise when the broker
    cannot be reached: what is left expires on its own."""

    async def settle(self, job_id: str, outcome: str) -> None:
        """The job ended ("done", "failed" or "cancelled"): only a marker of it is kept."""
        ...

    async def drop_copies(self, job_ids: Sequence[str]) -> None:
        """/forget-me: whatever is left of these jobs goes."""
        ...


class RenderStoppedAfter(RenderCancelled):
    """A render cancelled, with the device seconds its slot measured itself: a remote slot
    counts from its worker's first report, so a job stopped while it still waited for a worker
    used none (the broker's wait is not GPU time)."""

    def __init__(self, used_s: float) -> None:
        super().__init__(f"cancelled after {used_s:.1f} s on a device")
        self.used_s = used_s


class SlotUnavailable(Exception):
    """A slot could not hand its job over to where it renders, or fetch what it rendered
    there (its broker did not answer): the job did not start, or its result waits there for
    the next start to fetch (it is not rendered again). The queue puts it back in its place,
    its attempt given back, and starts no job on any slot until ``probe`` (asked with
    backoff) says the slot answers."""

    def __init__(self, reason: str, probe: Callable[[], Awaitable[bool]]) -> None:
        super().__init__(reason)
        self.probe = probe


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
    # How the result must be posted: the interaction's attachment limit, spoilered or not,
    # seen by the member alone or not.
    filesize_limit: int | None = None
    spoiler: bool = False
    private: bool = False
    # Made in an age-restricted channel: its pictures stay age-restricted whatever the
    # channel's flag later says (cogs.visibility.made_age_restricted).
    age_restricted: bool = False

    @property
    def member(self) -> accounting.Member:
        return accounting.Member(self.user_id, self.guild_id, self.role_ids, self.is_admin)


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
    private: bool = False
    age_restricted: bool = False  # made in an age-restricted channel (Submission's)
    # A moderator deleted the picture it was made from (or its result) while it was queued or
    # rendered (``db.history.withdraw_deleted_results``): it is not posted.
    withdrawn: bool = False
    # Withdrawn with the job it was made from (that one's withdrawn too), not for a deletion
    # of its own message.
    withdrawn_with_source: bool = False
    # Withdrawn because its channel (or the one it was made from) was deleted, not by a
    # moderator's deletion of it: refunded, as its maker did nothing.
    withdrawn_with_channel: bool = False
    # Why it was ended before its render, by the rules of now (``StartGate``), or withheld
    # at delivery (``History.withhold_job``: a delivery retried after a crash): it is posted
    # nowhere, refunded whole, and its maker is told this, privately; None: neither.
    withheld: str | None = None
    # The PNG a job of several pictures is posted as (bot.images.posted_grid_png), composed
    # from their pixels while they were stored; None: compose it from the stored files.
    composed: bytes | None = None
    # When it was journaled (seconds since the epoch): a stop after it withholds its result
    # (bot.bans.StoppedMembers); 0.0 reads as before any stop.
    created_at: float = 0.0
    # When a post of it was last tried, by a delivery before this one (None: never): that
    # post may have landed (its answer lost, or Easel stopped before recording it), so the
    # sink looks for it before posting in a channel again (each try before that one was
    # looked for by the try after it).
    post_attempted_at: float | None = None
    # Its first posts recorded in its channel (``job_messages``), read once a post of it was
    # tried: its interaction's original response once it showed progress, which an edit of
    # a try may have turned into the result, and its result's post once linked.
    posted_ids: tuple[int, ...] = ()


def composed_grid(request: RenderRequest, rendered: Sequence[RenderedImage]) -> bytes | None:
    """The grid a job of several pictures is posted as, from the pictures' pixels (a broker
    worker's decoded from its PNGs, as the delivery would); None for one picture and when
    composing fails (the delivery composes it from the stored files then)."""
    if not posted_as_grid(request, len(rendered)):
        return None
    try:
        pictures = [image.picture for image in rendered if image.picture is not None]
        if len(pictures) < len(rendered):
            pictures = decoded([image.png for image in rendered])
        seeds = [image.seed for image in rendered]
        return posted_grid_png(request, pictures, rendered[0].infotext, seeds)
    except Exception:
        log.exception("the grid of %d pictures could not be composed early", len(pictures))
        return None


def posted_digests(
    request: RenderRequest,
    rendered: Sequence[RenderedImage],
    composed: bytes | None,
    filesize_limit: int | None,
) -> list[bytes]:
    """The pixel digests of the grid a job of several is posted as (``composed``), and of the
    JPEG preview posted in place of a grid or picture over ``filesize_limit`` (``posted_file``,
    as the delivery makes it): the files a moderator deletes and a member saves. Not known
    here: the preview of a grid composed only at delivery, and /show's (its own limit)."""
    digests = [] if composed is None else [pixel_digest_of(composed)]
    posted = composed
    if posted is None and rendered and not posted_as_grid(request, len(rendered)):
        posted = rendered[0].png
    if posted is not None:
        fitted = posted_file(posted, filesize_limit)
        if fitted.is_preview:
            digests.append(pixel_digest_of(fitted.data))
    return digests


class ResultSink(Protocol):
    async def deliver(self, job: FinishedJob) -> int | None:
        """Post the result (or the failure); returns the message's id when it was posted in
        the server's channel (None: privately, by DM, or nowhere). The sink links that post
        to its job itself, as soon as it is posted (``History.result_posted``): the queue
        records only the delivery."""


@runtime_checkable
class RetractingSink(ResultSink, Protocol):
    """A sink that can delete a result it just posted, for a job erased while it was posted
    (its maker's /forget-me), which nothing else would delete."""

    async def retract(self, job: FinishedJob, message_id: int) -> None: ...


class StartGate(Protocol):
    async def why_not_started(self, job: FinishedJob) -> str | None:
        """Why ``job`` (no pictures yet) must not render: the cheap rules of now that would
        withhold its result (``bot.policy.delivery.placed_under_rules_of_now``), said as its
        maker is told; None: it renders."""


ProgressListener = Callable[[str, StepProgress], None]


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"  # it was queued: it will not run
    STOPPING = "stopping"  # it was running: it stops at the next step; its owner pays its time
    STOPPING_FREE = "stopping-free"  # it was running: it stops, refunded whole (not the owner's
    # choice, or stopped before its render began)
    NOT_YOURS = "not-yours"
    FINISHED = "finished"  # too late: it already ended
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class JobState:
    status: journal.JobStatus
    position: int | None  # jobs that start before it; None unless queued
    eta_s: float | None  # seconds until it should be finished; None unless queued or running


def _shares(seconds: float, pictures: Sequence[int]) -> list[float]:
    """A batch's GPU ``seconds`` shared by its jobs in proportion to their ``pictures``."""
    total = sum(pictures) or 1
    return [seconds * count / total for count in pictures]


def _passing(error: Exception) -> bool:
    """Whether a delivery's failure may pass on its own: no answer in time, a connection
    lost, or Discord busy (a 5xx or 429 answer, after the client's own tries). Not any
    ``OSError``: a stored picture missing or unreadable stays so."""
    status = getattr(error, "status", None)
    busy = isinstance(status, int) and (status >= 500 or status == 429)
    return busy or isinstance(error, ConnectionError | TimeoutError | aiohttp.ClientError)


def _cannot_heal(error: Exception) -> str | None:
    """Why a delivery's failure stays whatever its tries, said as its maker reads it: Discord
    refused the post itself (a 4xx answer other than 429), or a stored picture is missing;
    None: it may pass (``_passing``), or nothing says it cannot."""
    if _passing(error):
        return None
    status = getattr(error, "status", None)
    if isinstance(status, int) and 400 <= status < 500:
        return f"Discord refused it ({status})"
    # Only a file that is not there stays so; another OSError (EIO, EMFILE, a restore with
    # the wrong owner) may pass or be fixed, so it waits out the sweep's tries.
    if isinstance(error, FileNotFoundError | IsADirectoryError):
        return "its stored picture is missing"
    return None


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


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
        delivery_retries: DeliveryRetries | None = None,
        journal_retry_waits: Sequence[float] = JOURNAL_RETRY_WAITS_S,
    ) -> None:
        self._conn = conn
        self._journal_retry_waits = tuple(journal_retry_waits)
        self._copies = copies
        self._dm_limits = dm_limits  # the quota in direct messages (settings: EASEL_DM_*)
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
        # Queued jobs whose cancel is being written (``cancel``): out of the scheduler
        # meanwhile, so a second click is told so, not that the job ended.
        self._cancelling: set[str] = set()
        # Cancels the member was told of but the journal refused (``_end_cancelled``): their
        # error and charge, written by the delivery sweep, so the job is not rendered and
        # charged at the next start.
        self._cancels_unrecorded: dict[str, tuple[str, float | None]] = {}
        # Ends recorded whose notice's delivery raised (``_finish_unsuccessfully``): no retry
        # time was written for the sweep to find, so it tries them from here.
        self._notices_unposted: set[str] = set()
        # Set while a slot cannot hand jobs over (``SlotUnavailable``): no batch starts.
        self._paused = False
        # The kind of each job not yet ended, for the metrics that count jobs by kind.
        self._kinds: dict[str, str] = {}
        metrics.watch_queue_depth(self.queued_count)
        self._dispatchers: list[asyncio.Task[None]] = []
        # Rendered batches being stored, charged and delivered while their slot renders on.
        self._finishing: set[asyncio.Task[None]] = set()
        # Results post one member's in one channel at a time, in the order asked for.
        self._lanes = DeliveryLanes(self._in_background)
        self._sink: ResultSink | None = None
        self._start_gate: StartGate | None = None
        self._progress: ProgressListener | None = None
        self._stopping = False
        self._stop_requested = asyncio.Event()  # ends a delivery's wait to try again
        self._retries = delivery_retries or DeliveryRetries()

    def set_sink(self, sink: ResultSink) -> None:
        self._sink = sink

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
            await self._record_failure(
                job_id,
                f"failed after {MAX_RENDER_ATTEMPTS} tries: Easel stopped while rendering it "
                f"each time, so it is not rendered again; reference {job_id}",
            )
        for job in await journal.jobs_with_status(self._conn, journal.JobStatus.QUEUED):
            request = RenderRequest.from_json(job.request_json)
            priority = PriorityClass(job.priority)
            self._kinds[job.id] = job.kind
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
        await self._deliver_in_turn([(job, None) for job in restored])
        self._in_background(self._sweep_deliveries())
        for slot in self._slots:
            if isinstance(slot, WarmingSlot):
                # Ahead of the dispatcher's first job on the slot's thread, with its model.
                slot.warm_up(self._first_model(slot.device))
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
        await self._settle_background(SHUTDOWN_GRACE_S)
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
            metrics.quota_refused()
            raise QuotaExceeded(refusal.message)
        self._kinds[job_id] = submission.kind
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

    async def quota_refusal(self, submission: Submission, jobs: int = 1) -> str | None:
        """Why the member's limits would refuse this submission now, or None (reads only);
        ``jobs``: how many jobs its pictures are split into (``--repeat``).

        For answering before the interaction is deferred, so a refusal can be ephemeral;
        ``submit`` checks again, atomically, and stays the authority."""
        refusal = await accounting.refusal_for(
            self._conn,
            submission.member,
            submission.request,
            self._now(),
            self._dm_limits,
            jobs,
        )
        if refusal is None:
            return None
        metrics.quota_refused()
        return refusal.message

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

        A queued job whose cancel the journal never takes (``_journal_write``) stays queued
        here, and ``UserError`` tells the member it was not cancelled; its tries take minutes,
        so its callers answer Discord first (defer)."""
        job = await journal.get_job(self._conn, job_id)
        if job is None or job.guild_id != by.guild_id:
            return CancelOutcome.UNKNOWN
        if job.user_id != by.user_id and not by.is_admin:  # an admin of this job's guild
            return CancelOutcome.NOT_YOURS
        if job_id in self._cancelling:
            raise UserError(f"Job `{job_id}` is being cancelled already.", Reason.BUSY)
        owner_pays = job.user_id == by.user_id and not imposed
        if (stopping := self._stop_running(job_id, owner_pays=owner_pays)) is not None:
            return stopping
        async with self._wakeup:
            removed = self._scheduler.cancel(job_id)  # queued only
            self._wakeup.notify_all()
        if not removed:
            # Handed to its device while this waited for the lock (the dispatcher registers a
            # batch as running before its first await), or ended.
            return self._stop_running(job_id, owner_pays=owner_pays) or CancelOutcome.FINISHED
        self._cancelling.add(job_id)
        try:
            recorded = await self._finish_unsuccessfully(job_id, "cancelled", cancelled=True)
            if not recorded:
                # Back in the scheduler, so this process renders it as the journal still says:
                # queued and reserved. Left out, the next start would render and charge it
                # unseen.
                async with self._wakeup:
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
        finally:
            self._cancelling.discard(job_id)
        if not recorded:
            raise UserError(
                f"Job `{job_id}` was not cancelled: Easel's database is busy. Try again in a "
                "minute.",
                Reason.BUSY,
            )
        return CancelOutcome.CANCELLED

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
        on their makers: refunded whole. Returns those stopped."""
        stopped = []
        for job_id in job_ids:
            job = await journal.get_job(self._conn, job_id)
            if job is not None and job.status in _UNFINISHED:
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
        return JobState(
            status=job.status,
            position=self._scheduler.position(job_id, now),
            eta_s=None if eta is None else max(0.0, eta - now),
        )

    @property
    def slots(self) -> Sequence[RenderSlot]:
        return tuple(self._slots)

    def queued_count(self) -> int:
        return self._scheduler.queued_count

    def snapshot(self) -> QueueSnapshot:
        """Running jobs with their devices, and queued ones in the order they would start."""
        return self._scheduler.snapshot(self._now())

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
            jobs = await self._journal_write(
                f"jobs {running.job_ids}: their start",
                lambda: journal.mark_running(
                    self._conn, running.job_ids, now, counts_attempt=running.in_process
                ),
            )
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
                why = await gate.why_not_started(await self._finished(job))
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
            await self._end_cancelled(job_id, error)

    async def _queue_again(self, running: _RunningBatch) -> None:
        """The jobs of ``running`` did not start (the journal stayed unwritable at their start:
        ``_journal_write``; or their slot could not hand them over: ``SlotUnavailable``), and
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
        await self._journal_write(
            f"jobs {not_started}: queued again",
            lambda: journal.queue_again(
                self._conn, not_started, attempt_counted=running.in_process
            ),
        )
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
                await self._end_cancelled(job_id, "cancelled", charge)
        except Exception as error:
            if len(ids) == 1:
                await self._finish_unsuccessfully(ids[0], _failure(error, ids[0], slot.device))
                return
            # One job's bad input must not fail the jobs batched with it (nor show them its
            # error): each renders again alone, so only the culprit fails.
            log.warning(
                "batch %s failed on %s (%s); rendering it job by job", ids, slot.device, error
            )
            running.rendering = False  # a job cancelled while it waits for its turn is refunded
            for job, request in zip(jobs, requests, strict=True):
                if job.id in running.cancelled:
                    await self._end_cancelled(job.id, "cancelled")
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
        (``_deliver_in_turn``): one member's upload to Discord never waits for another's."""
        used = _shares(elapsed, [len(rendered) for rendered in results])
        recorded: list[tuple[journal.JobRecord, bytes | None]] = []
        try:
            for job, request, rendered, used_s in zip(jobs, requests, results, used, strict=True):
                try:
                    if job.id in cancelled:
                        charge = _cancel_charge(cancelled[job.id], used_s)
                        await self._record_failure(
                            job.id, "cancelled", cancelled=True, used_s=charge
                        )
                        recorded.append((job, None))
                    else:
                        composed = await self._record_success(job.id, request, rendered, used_s)
                        recorded.append((job, composed))
                except Exception:
                    # Running in the journal still (its pictures kept): the next start renders
                    # it again. Its partners are recorded and delivered all the same.
                    log.critical(
                        "job %s: its outcome was not recorded; the next start renders it again",
                        job.id,
                        exc_info=True,
                    )
        finally:
            await self._recorded(job.id for job in jobs)
        results.clear()  # the pixels are not held while the uploads run
        await asyncio.gather(*await self._deliver_in_turn(recorded))

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

    async def _record_success(
        self,
        job_id: str,
        request: RenderRequest,
        rendered: list[RenderedImage],
        gpu_seconds: float,
    ) -> bytes | None:
        """Store the pictures and record them with the job's end, and charge it; returns the
        grid it is posted as, when composed (``composed_grid``).

        A storage failure (a full disk, a folder it may not write), or a record refused for
        good (a constraint, the ledger), fails the job instead: refunded, and the member told,
        rather than left running with its quota reserved; its pictures are deleted once that
        is recorded. A journal that stays unwritable (``_journal_write``) raises: the job is
        running there still, its pictures kept, for the next start."""
        try:
            job = await journal.get_job(self._conn, job_id)
            filesize_limit = None if job is None else job.filesize_limit
            records, composed, posted_digests = await asyncio.to_thread(
                self._store_images, job_id, request, rendered, filesize_limit
            )
            await self._journal_write(
                f"job {job_id}: its pictures",
                functools.partial(self._record_done, job_id, records, gpu_seconds, posted_digests),
            )
        except aiosqlite.OperationalError:
            raise
        except Exception as error:
            log.exception("job %s: rendered, but its pictures could not be stored", job_id)
            reason = error.strerror if isinstance(error, OSError) else None
            await self._record_failure(
                job_id,
                f"the pictures were rendered but could not be stored on the server "
                f"({reason or type(error).__name__}); reference {job_id}",
            )
            await asyncio.to_thread(shutil.rmtree, self._images_dir / job_id, ignore_errors=True)
            return None
        self._ended(job_id, "done")
        return composed

    async def _record_done(
        self,
        job_id: str,
        records: list[journal.ImageRecord],
        gpu_seconds: float,
        posted_digests: list[bytes],
    ) -> None:
        """The job's pictures, its end and its charge: one transaction, so that a crash leaves
        all or none."""
        now = self._now()
        async with transaction(self._conn):
            await journal.mark_done(self._conn, job_id, records, gpu_seconds, now, posted_digests)
            await accounting.charge(self._conn, job_id, gpu_seconds, len(records), now)

    async def _finish_unsuccessfully(
        self, job_id: str, error: str, *, cancelled: bool = False, used_s: float | None = None
    ) -> bool:
        """Record the end of a job that has no pictures (failed, or cancelled before or while
        it rendered) and deliver it at once, outside its lane: there is no result to order,
        and a cancel (a ban's) waits for the member to be told. Whether it was recorded: a
        journal that stays unwritable leaves the job as it was there, for the next start, and
        nothing is delivered. A delivery that raises once the end is recorded is logged, not
        raised: the end stands, and the sweep delivers it (``_retry_kept_ends``)."""
        try:
            await self._record_failure(job_id, error, cancelled=cancelled, used_s=used_s)
        except aiosqlite.OperationalError:
            log.critical(
                "job %s: its end (%s) was not recorded; the next start takes it up again",
                job_id,
                "cancelled" if cancelled else "failed",
                exc_info=True,
            )
            return False
        await self._deliver_notice(job_id)
        return True

    async def _deliver_notice(self, job_id: str) -> None:
        """Deliver a recorded end without pictures; one whose delivery raised (its records
        refused by the journal) is kept for the sweep."""
        self._notices_unposted.discard(job_id)
        try:
            await self._deliver(job_id)
        except Exception:
            log.exception("job %s: its end is recorded, its notice not posted", job_id)
            self._notices_unposted.add(job_id)

    async def _end_cancelled(self, job_id: str, error: str, used_s: float | None = None) -> None:
        """Record a cancel its member was told of (``_finish_unsuccessfully``); one the journal
        refuses is kept, and the delivery sweep writes it (``_retry_kept_ends``): left as
        the journal says (queued or running), the next start would render and charge it."""
        if not await self._finish_unsuccessfully(job_id, error, cancelled=True, used_s=used_s):
            self._cancels_unrecorded[job_id] = (error, used_s)

    async def _retry_kept_ends(self) -> None:
        """Write the cancels the journal refused before (``_end_cancelled``), and deliver the
        notices whose delivery raised (``_deliver_notice``)."""
        for job_id, (error, used_s) in list(self._cancels_unrecorded.items()):
            if await self._finish_unsuccessfully(job_id, error, cancelled=True, used_s=used_s):
                del self._cancels_unrecorded[job_id]
        for job_id in list(self._notices_unposted):
            await self._deliver_notice(job_id)

    async def _deliver_in_turn(
        self, jobs: Sequence[tuple[journal.JobRecord, bytes | None]]
    ) -> list[asyncio.Future[None]]:
        """Deliver each of these ended jobs (with its posted grid, when composed already) in
        its lane: one member's results in one channel post one at a time, in the order they
        were asked for (``bot.jobs.delivery_lanes``); each future resolves once it ran."""
        try:
            # Two jobs journaled within one tick of the clock (or after it went back) are
            # told apart by the order they were journaled in.
            journaled = await journal.journaled_order(self._conn, [job.id for job, _ in jobs])
        except Exception:
            log.exception("jobs %s: the journal's order was not read", [job.id for job, _ in jobs])
            journaled = {}
        return [
            self._lanes.post(
                (job.user_id, job.guild_id, job.channel_id),
                (job.created_at, journaled.get(job.id, 0), job.id),
                functools.partial(self._deliver, job.id, composed, DELIVERY_RETRY_WAITS_S),
            )
            for job, composed in jobs
        ]

    async def _record_failure(
        self, job_id: str, error: str, *, cancelled: bool = False, used_s: float | None = None
    ) -> None:
        """Record the job's end; refunded whole, or with ``used_s`` (a job cancelled while
        running) its pictures refunded and those GPU seconds charged: cancelling a render at
        its last step must not make it free. The end and its refund or charge are one
        transaction: a crash leaves both or neither."""
        now = self._now()

        async def record() -> None:
            async with transaction(self._conn):
                await journal.mark_failed(self._conn, job_id, error, now, cancelled=cancelled)
                if used_s is None:
                    await accounting.refund(self._conn, job_id, now)
                else:
                    await accounting.charge(self._conn, job_id, used_s, 0, now)

        await self._journal_write(f"job {job_id}: its end", record)
        self._ended(job_id, "cancelled" if cancelled else "failed")
        if used_s is None:
            log.info("job %s refunded", job_id, extra=job_event(job_id, "refunded"))
        else:
            log.info(
                "job %s charged %.1f GPU seconds, no pictures",
                job_id,
                used_s,
                extra=job_event(job_id, "charged"),
            )

    async def _journal_write(self, what: str, write: Callable[[], Awaitable[_Written]]) -> _Written:
        """``write()``, tried again after each of the queue's journal retry waits while the
        database refuses it (``OperationalError``: locked past the busy timeout, disk full,
        an I/O error); ``write`` is one statement or one transaction, so a failed try wrote
        nothing. Raises the last failure once the waits are spent: the caller leaves the job
        as the journal says, for the next start."""
        waits = iter(self._journal_retry_waits)
        while True:
            try:
                return await write()
            except aiosqlite.OperationalError as error:
                if (wait := next(waits, None)) is None:
                    raise
                log.warning("%s not written (%s); tried again in %.1f s", what, error, wait)
            await asyncio.sleep(wait)

    def _ended(self, job_id: str, outcome: str) -> None:
        """Count and log a job's end: done, failed or cancelled (its error is the member's
        to read, not the log's: it may quote the prompt)."""
        kind = self._kinds.pop(job_id, "unknown")
        self._requeued.discard(job_id)
        metrics.job_ended(kind, outcome)
        log.info("job %s %s", job_id, outcome, extra=job_event(job_id, outcome, kind=kind))
        if self._copies is not None:
            self._in_background(self._settle_copies(self._copies, job_id, outcome))

    @staticmethod
    async def _settle_copies(copies: JobCopies, job_id: str, outcome: str) -> None:
        try:
            await copies.settle(job_id, outcome)
        except Exception as error:
            log.warning(
                "job %s: its copies on the broker stay until they expire (24 h): %s",
                job_id,
                type(error).__name__,
            )

    def _store_images(
        self,
        job_id: str,
        request: RenderRequest,
        rendered: list[RenderedImage],
        filesize_limit: int | None,
    ) -> tuple[list[journal.ImageRecord], bytes | None, list[bytes]]:
        """The pictures' files and records, and the grid the job is posted as (composed
        first, from the pixels, while the engine's pool still encodes the PNGs), with the pixel
        digests of what is posted besides the pictures (``posted_digests``): a multi-picture
        job is posted, deleted and saved as that one picture."""
        composed = composed_grid(request, rendered)
        folder = self._images_dir / job_id
        folder.mkdir(parents=True, exist_ok=True)
        records = []
        for idx, image in enumerate(rendered):
            path = folder / f"{idx}.png"
            png = image.png
            path.write_bytes(png)
            # Its pixels, so a copy uploaded again is known whatever its name (the PNG holds
            # the engine's pixels losslessly; a broker worker's crossed the wire as PNG only).
            digest = pixel_digest_of(png) if image.picture is None else pixel_digest(image.picture)
            records.append(
                journal.ImageRecord(
                    job_id,
                    idx,
                    image.seed,
                    str(path),
                    image.infotext,
                    image.width,
                    image.height,
                    digest,
                )
            )
        return records, composed, posted_digests(request, rendered, composed, filesize_limit)

    async def _deliver(
        self, job_id: str, composed: bytes | None = None, retry_waits: Sequence[float] = ()
    ) -> None:
        """Post the job's outcome (``composed``: its posted grid, when made already), then
        record that it was posted (``_post_outcome``); a job whose result cannot be posted is
        failed meanwhile, and its failure posted instead. A job's deliveries (a start's, the
        sweep's) run in its lane, one after another (``_deliver_in_turn``): the later one reads
        the earlier one's outcome, never posts beside it. The one outside lanes, of a job just
        ended without pictures (``_finish_unsuccessfully``), runs before any try of it is due.

        At least once, and a try that may have landed is looked for before posting again
        (``FinishedJob.post_attempted_at``): editing the interaction's original response is
        idempotent, and the sink finds a channel post a crash kept from being recorded.
        """
        while await self._post_outcome(job_id, composed, retry_waits):
            composed = None  # failed since: its failure has no picture

    async def _post_outcome(
        self, job_id: str, composed: bytes | None, retry_waits: Sequence[float]
    ) -> bool:
        """Post the job's outcome and record it posted. A failure that may pass (``_passing``)
        is tried again after each of ``retry_waits`` (read afresh: a moderator may have
        withdrawn it meanwhile), unless the queue stops; one still failing is recorded for
        the sweep (``_delivery_failed``). Whether the job failed since, as its result cannot
        be posted: its failure is to be posted now."""
        waits = iter(retry_waits)
        while True:
            job = await journal.get_job(self._conn, job_id)
            if self._sink is None or job is None or job.delivered_at is not None:
                return False
            images = await journal.images_of(self._conn, job_id)
            finished = await self._finished(job, images, composed)
            try:
                # Each try's time: the next looks for this one's post from there (``finished``
                # carries the try before this one's).
                await self._journal_write(
                    f"job {job_id}: its post's try",
                    functools.partial(journal.mark_post_attempted, self._conn, job_id, self._now()),
                )
            except aiosqlite.OperationalError as error:
                return await self._delivery_failed(job, error)
            try:
                message_id = await self._sink.deliver(finished)
                break
            except Exception as error:
                wait = next(waits, None) if _passing(error) else None
                if wait is None or self._stopping:
                    return await self._delivery_failed(job, error)
                log.warning(
                    "job %s: delivery failed (%s); tried again in %.0f s",
                    job_id,
                    type(error).__name__,
                    wait,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), wait)
            if self._stopping:
                log.info("job %s: not delivered before the stop; tried at the next start", job_id)
                return False
        still_there = await self._journal_write(
            f"job {job_id}: its delivery",
            functools.partial(journal.mark_delivered, self._conn, job_id, self._now(), message_id),
        )
        if not still_there and message_id is not None and isinstance(self._sink, RetractingSink):
            await self._sink.retract(finished, message_id)
        log.info("job %s delivered", job_id, extra=job_event(job_id, "delivered"))
        return False

    async def _delivery_failed(self, job: journal.JobRecord, error: Exception) -> bool:
        """Record a failed delivery of ``job``'s outcome: the sweep tries it again after a
        wait that doubles with each failure (``DeliveryRetries``), unless its failure cannot
        heal (``_cannot_heal``) or it has failed for ``give_up_after_s``. Then a done job is
        failed and refunded whole, and its failure is to be posted instead (True: its maker is
        told, as of any failure); for a job with no result (failed or cancelled) nothing else
        could tell its maker, so its delivery is given up, logged and recorded as done."""
        now = self._now()
        retries = self._retries
        failing_since = now if job.delivery_failing_since is None else job.delivery_failing_since
        why = _cannot_heal(error)
        if why is None and now - failing_since < retries.give_up_after_s:
            wait = retries.wait_after(job.delivery_tries)
            await self._journal_write(
                f"job {job.id}: its failed delivery",
                functools.partial(journal.delivery_failed, self._conn, job.id, now, now + wait),
            )
            log.warning(
                "job %s: delivery failed (%s); tried again in %.0f s",
                job.id,
                type(error).__name__,
                wait,
                exc_info=error,
            )
            return False
        why = why or f"Discord did not take it for {_duration(now - failing_since)}"
        if job.status is not journal.JobStatus.DONE:
            log.error("job %s: its end could not be posted (%s); given up", job.id, why)
            await self._journal_write(
                f"job {job.id}: its given-up delivery",
                functools.partial(journal.mark_delivered, self._conn, job.id, now, None),
            )
            return False
        log.error("job %s: its result cannot be posted (%s); failed, refunded", job.id, why)
        refunded = (
            f"the result could not be posted ({why}), so it does not count against your "
            f"quota; reference {job.id}"
        )

        async def fail_refunded() -> bool:
            async with transaction(self._conn):
                failed = await journal.fail_undeliverable(self._conn, job.id, refunded)
                if failed:
                    await accounting.refund_withheld(self._conn, job.id, now)
                return failed

        failed = await self._journal_write(f"job {job.id}: its undeliverable end", fail_refunded)
        if failed:
            log.info("job %s refunded", job.id, extra=job_event(job.id, "refunded"))
            await asyncio.to_thread(shutil.rmtree, self._images_dir / job.id, ignore_errors=True)
        return failed

    async def _sweep_deliveries(self) -> None:
        """While the queue runs, every ``sweep_every_s``: write the ends kept from before
        (``_retry_kept_ends``), then deliver again, each in its lane's turn, at most
        ``per_sweep`` results whose next try is due, and wait for them (a sweep never piles
        tries on the tries of the one before)."""
        retries = self._retries
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), retries.sweep_every_s)
            if self._stopping:
                return
            try:
                await self._retry_kept_ends()
            except Exception:
                log.exception("the kept ends were not written; the sweep goes on")
            try:
                due = await journal.deliveries_due(self._conn, self._now(), retries.per_sweep)
            except Exception:
                log.exception("the deliveries due were not read; the sweep goes on")
                continue
            ready = [(job, None) for job in due]
            await asyncio.gather(*await self._deliver_in_turn(ready), return_exceptions=True)

    async def _finished(
        self,
        job: journal.JobRecord,
        images: Sequence[journal.ImageRecord] = (),
        composed: bytes | None = None,
    ) -> FinishedJob:
        """What a delivery (or the start gate) knows of ``job``: its parent is read only for
        a withdrawn job, to say whether it was withdrawn with it."""
        with_source = False
        if job.withdrawn_at is not None and job.parent_job_id is not None:
            parent = await journal.get_job(self._conn, job.parent_job_id)
            # A deleted channel withdraws what was made there too: made in its parent's
            # channel, it went with its own channel, not with its parent.
            with_source = (
                parent is not None
                and parent.withdrawn_at is not None
                and not (job.withdrawn_with_channel and parent.channel_id == job.channel_id)
            )
        posted_ids: tuple[int, ...] = ()
        if job.post_attempted_at is not None and job.channel_id is not None:
            posted_ids = await journal.first_posts_in(self._conn, job.id, job.channel_id)
        # Ended before its render with the start gate's why in place of "cancelled".
        ended_at_start = job.status is journal.JobStatus.CANCELLED and job.error != "cancelled"
        return FinishedJob(
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
            private=job.private,
            age_restricted=job.age_restricted,
            # Withdrawn by Easel (withheld at delivery) is not a moderator's withdrawal.
            withdrawn=job.withdrawn_at is not None and job.withheld_why is None,
            withdrawn_with_source=with_source,
            withdrawn_with_channel=job.withdrawn_with_channel,
            withheld=job.error if ended_at_start else job.withheld_why,
            composed=composed,
            created_at=job.created_at,
            post_attempted_at=job.post_attempted_at,
            posted_ids=posted_ids,
        )
