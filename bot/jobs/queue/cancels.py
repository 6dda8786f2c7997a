"""Cancels: a queued job's (ended at once, refunded) and a running one's (its batch stops it;
its owner pays the GPU time it used until they chose the stop), each asked in the journal before
its asker is told (``Cancels.cancel``); the stops a moderator's deletion or a narrowed list
imposes (``Cancels.stop_withdrawn``, ``Cancels.stop_imposed``); and the refund of a finished
job whose pictures a moderator withheld (``Cancels.refund_withheld``), which ends no job but
pays back as a cancel does."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiosqlite

from bot.jobs import accounting
from bot.jobs.queue.ends import JobEnds
from bot.jobs.queue.values import CancelOutcome, KeptEnd
from bot.jobs.scheduler import FairScheduler
from bot.user_errors import Reason, UserError
from db import jobs as journal
from db import quotas as ledger
from db.database import transaction
from inference.types import RenderRequest

log = logging.getLogger(__name__)

_UNFINISHED = frozenset({journal.JobStatus.QUEUED, journal.JobStatus.RUNNING})


@dataclass
class RunningBatch:
    """Jobs a slot was handed together, from the scheduler's hand-out (before the journal says
    running) until their render ends. A cancel meanwhile is the batch's to honour, never a
    refund of a job the slot renders anyway: a job cancelled before the render starts is left
    out of it; the render stops once every one it renders is cancelled."""

    job_ids: tuple[str, ...]
    # Its slot renders in this process: marking its jobs running counts a render attempt.
    in_process: bool = True
    # Its render is under way: a job cancelled before is left out of it, refunded whole.
    rendering: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    # Each cancelled job: whether its owner pays the GPU time it used (they chose the stop).
    cancelled: dict[str, bool] = field(default_factory=dict)
    # When each cancelled job's first stop landed (``time.perf_counter``): one stopped while
    # its partners' pictures render on pays only its share of the render until then.
    cancelled_at: dict[str, float] = field(default_factory=dict)
    # How each cancelled job's end is recorded and told: "cancelled", or why the rules of now
    # refuse it (``Cancels.stop_imposed``).
    why: dict[str, str] = field(default_factory=dict)
    # Jobs left out of the render: their scheduler slots were freed when it started, or when
    # each was stopped while the render went on for the others; their ends are written
    # there, never by the render's end.
    left_out: set[str] = field(default_factory=set)
    # When its render began (``time.perf_counter``) and each job's weight in it (its pictures
    # at its prompts' work): what a job stopped while the render goes on is charged
    # (``charge_at_stop``).
    render_started: float = 0.0
    weights: dict[str, float] = field(default_factory=dict)
    # A step of its render was reported (``JobQueue._progress_for``): device work began, so a
    # refusal after it (a /compare's later cell) is no longer free (``_failure_seconds``).
    steps_seen: bool = False

    def cancel(self, job_id: str, *, owner_pays: bool, why: str = "cancelled") -> bool:
        """Whether the job's owner will pay the GPU time it used: it renders, and they chose
        the stop."""
        # A refund wins: one cancel the owner did not choose (a ban) makes the stop free.
        self.cancelled[job_id] = self.cancelled.get(job_id, True) and owner_pays
        # The first stop's time and why stand.
        self.cancelled_at.setdefault(job_id, time.perf_counter())
        self.why.setdefault(job_id, why)
        # Those left out (cancelled, or refused at its start) are not rendered: once every
        # other one is cancelled, nothing of the render is wanted.
        if (self.cancelled.keys() | self.left_out) >= set(self.job_ids):
            self.stop.set()
        return self.rendering and self.cancelled[job_id]

    def started_render(self, requests: Mapping[str, RenderRequest]) -> None:
        """Its render begins now, each job rendering its request's pictures."""
        self.render_started = time.perf_counter()
        self.weights = {
            job_id: accounting.batch_weight(request, request.count)
            for job_id, request in requests.items()
        }

    def share_until_stop(self, job_id: str) -> float:
        """The GPU seconds cancelled ``job_id`` used as it ends at its stop while the render
        goes on for the others: its share (by weight, as the render's end shares it) of the
        render until the stop, as ``stops`` reckons it at the render's end, whoever pays."""
        until_stop = max(0.0, self.cancelled_at[job_id] - self.render_started)
        return until_stop * self.weights.get(job_id, 0.0) / (sum(self.weights.values()) or 1)

    def charge_at_stop(self, job_id: str) -> float | None:
        """The GPU seconds cancelled ``job_id`` is charged of ``share_until_stop``; None
        (refunded whole) as ``Stop.charge`` says."""
        stop = Stop(self.cancelled[job_id], 1.0, self.why[job_id])
        return stop.charge(self.share_until_stop(job_id))

    def renders_on(self) -> bool:
        """Whether its render goes on for jobs not cancelled: one cancelled meanwhile is
        stopped for its member alone (its progress, its charge), its row rendered with the
        others' (one call renders them all)."""
        return self.rendering and not self.stop.is_set()

    def stops(self, started: float, ended: float) -> dict[str, Stop]:
        """Each cancelled job's stop, as its end is recorded: its render began at ``started``
        and ended at ``ended`` (``time.perf_counter``)."""
        took = ended - started

        def before_stop(job_id: str) -> float:
            if took <= 0:
                return 1.0
            return min(1.0, max(0.0, (self.cancelled_at[job_id] - started) / took))

        return {
            job_id: Stop(owner_pays, before_stop(job_id), self.why[job_id])
            for job_id, owner_pays in self.cancelled.items()
        }


@dataclass(frozen=True)
class Stop:
    """A job cancelled in its running batch, as its end is recorded."""

    owner_pays: bool  # its owner chose the stop: they pay its GPU time until it
    # The part of the render's time before the stop landed (0 to 1): the part of its share
    # its owner pays (a batch renders on for its partners; one that stops pays about all).
    before_stop: float
    why: str  # its recorded end: "cancelled", or why the rules of now ended it

    def charge(self, used_s: float) -> float | None:
        """The GPU seconds it is charged of its share ``used_s``: those before the stop when
        its owner chose it; None (refunded whole) when someone else did, or it used none."""
        charged = used_s * self.before_stop
        return charged if self.owner_pays and charged > 0 else None


def _stopper(job: journal.JobRecord, by: accounting.Member, *, imposed: bool) -> journal.StoppedBy:
    """Who stops ``job`` as ``by`` cancels it: its maker themself, a stop ``imposed`` on them
    (a ban's, a withdrawal's: a moderator's withdrawal recorded itself as theirs first), or
    an admin stopping another member's job, a moderator's act."""
    if imposed:
        return journal.StoppedBy.IMPOSED
    if job.user_id == by.user_id:
        return journal.StoppedBy.MEMBER
    return journal.StoppedBy.MODERATOR


def _not_cancelled(job_id: str) -> UserError:
    """What the member is told of a cancel the journal refused."""
    return UserError(
        f"Job `{job_id}` was not cancelled: Easel's database is busy. Try again in a minute.",
        Reason.BUSY,
    )


class Cancels:
    def __init__(
        self,
        conn: aiosqlite.Connection,
        ends: JobEnds,
        scheduler: FairScheduler,
        wakeup: asyncio.Condition,
        running: dict[str, RunningBatch],
        waiting_to_start: Mapping[str, asyncio.Future[None]],
        schedule_again: Callable[[journal.JobRecord, bool], None],
        now: Callable[[], float],
        stopped_in_batch: Callable[[str, bool, bool], Awaitable[bool]],
    ) -> None:
        self._conn = conn
        self._ends = ends
        # The queue's scheduler and the lock it is changed under (``JobQueue._wakeup``).
        self._scheduler = scheduler
        self._wakeup = wakeup
        # The queue's batches by job, from their hand-out until their render ends: read only.
        self._running = running
        # Those of them that wait to start, each with its wait (``JobQueue._wait_to_start``):
        # read only, but for the wait a cancel ends.
        self._waiting_to_start = waiting_to_start
        # Queues a job again as the journal holds it (queued, reserved), under ``_wakeup``, its
        # member as the scheduler held them when it left (``FairScheduler.started_before``).
        self._schedule_again = schedule_again
        self._now = now
        # Told of a job stopped while its batch renders on for others' jobs, whether its owner
        # pays, and whether the stop was imposed (``JobQueue._stopped_in_batch``): it ends at
        # once, and its member sees it; whether its owner was charged at that end.
        self._stopped_in_batch = stopped_in_batch
        # Queued jobs whose cancel is being written (``cancel``), and jobs stopped in a batch
        # that renders on whose end is (``_stop_running``): out of the scheduler meanwhile, so
        # a second click is told so, not that the job ended; each with who stops it (/queue
        # says it, the journal recording it only with that end).
        self._cancelling: dict[str, journal.StoppedBy] = {}
        # Those of them a stop was imposed on meanwhile (a ban's): their cancel, refused, ends
        # them all the same rather than queues them again.
        self._imposed_meanwhile: set[str] = set()

    async def cancel(
        self,
        job_id: str,
        by: accounting.Member,
        *,
        imposed: bool = False,
        why: str = "cancelled",
    ) -> CancelOutcome:
        """Cancel a queued job (refunded, the owner is told) or stop a running one.

        ``by`` acts where they are: a job of another guild (or of DMs) is answered as unknown,
        so its existence does not leak; there only its owner or an admin may cancel it.

        Who pays for a stop: a running job its owner stops themselves is charged the GPU time
        it used (no pictures); one an admin stops (another member's job), or whose stop is
        ``imposed`` on its owner (a ban: they did not choose it), or that was handed to its
        device but not yet rendering, is refunded whole: STOPPING_FREE tells it from STOPPING.
        A running job whose batch renders on for others' jobs (one call renders them all) is
        stopped for its member at once: no more progress, charged (if at all) its share of the
        render until now, and told so (STOPPED_IN_BATCH, or STOPPING_FREE); its row renders
        on, its pictures dropped. ``why``: its end as recorded and told, for a stop
        ``imposed`` by the rules of now (``stop_imposed``).

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
        another stop ended the job meanwhile (``_ask_stop``): its asker is told it stops.

        A job rendered or failed whose end the journal refused, kept for the sweep
        (``JobEnds.ended_unrecorded``), is too late to cancel: ``UserError`` says it is posted,
        or its maker told why it failed, once Easel's storage takes it. Not for a stop
        ``imposed`` on its maker (a ban's, a withdrawal's): a result kept is then ended as a
        cancel, refunded, never posted (``JobEnds.cancel_kept_result``: STOPPING_FREE, as for
        a running job); a failure kept is FINISHED, as any job ended."""
        job = await journal.get_job(self._conn, job_id)
        if job is None or job.guild_id != by.guild_id:
            return CancelOutcome.UNKNOWN
        if job.user_id != by.user_id and not by.is_admin:  # an admin of this job's guild
            return CancelOutcome.NOT_YOURS
        if kept_end := self._ends.ended_unrecorded(job_id):
            # Ended, its end kept for the sweep: the journal says running, and its member
            # still sees its progress, so "finished" would read as lost.
            if imposed:
                stopped = await self._ends.cancel_kept_result(job_id)
                return CancelOutcome.STOPPING_FREE if stopped else CancelOutcome.FINISHED
            raise UserError(
                f"Too late to cancel job `{job_id}`: "
                + (
                    "it has rendered, and it is posted"
                    if kept_end is KeptEnd.RENDERED
                    else "it failed, and its maker is told why"
                )
                + " once Easel's storage (full or busy right now) takes it.",
                Reason.BUSY,
            )
        if job_id in self._cancelling:
            return await self._meet_other_cancel(job_id, imposed=imposed)
        stopped_by = _stopper(job, by, imposed=imposed)
        owner_pays = stopped_by is journal.StoppedBy.MEMBER
        # This click is the first stop unless the journal held one when it was read: a
        # withdrawal committed while its write waits for another writer's lock is recorded
        # under it. An imposed stop (tried once, no wait) keeps the first recorded.
        clicked_first = not imposed and job.stopped_by is None
        # Stopped already, its end waiting for the journal: the journal says running still.
        if (kept := self._ends.kept_cancel(job_id, owner_pays=owner_pays)) is not None:
            return kept
        asked = False  # this call recorded the stop as asked (``_ask_stop``)
        # Its batch as the stop was asked: one another cancel stopped meanwhile ends cancelled.
        asked_of: RunningBatch | None = None
        while True:
            if (running := self._running.get(job_id)) is not None:
                if not asked:
                    asked_of = running
                # A stop by the rules of now is not asked: a restart before its end is written
                # judges the job again at its start, and ends it with its real why.
                if not asked and why == "cancelled":
                    asked = await self._ask_stop(
                        job_id,
                        imposed=imposed,
                        of=running,
                        stopped_by=stopped_by,
                        clicked_first=clicked_first,
                    )
                stopping = await self._stop_running(
                    job_id, stopped_by=stopped_by, why=why, imposed=imposed
                )
                if stopping is not None:
                    return stopping
                # Ended meanwhile, or queued again as its start did not happen.
            async with self._wakeup:
                # Their last job out, a member may leave the scheduler: back, as they were.
                started_before = self._scheduler.started_before(job.user_id)
                removed = self._scheduler.cancel(job_id)  # queued only
                self._wakeup.notify_all()
            if removed:
                break
            if job_id not in self._running:
                if job_id in self._cancelling:
                    # Another cancel took it from the queue while this waited for the lock, and
                    # writes its end: not finished yet, and that write may be refused.
                    return await self._meet_other_cancel(job_id, imposed=imposed)
                if (
                    ended := await self._ended_by_another_stop(
                        job_id, asked_of, owner_pays=owner_pays
                    )
                ) is not None:
                    return ended  # this ask is kept, and answered as that stop ended it
                if asked:
                    await self._forget_ask(job_id)
                return CancelOutcome.FINISHED
            # Handed to its device while this waited for the lock (the dispatcher registers a
            # batch as running before its first await): stopped as a running job.
        self._cancelling[job_id] = stopped_by
        try:
            if imposed and asked_of is None:
                # Recorded as asked like a running job's stop, so that a start ends it should
                # its end be refused and kept only in this process.
                asked = await self._ask_stop(job_id, imposed=True, stopped_by=stopped_by)
            if asked or imposed:
                # Kept for the sweep if the journal refuses its end, not rendered here.
                await self._ends.end_cancelled(
                    job_id,
                    why,
                    retried=not imposed,
                    ask_first=not asked,
                    stopped_by=stopped_by,
                )
                return CancelOutcome.CANCELLED
            # Taken from the scheduler by this click (``clicked_first``).
            recorded = await self._ends.finish_unsuccessfully(
                job_id,
                "cancelled",
                cancelled=True,
                stopped_by=stopped_by,
                clicked_first=clicked_first,
            )
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
                        self._schedule_again(job, started_before)
                        self._wakeup.notify_all()
                if imposed_meanwhile:
                    # Its stopper is the imposed stop's, recorded with its ask (this one's
                    # write was refused).
                    await self._ends.end_cancelled(
                        job_id, "cancelled", retried=False, stopped_by=journal.StoppedBy.IMPOSED
                    )
                    return CancelOutcome.CANCELLED
        finally:
            self._cancelling.pop(job_id, None)
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

    def stopper(self, job_id: str) -> journal.StoppedBy | None:
        """Who stops ``job_id`` whose end is being written here (``_cancelling``); None:
        none is."""
        return self._cancelling.get(job_id)

    def stopping(self, job_id: str) -> bool:
        """Whether ``job_id`` is cancelled here, its end not written yet: that end being
        written (``_cancelling``: minutes on a busy database), kept for the sweep, or its
        batch stopping it (at its next step)."""
        running = self._running.get(job_id)
        return (
            job_id in self._cancelling
            or self._ends.cancel_unrecorded(job_id)
            or (running is not None and job_id in running.cancelled)
        )

    def imposed_meanwhile(self, job_id: str) -> bool:
        """Whether a stop was imposed on the owner of ``job_id`` while another cancel of it
        is written (``_impose_meanwhile``)."""
        return job_id in self._imposed_meanwhile

    async def _impose_meanwhile(self, job_id: str) -> CancelOutcome:
        """A stop imposed on queued ``job_id``'s owner (a ban's, a withdrawal's) while another
        cancel of it (its owner's) is written, tried for minutes: not dropped, nor made to
        wait. Its ask is recorded (tried once), so that a start ends the job, and the other
        cancel, should the journal refuse its end, ends it all the same (kept for the sweep),
        rather than queues it again to be rendered and withheld unrefunded. Answered
        ``BEING_CANCELLED``: the other cancel ends it (a ban's audit does not claim it)."""
        self._imposed_meanwhile.add(job_id)
        await self._ask_stop(job_id, imposed=True, stopped_by=journal.StoppedBy.IMPOSED)
        return CancelOutcome.BEING_CANCELLED

    async def _ask_stop(
        self,
        job_id: str,
        *,
        imposed: bool,
        stopped_by: journal.StoppedBy,
        of: RunningBatch | None = None,
        clicked_first: bool = False,
    ) -> bool:
        """Record in the journal that a stop of running ``job_id`` (its batch ``of``; or of a queued
        one, ``imposed``) was asked by ``stopped_by`` (``clicked_first``: ``JobEnds.write_ask``),
        before it is stopped and its asker told so; whether it was recorded. Its end is written once
        its render stops (a queued one's at once), and a journal that refuses that write then keeps
        it only in this process (``JobEnds.record_cancel``): were Easel stopped before it is
        written, the next start would render and charge a job its member was told stops. With the
        ask recorded, that start ends it instead, refunded whole. An ask the journal refuses raises
        ``UserError`` (the job is not stopped, and its asker is told to try again, rather than told
        a stop the journal may lose), unless the stop is ``imposed``: that one is tried once, and
        made all the same (``JobEnds.write_ask``); nor when another stop (a ban's, imposed while
        this one's tries ran) stopped the job meanwhile (``_ended_by_another_stop``): its asker is
        told it stops."""
        try:
            await self._ends.write_ask(
                job_id, retried=not imposed, stopped_by=stopped_by, clicked_first=clicked_first
            )
        except aiosqlite.OperationalError:
            # Read only: the asker's stop is not made, so it changes no charge (``owner_pays``).
            if (
                not imposed
                and await self._ended_by_another_stop(job_id, of, owner_pays=True) is None
            ):
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

    async def _ended_by_another_stop(
        self, job_id: str, of: RunningBatch | None, *, owner_pays: bool
    ) -> CancelOutcome | None:
        """How a stop of ``job_id`` (asked in its running batch ``of``; None: asked of it
        queued) is answered when another stop ended the job meanwhile, or None (none did). The
        one place that asks: the other stop marked it in ``of`` (left out of it, or its render
        stopped) or in the batch it renders alone in since ``of`` failed; or its end is kept
        for the sweep (``JobEnds.kept_cancel``: ``owner_pays`` False, a stop its owner did not
        choose, makes that end free); or, ``of`` released since (this ask's tries take
        minutes), the journal says it ended cancelled (``_ended_cancelled``)."""
        for batch in (of, self._running.get(job_id)):
            if batch is not None and job_id in batch.cancelled:
                owner_charged = batch.rendering and batch.cancelled[job_id]
                return CancelOutcome.STOPPING if owner_charged else CancelOutcome.STOPPING_FREE
        if (kept := self._ends.kept_cancel(job_id, owner_pays=owner_pays)) is not None:
            return kept
        return None if of is None else await self._ended_cancelled(job_id)

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

    async def _stop_running(
        self, job_id: str, *, stopped_by: journal.StoppedBy, why: str, imposed: bool
    ) -> CancelOutcome | None:
        """Stop ``job_id`` if its batch is running (None: it is not); one whose batch renders
        on for others' jobs ends before this returns (``JobQueue._stopped_in_batch``: its end
        tried once when ``imposed``, as ``cancel`` says), held in ``_cancelling`` while its end
        is written (out of the running batches, not finished: a second cancel is told so)."""
        if (running := self._running.get(job_id)) is None:
            return None
        owner_pays = stopped_by is journal.StoppedBy.MEMBER
        owner_charged = running.cancel(job_id, owner_pays=owner_pays, why=why)
        if running.renders_on():
            self._cancelling[job_id] = stopped_by
            try:
                # Answered as charged at its end: a ban meanwhile makes it free.
                charged = await self._stopped_in_batch(job_id, owner_charged, imposed)
            finally:
                self._cancelling.pop(job_id, None)
                self._imposed_meanwhile.discard(job_id)
            return CancelOutcome.STOPPED_IN_BATCH if charged else CancelOutcome.STOPPING_FREE
        if owner_charged:
            return CancelOutcome.STOPPING
        if (wait := self._waiting_to_start.get(job_id)) is not None and wait.cancel():
            # Waiting to start (a restored job, for Discord's answer about its maker): it
            # never started, and ends now (``JobQueue._queue_again_after``), not once that
            # answer comes.
            return CancelOutcome.CANCELLED
        return CancelOutcome.STOPPING_FREE

    async def stop_withdrawn(self, job_ids: Sequence[str]) -> list[str]:
        """Stop those of ``job_ids`` still queued or running: withdrawn because a moderator
        deleted the picture they are made from (``db.history.withdraw_deleted_results``), so
        their results would be withheld anyway (``FinishedJob.withdrawn``). The stop is imposed
        on their makers: refunded whole, each write tried once (``cancel``), so a busy
        database delays each by a busy timeout per write (its ask, its end), not minutes.
        Returns those stopped (one its owner's cancel is being written for among them:
        ``_impose_meanwhile``)."""
        return await self.stop_imposed(dict.fromkeys(job_ids, "cancelled"))

    async def stop_imposed(self, whys: Mapping[str, str]) -> list[str]:
        """Stop those of the jobs ``whys`` names still queued or running, each ended with its
        why (as recorded and told: "cancelled", or why the rules of now refuse it), as
        ``stop_withdrawn`` stops them; returns those stopped."""
        stopped = []
        for job_id, why in whys.items():
            job = await journal.get_job(self._conn, job_id)
            if job is None or job.status not in _UNFINISHED:
                continue
            owner = accounting.Member(job.user_id, job.guild_id)
            outcome = await self.cancel(job_id, owner, imposed=True, why=why)
            if outcome in (
                CancelOutcome.CANCELLED,
                CancelOutcome.STOPPING_FREE,
                CancelOutcome.BEING_CANCELLED,
            ):
                stopped.append(job_id)
        return stopped

    async def refund_withheld(self, job_id: str) -> bool:
        """Give back a finished job's quota, its charge included: its result is withheld for a
        rule changed since its submit, not by its maker (``accounting.refund_withheld``);
        whether it stands refunded."""
        return await accounting.refund_withheld(self._conn, job_id, self._now())
