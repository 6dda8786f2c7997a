"""A member banned, kicked or timed out in a server: Easel stops making pictures for them there.

Discord's ban, kick or timeout (even a ban's message purge) leaves the queue alone: a raider's
queued jobs would go on rendering and posting in the server for minutes. Their unfinished jobs
in that server are cancelled, nothing charged (queued ones refunded, running ones stopped at
their next step and refunded whole: the member did not choose the stop); their jobs in other
servers and in direct messages stay. Work of theirs begun before the stop and still under way
when it comes (a ``--repeat``'s later jobs, a Vary (Region) mask found in words, a result
finished just before) queues or posts nothing more (``StoppedMembers``); work they begin after
it (a kicked member who joined again) is theirs as any member's. What Easel already posted for
them stays for the server's moderators to remove (Delete, or deleting the post, which withdraws
the job: ``cogs.withdrawals``).

What happened while Easel was offline is not replayed by Discord: from start-up
(``MemberStops.start_restored_checks``) Easel asks Discord about each member with restored work
in a server, in the background while it is online; none of that member's restored work renders
or is delivered before the answer (``StoppedMembers.answer_awaited``), and nobody else's waits
for it. Nor is what happened during a gateway gap that Discord does not resume (an
INVALID_SESSION, then a new READY): the members with unfinished or undelivered work are asked
about again the same way (``MemberStops.start_session_checks``)."""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import aiosqlite

from bot.history import History
from bot.jobs import accounting
from bot.jobs.queue import CancelOutcome, JobQueue
from db import guild_settings as settings_audit
from db import jobs as journal

log = logging.getLogger(__name__)

# A stop is imposed, so never charged: STOPPING_FREE.
_ENDED_BY_THE_STOP = frozenset({CancelOutcome.CANCELLED, CancelOutcome.STOPPING_FREE})
# From start-up: members asked about at once, how long one answer may take, and how long the
# restored work may wait for the answers in all beyond the pace's time to ask every member
# (the undecided then keep their jobs).
RESTORED_CHECKS_AT_ONCE = 8
# At most so many questions begun a second, half of Discord's global limit (50 requests a
# second): Easel's other REST requests share it (results and notices posted in channels,
# members and messages fetched), and once it is exceeded discord.py holds every one of them
# until it resets. Interaction answers do not wait: they go through discord.py's webhook
# adapter, which has no global lock, and Discord exempts interaction endpoints from the limit.
RESTORED_CHECKS_PER_S = 25.0
RESTORED_CHECK_TIMEOUT_S = 10.0
RESTORED_CHECKS_DEADLINE_S = 60.0
# How long Easel's stop lets the stops those answers found finish their cancels, whose notices
# may wait on Discord (a 429): each job's end is journaled before its notice, which the next
# start posts. Short: the stop keeps within its 30 s (``bot.app``).
APPLYING_GRACE_S = 3.0
# How long, then, those cut short may take to write the audit entry of the ends they journaled
# (one read and one write), within the process's stop.
CUT_SHORT_AUDIT_S = 0.5
# How long asking Discord for an AutoMod timeout's end may take (its jobs are cancelled first).
AUTOMOD_TIMEOUT_LOOKUP_S = 10.0


class _Paced:
    """Turns at most ``per_s`` a second, in the order they are asked for: each begins a gap
    after the one before it began, however late the loop wakes it (times booked ahead would
    come due together after a busy spell, and begin at once)."""

    def __init__(self, per_s: float) -> None:
        self._gap_s = 1.0 / per_s
        self._next = float("-inf")
        self._lock = asyncio.Lock()

    async def turn(self) -> None:
        loop = asyncio.get_running_loop()
        async with self._lock:
            await asyncio.sleep(max(0.0, self._next - loop.time()))
            self._next = loop.time() + self._gap_s


def _restored_checks_deadline_s(members: int, answers_s: float) -> float:
    """How long the restored work of ``members`` members may wait for their answers in all:
    the pace's time to ask every one (``RESTORED_CHECKS_PER_S``), then ``answers_s`` more, so
    that the last asked are decided as the first (a fixed deadline released those beyond the
    pace's reach undecided, a banned one's jobs with them)."""
    return members / RESTORED_CHECKS_PER_S + answers_s


class CheckOccasion(NamedTuple):
    """Why members are asked about, as the log names it: ``when``, and the jobs held."""

    when: str
    jobs: str


# Easel's start: what happened while it was offline.
START_UP = CheckOccasion("start-up", "restored jobs")
# A new gateway session (a READY after the first): what happened in a gap Discord did not
# resume, whose bans, kicks and audit-log entries it never sends.
NEW_SESSION = CheckOccasion("new gateway session", "unfinished or undelivered jobs")


class StopCause(enum.Enum):
    """Why a member's jobs in a server were cancelled, as the server's audit names it."""

    BAN = "member banned"
    KICK = "member kicked"
    TIMEOUT = "member timed out"
    # Found at start-up: Discord says only "Unknown Member" (banned, kicked or left).
    GONE = "member no longer in the server"
    # Found at start-up: "Unknown Guild" (deleted); or Easel removed from the server (kicked,
    # or the server deleted: ``cancel_server_jobs``). Not audited: nobody is left to read it.
    SERVER_GONE = "server gone"

    @property
    def audited(self) -> bool:
        return self is not StopCause.SERVER_GONE

    @property
    def audited_as(self) -> str:
        """The setting name of the audit row (/easel-admin audit) Easel writes for it."""
        return f"jobs cancelled ({self.value})"


def timed_out_refusal(until: datetime) -> str:
    """The sentence for a member in a timeout: nothing is made for them in that server until
    it ends (Discord shows ``<t:…:f>`` in the reader's own time zone)."""
    stamp = int(until.timestamp())
    return (
        f"⛔ You are in a timeout in this server until <t:{stamp}:f> (<t:{stamp}:R>): Easel "
        "makes and posts nothing for you here until it ends."
    )


class _Stop(NamedTuple):
    began: float  # when Easel heard of it (seconds since the epoch)
    heard: float  # the same, on the monotonic clock
    until: float  # a timeout's end (seconds since the epoch); infinity: a ban's or kick's
    # A ban's or kick's end, on the monotonic clock: a step of the wall clock neither ends
    # nor lengthens it (infinity: a timeout's, which ends at a date).
    expires: float
    # Jobs the queue's start gate ended for it (``StoppedMembers.ends_at_start``): the stop's
    # own cancels find them ended, yet the stop ended them.
    ended_at_start: set[str]


class _Awaited(NamedTuple):
    """A member's work restored at start-up, waiting for Discord's answer about them."""

    answered: asyncio.Event
    job_ids: frozenset[str]
    # When the work waits no more without the answer (a loop time), set by the first check
    # that asks about the member (``answer_due``); None until then.
    due: float | None = None


class StoppedMembers:
    """The (server, member) pairs whose work begun before a stop makes nothing more there until
    a time: a timeout's end, or an hour after a ban or kick, which is ample for the work that
    outlives its cancels (a ``--repeat``'s later jobs, planned one after the other; a Vary
    (Region) mask found in words; a result finished just before, delivered after). Work begun
    after the stop is not held: Easel hears no joins (a privileged intent), so a kicked member
    who joined again would otherwise have their new commands silently dropped; a member still
    in a timeout is refused at admission (``cogs.visibility.check_member_may_act_here``).

    One record whatever the cause; a raid keeps at most ``capacity`` of them (the ended first,
    then the oldest). An unban, or a timeout removed early, forgets the pair. Not stored: a
    restart forgets them, and ``MemberStops.check_restored_jobs`` asks Discord again for the
    work that outlives it; until each member's answer, their restored work waits
    (``answer_awaited``). A moderator's word heard meanwhile (``add``, ``forget``) is that
    answer: it is newer than Discord's, which may have been read before it.

    A command's work is placed by when this process received it against when it heard the
    stop, both on the monotonic clock (``holds``' ``received_at``); other work by its start,
    Discord's time for an interaction (its id) or Easel's for a journaled job, against Easel's
    wall clock when the stop was heard, which assumes a host kept in time (NTP). A ban's or
    kick's hour is an hour of the monotonic clock; a timeout ends at its date."""

    def __init__(
        self,
        ttl_s: float = 3600.0,
        capacity: int = 10_000,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._capacity = capacity
        self._clock = clock  # wall clock: a timeout ends at a date, an interaction has one
        self._monotonic = monotonic  # a ban's or kick's ``ttl_s``
        self._stops: dict[tuple[int, int], _Stop] = {}  # insertion order: oldest first
        # The members whose restored work waits for Discord's answer, and the tasks waiting.
        self._awaited: dict[tuple[int, int], _Awaited] = {}
        self._waiting: set[asyncio.Task[object]] = set()
        self._stopping = False

    def add(self, guild_id: int, user_id: int, until: float | None = None) -> _Stop:
        """Stopped from now until ``until`` (a timeout's end, in seconds since the epoch), or
        for the next ``ttl_s`` (a ban, a kick). The latest word holds: a shortened timeout
        too, and a second stop holds all the work begun before it. The stop (for ``ends_at``,
        and for its cancels: its ``ended_at_start``)."""
        now, heard = self._clock(), self._monotonic()
        key = (guild_id, user_id)
        self.answered(guild_id, user_id)  # the latest word, whoever asked Discord before it
        self._stops.pop(key, None)
        if until is None:
            stop = _Stop(now, heard, math.inf, heard + self._ttl_s, set())
        else:
            stop = _Stop(now, heard, until, math.inf, set())
        self._stops[key] = stop
        if len(self._stops) > self._capacity:
            for ended in [k for k, stop in self._stops.items() if self._ended(stop)]:
                del self._stops[ended]
        while len(self._stops) > self._capacity:
            del self._stops[next(iter(self._stops))]
        return stop

    def forget(self, guild_id: int, user_id: int) -> None:
        self.answered(guild_id, user_id)  # as ``add``: the latest word
        self._stops.pop((guild_id, user_id), None)

    def await_answers(self, restored: Iterable[tuple[str, int, int]]) -> list[tuple[int, int]]:
        """The jobs restored at start-up (id, server, member) wait, each member's until
        Discord's answer about them (``answered``); the members, in order, those still
        awaited (a check cut short by a new session's) first. Work they begin
        after the start does not wait: they use Easel in the server, and admission refuses
        one in a timeout (``cogs.visibility.check_member_may_act_here``)."""
        by_member: dict[tuple[int, int], set[str]] = {}
        for job_id, guild_id, user_id in restored:
            by_member.setdefault((guild_id, user_id), set()).add(job_id)
        carried: dict[tuple[int, int], None] = {}  # still awaited, in order
        for member, job_ids in by_member.items():
            # One still awaited keeps the event its work waits on, and its due time.
            if (awaited := self._awaited.get(member)) is not None:
                self._awaited[member] = awaited._replace(job_ids=awaited.job_ids | job_ids)
                carried[member] = None
            else:
                self._awaited[member] = _Awaited(asyncio.Event(), frozenset(job_ids))
        # Those waiting longest asked first: a new session's check begins again from them.
        return [*carried, *(member for member in by_member if member not in carried)]

    def awaiting_answer(self, guild_id: int, user_id: int) -> bool:
        """Whether the member's restored work still waits for Discord's answer: False once
        given, or once a moderator's word came first (which holds over an answer read
        before it)."""
        return (guild_id, user_id) in self._awaited

    def answer_due(self, guild_id: int, user_id: int, by: float) -> float:
        """When the member's work waits no more without Discord's answer (a loop time):
        ``by``, set by the first check asking about them; a check cutting that one short
        (a new gateway session's) keeps it, so that a storm of them holds nobody longer."""
        awaited = self._awaited.get((guild_id, user_id))
        if awaited is None:
            return by
        if awaited.due is None:
            self._awaited[(guild_id, user_id)] = awaited._replace(due=by)
            return by
        return awaited.due

    def answer_awaited(self, guild_id: int | None, user_id: int, job_id: str) -> bool:
        """Whether job ``job_id``, the member's in ``guild_id``, waits for Discord's answer
        about them (``wait_for_answer``) before it renders or is posted: one restored at
        start-up whose answer is not given yet."""
        if guild_id is None:
            return False
        awaited = self._awaited.get((guild_id, user_id))
        return awaited is not None and job_id in awaited.job_ids

    async def wait_for_answer(self, guild_id: int, user_id: int) -> None:
        """Until the member's restored work waits no more (``awaiting_answer``); then
        ``holds`` says whether the answer stops it. Cancelled when Easel stops first
        (``stop_waiting``): the work stays journaled as it was, for the next start."""
        awaited = self._awaited.get((guild_id, user_id))
        if awaited is None:
            return
        task = asyncio.current_task()
        assert task is not None  # awaited in a task
        if self._stopping:
            task.cancel()  # as those waiting when the stop came
        self._waiting.add(task)
        try:
            await awaited.answered.wait()
        finally:
            self._waiting.discard(task)

    def answered(self, guild_id: int, user_id: int) -> None:
        """The member's restored work waits no more: Discord's answer is applied (a stop
        ``add``ed, or none), or there is none (no clear answer: the work goes on)."""
        awaited = self._awaited.pop((guild_id, user_id), None)
        if awaited is not None:
            awaited.answered.set()

    def stop_waiting(self) -> None:
        """Easel stops: the work waiting for an answer (``wait_for_answer``) is cancelled,
        and stays journaled for the next start's check."""
        self._stopping = True
        for task in list(self._waiting):
            task.cancel()

    def ends_at(self, guild_id: int, user_id: int, until: float, *, of: _Stop) -> None:
        """The end of stop ``of`` learnt after it began (AutoMod's timeout: its audit entry
        names none): it holds the same work, until ``until``. Only while ``of`` is the latest
        word: a stop heard since (a moderator's timeout given, lengthened or shortened, a
        ban, a kick) or a timeout removed holds over an answer asked before it, which may
        predate it (its end earlier or later than the moderator's)."""
        key = (guild_id, user_id)
        if self._stops.get(key) is of:
            # The same ``ended_at_start``; its end a date now.
            self._stops[key] = of._replace(until=until, expires=math.inf)

    def holds(
        self,
        guild_id: int | None,
        user_id: int,
        *,
        began_at: float,
        received_at: float | None = None,
    ) -> bool:
        """Whether the member's work in ``guild_id`` begun at ``began_at`` (seconds since the
        epoch: an interaction's ``created_at``, a job's) is stopped now: a stop came after it
        began and has not ended (a DM: never). ``received_at``: when this process received
        the work's command (the monotonic clock, ``cogs.contexts.received_at``), read instead
        of ``began_at``: both events came in Discord's order over the one gateway, so neither a
        host clock off Discord's nor a step of it misreads which came first."""
        if guild_id is None:
            return False
        key = (guild_id, user_id)
        stop = self._stops.get(key)
        if stop is None:
            return False
        if self._ended(stop):
            del self._stops[key]
            return False
        if received_at is not None:
            return received_at < stop.heard
        return began_at < stop.began

    def _ended(self, stop: _Stop) -> bool:
        return stop.until <= self._clock() or stop.expires <= self._monotonic()

    def ends_at_start(
        self, guild_id: int | None, user_id: int, job_id: str, *, began_at: float
    ) -> bool:
        """Whether job ``job_id``, begun at ``began_at``, is stopped now (``holds``), for the
        queue's start gate, which then ends it: noted so in the latest stop's
        ``ended_at_start``, for that stop's cancels, which find it ended
        (``CancelOutcome.FINISHED``)."""
        if not self.holds(guild_id, user_id, began_at=began_at):
            return False
        assert guild_id is not None  # held in a server only
        self._stops[(guild_id, user_id)].ended_at_start.add(job_id)
        return True


@dataclass(frozen=True)
class Standing:
    """What Discord says of a member of a server now."""

    gone: bool = False  # 404 Unknown Member: banned, kicked or left
    server_gone: bool = False  # 404 Unknown Guild: the server was deleted
    # A timeout in force that binds (the owner and administrators are exempt), in seconds
    # since the epoch.
    timed_out_until: float | None = None


# Asks Discord about (server, member); raises when Discord gives no clear answer.
StandingLookup = Callable[[int, int], Awaitable[Standing]]


class MemberStops:
    def __init__(
        self,
        conn: aiosqlite.Connection,
        queue: JobQueue,
        history: History,
        stopped: StoppedMembers,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._conn = conn
        self._queue = queue
        self._history = history
        self._stopped = stopped
        self._clock = clock
        # The start-up's questions to Discord (``start_restored_checks``), and the stops they
        # found being applied, which a stop of Easel lets finish.
        self._checking: asyncio.Task[None] | None = None
        self._applying: set[asyncio.Future[None]] = set()
        self._stopping = False  # no new gateway session's check begins

    async def cancel_jobs(
        self,
        guild_id: int,
        user_id: int,
        cause: StopCause,
        *,
        easel_id: int,
        until: float | None = None,
    ) -> list[str]:
        """Cancel the member's queued and running jobs in ``guild_id``, audited there as done
        by Easel (``easel_id``, the bot's own user) for ``cause``; their work begun before
        now makes or posts nothing more there until ``until`` (a timeout's end; else for an
        hour). The ids cancelled (a job that ended meanwhile is not among them, unless the
        queue's start gate ended it for this stop: ``StoppedMembers.ends_at_start``)."""
        # First, before any await: a submission that journals after this is cancelled by its
        # submitter (cogs.common), one journaled before is among ``unfinished``.
        stop = self._stopped.add(guild_id, user_id, until)
        return await self._cancel_unfinished(stop, guild_id, user_id, cause, easel_id=easel_id)

    async def cancel_server_jobs(self, guild_id: int, *, easel_id: int) -> list[str]:
        """Easel was removed from ``guild_id`` (or the server deleted): every member's queued
        and running jobs there are cancelled as ``cancel_jobs`` cancels them, refunded, so that
        no device renders for a server Easel can no longer post in. The ids cancelled. One
        member's cancels that raise are logged with their jobs' ids, and stop no other's; the
        queue's start gate still refuses those jobs (``EASEL_REMOVED``)."""
        cause = StopCause.SERVER_GONE
        members = await journal.members_with_unfinished_jobs_in(self._conn, guild_id)
        cancels = await asyncio.gather(
            *(self.cancel_jobs(guild_id, user_id, cause, easel_id=easel_id) for user_id in members),
            return_exceptions=True,
        )
        cancelled: list[str] = []
        for (user_id, job_ids), of_member in zip(members.items(), cancels, strict=True):
            if isinstance(of_member, BaseException):
                log.error(
                    "%s in guild %s: member %s's job(s) %s not cancelled",
                    cause.value,
                    guild_id,
                    user_id,
                    ", ".join(job_ids),
                    exc_info=of_member,
                )
            else:
                cancelled += of_member
        return cancelled

    async def _cancel_unfinished(
        self, stop: _Stop, guild_id: int, user_id: int, cause: StopCause, *, easel_id: int
    ) -> list[str]:
        unfinished = await self._history.unfinished(user_id, guild_id=guild_id)
        owner = accounting.Member(user_id, guild_id)
        # All at once: each cancel tells its job's maker (a REST call, rate-limited per
        # channel), and a running job waiting behind those would finish and post meanwhile.
        # One that raises (a notice refused) is logged; the others, the audit entry and the
        # log stand. An imposed cancel raises no ``UserError`` (``JobQueue.cancel``): one
        # meeting its owner's own cancel of a queued job, wherever that cancel's write is, is
        # answered cancelled and ends the job even if that write is refused.
        cancels = {
            line.job_id: asyncio.create_task(self._queue.cancel(line.job_id, owner, imposed=True))
            for line in unfinished
        }
        try:
            await asyncio.gather(*cancels.values(), return_exceptions=True)
        except asyncio.CancelledError:
            # Cut short (Easel stops: ``stop_restored_checks``) while notices were posted: the
            # ends journaled stand, their notices posted at the next start; so does their
            # audit entry, written now.
            ended = await self._ended_by(stop, cause, guild_id, cancels)
            await self._audit(guild_id, user_id, cause, ended, easel_id=easel_id)
            raise
        cancelled = await self._ended_by(stop, cause, guild_id, cancels)
        await self._audit(guild_id, user_id, cause, cancelled, easel_id=easel_id)
        if cancelled:
            log.info(
                "%s in guild %s: %d unfinished job(s) cancelled (%s)",
                cause.value,
                guild_id,
                len(cancelled),
                ", ".join(cancelled),
            )
        return cancelled

    async def _ended_by(
        self,
        stop: _Stop,
        cause: StopCause,
        guild_id: int,
        cancels: dict[str, asyncio.Task[CancelOutcome]],
    ) -> list[str]:
        """The jobs ``stop``'s ``cancels`` ended, each done or cut short. A cancel done, by its
        outcome: not a job its member's own cancel ended first, but one the queue's start gate
        ended for this stop (started meanwhile: read from this stop, not the member's record,
        which a later stop, a ban seconds after a timeout, replaces). A cancel cut short (its
        notice held), by the end the journal holds."""
        ended = []
        for job_id, cancel in cancels.items():
            if cancel.cancelled():
                if await self._ended_cancelled(job_id):
                    ended.append(job_id)
            elif (error := cancel.exception()) is not None:
                log.error(
                    "%s in guild %s: job %s not cancelled",
                    cause.value,
                    guild_id,
                    job_id,
                    exc_info=error,
                )
            elif cancel.result() in _ENDED_BY_THE_STOP or job_id in stop.ended_at_start:
                ended.append(job_id)
        return ended

    async def _ended_cancelled(self, job_id: str) -> bool:
        """Whether the journal says job ``job_id`` ended cancelled."""
        job = await journal.get_job(self._conn, job_id)
        return job is not None and job.status is journal.JobStatus.CANCELLED

    async def _audit(
        self, guild_id: int, user_id: int, cause: StopCause, cancelled: list[str], *, easel_id: int
    ) -> None:
        """The server's audit entry of the member's jobs ``cancelled`` for ``cause``, as
        Easel's doing (``easel_id``); none when none was, or the cause is not audited."""
        if cancelled and cause.audited:
            await settings_audit.record_change(
                self._conn,
                guild_id,
                easel_id,
                cause.audited_as,
                f"<@{user_id}>: {', '.join(cancelled)}",
                self._clock(),
            )

    async def cancel_for_automod_timeout(
        self, guild_id: int, user_id: int, lookup: StandingLookup, *, easel_id: int
    ) -> None:
        """AutoMod timed the member out (a raider's spam, typically): its audit entry names no
        end. Their jobs are cancelled at once, as for a moderator's timeout, their earlier work
        held for a ban's hour; then Discord is asked when the timeout ends, and the hold
        follows it (shorter or longer). No answer: the hour stays, ample for the work that
        outlives the cancels, and the member is refused at admission while the timeout lasts
        (``cogs.visibility``), so nothing of theirs is lost that the timeout had not stopped.
        A moderator's word heard meanwhile (the timeout changed or removed, a ban, a kick)
        holds over Discord's answer, which may predate it."""
        # As cancel_jobs: the stop first, before any await.
        asked_about = self._stopped.add(guild_id, user_id)
        await self._cancel_unfinished(
            asked_about, guild_id, user_id, StopCause.TIMEOUT, easel_id=easel_id
        )
        try:
            async with asyncio.timeout(AUTOMOD_TIMEOUT_LOOKUP_S):
                standing = await lookup(guild_id, user_id)
        except Exception as unclear:  # the hour stays
            log.warning(
                "AutoMod timeout of member %s in guild %s: its end is unknown (%r); their "
                "earlier work there is held for an hour",
                user_id,
                guild_id,
                unclear,
            )
            return
        if not (standing.gone or standing.server_gone):  # gone: the hour stays, as a kick's
            ended = standing.timed_out_until or self._clock()
            self._stopped.ends_at(guild_id, user_id, ended, of=asked_about)

    def may_work_again(self, guild_id: int, user_id: int) -> None:
        """Unbanned (and joined again), or their timeout removed early: pictures are made for
        them there at once."""
        self._stopped.forget(guild_id, user_id)

    async def start_restored_checks(self, lookup: StandingLookup, *, easel_id: int) -> None:
        """Bans, kicks and timeouts made while Easel was offline: Discord sends none of them
        to a new session. For the queue's start (``JobQueue.start``), once the journaled jobs
        are queued again and before any renders or a finished one is delivered: each
        member's restored work in a server waits for Discord's answer about them
        (``await_restored_answers``), asked in the background (``check_restored_jobs``)
        while Easel goes online; ``stop_restored_checks`` ends it."""
        members = await self.await_restored_answers()
        if members:
            self._checking = asyncio.create_task(
                self.check_restored_jobs(members, lookup, easel_id=easel_id),
                name="easel-restored-checks",
            )

    def start_session_checks(self, lookup: StandingLookup, *, easel_id: int) -> None:
        """A new gateway session (a READY after the first; a RESUMED replays what was
        missed): Discord sends none of the bans, kicks and timeouts of the gap before it. As
        at start-up, each member's unfinished (running too) and undelivered work in a server
        waits from now for Discord's answer about them, asked in the background at the same
        pace. A check still going on is cut short once this one has read them
        (``_check_session``): its members still awaited are asked again first, their work
        waiting on until their first deadline at most (``StoppedMembers.await_answers``,
        ``answer_due``). None once Easel stops (``stop_restored_checks``)."""
        if self._stopping:
            return
        self._checking = asyncio.create_task(
            self._check_session(self._checking, lookup, easel_id), name="easel-session-checks"
        )

    async def _check_session(
        self, going_on: asyncio.Task[None] | None, lookup: StandingLookup, easel_id: int
    ) -> None:
        """The check ``going_on`` is cut short once this one has read whom to ask (its
        members still awaited among them); when the read fails it goes on, its members
        waiting on its answers. Cancelled with this one (Easel's stop, a newer session's)."""
        try:
            members = await self.await_restored_answers(running=True)
        except asyncio.CancelledError:
            if going_on is not None:
                going_on.cancel()
            raise
        except Exception:  # nobody more waits: the work goes on, as before the gap
            log.exception("%s: the jobs to ask about were not read", NEW_SESSION.when)
            if going_on is not None:
                await going_on  # a cancel of this one cancels it
            return
        if going_on is not None:
            going_on.cancel()
        await self.check_restored_jobs(members, lookup, easel_id=easel_id, occasion=NEW_SESSION)

    async def await_restored_answers(self, *, running: bool = False) -> list[tuple[int, int]]:
        """Each member's queued (and, ``running``, running) and finished-undelivered jobs in a
        server wait, from now, for Discord's answer about them
        (``StoppedMembers.await_answers``); the members, to be asked in about the order the
        queue would start or finish their work (the first to render is freed first), then
        those with results to post only. About: by their first job's class then submit time
        (the journal's order), aside from the scheduler's aging and its returners
        (``bot.jobs.scheduler``); its fair order, walked whole, would hold the start
        (``setup_hook``) for seconds in a deep queue."""
        queued = await journal.jobs_with_status(self._conn, journal.JobStatus.QUEUED)
        # After the queued: a job started between the two reads is read running (read
        # before them, it would be read by neither).
        rendering = (
            await journal.jobs_with_status(self._conn, journal.JobStatus.RUNNING) if running else []
        )
        restored = [
            *rendering,
            *sorted(queued, key=lambda job: -job.priority),  # stable: submit time within
            *await journal.finished_undelivered(self._conn),
        ]
        return self._stopped.await_answers(
            (job.id, job.guild_id, job.user_id) for job in restored if job.guild_id is not None
        )

    async def stop_restored_checks(self, deadline: float | None = None) -> None:
        """Easel stops: no member is asked about any more, and the work waiting for an answer
        stays journaled for the next start (``StoppedMembers.stop_waiting``); a stop being
        applied (its cancels) is given ``APPLYING_GRACE_S`` to finish, and never past
        ``deadline`` (a loop time: the process's stop), then cut short: the ends it journaled
        stand, their notices posted at the next start."""
        self._stopping = True
        self._stopped.stop_waiting()
        loop = asyncio.get_running_loop()
        grace_s = APPLYING_GRACE_S
        if deadline is not None:
            grace_s = max(0.0, min(grace_s, deadline - loop.time()))
        grace_ends = loop.time() + grace_s
        if self._checking is not None:
            self._checking.cancel()
            # Bounded too: a lookup that swallows its cancel must not hold the stop.
            await asyncio.wait({self._checking}, timeout=grace_s)
        if not self._applying:
            return
        _, unfinished = await asyncio.wait(
            self._applying, timeout=max(0.0, grace_ends - loop.time())
        )
        if unfinished:
            log.warning(
                "stopping: %d stop(s) found at start-up cut short after %.1f s; the cancels "
                "journaled stand, their notices are posted at the next start",
                len(unfinished),
                grace_s,
            )
            for applying in unfinished:
                applying.cancel()
            # Their cancellation writes the audit entry of the ends they journaled
            # (``_cancel_unfinished``) before the database closes (the queue's stop is next),
            # unless it takes longer: then the closing database refuses it.
            audit_s = CUT_SHORT_AUDIT_S
            if deadline is not None:
                audit_s = max(0.0, min(audit_s, deadline - loop.time()))
            await asyncio.wait(unfinished, timeout=audit_s)

    async def check_restored_jobs(
        self,
        members: Sequence[tuple[int, int]],
        lookup: StandingLookup,
        *,
        easel_id: int,
        deadline_s: float | None = None,
        occasion: CheckOccasion = START_UP,
    ) -> None:
        """Asks Discord about each of ``members`` (a few at once, ``RESTORED_CHECKS_PER_S``
        begun a second at most), whose restored work waits for the answer: one gone or in a
        timeout has their unfinished jobs there cancelled, and is held in ``StoppedMembers``
        so that their finished, undelivered results are not posted; so has every member of a
        server that is gone (Unknown Guild). A member Discord gives no clear answer about (no
        access, an outage, no answer in time, none before the whole check's deadline:
        ``deadline_s``, by default ``RESTORED_CHECKS_DEADLINE_S``, beyond the pace's time to
        ask them all) keeps their jobs: a guess would cancel honest members' work. A
        moderator's word heard before the answer holds over it
        (``StoppedMembers.awaiting_answer``)."""
        if not members:
            return
        at_once = asyncio.Semaphore(RESTORED_CHECKS_AT_ONCE)
        paced = _Paced(RESTORED_CHECKS_PER_S)
        loop = asyncio.get_running_loop()
        whole_s = _restored_checks_deadline_s(
            len(members), RESTORED_CHECKS_DEADLINE_S if deadline_s is None else deadline_s
        )
        log.info(
            "%s: asking Discord about %d member(s) with %s, in the background; each one's "
            "%s wait for their own answer (%.0f s at most)",
            occasion.when,
            len(members),
            occasion.jobs,
            occasion.jobs,
            whole_s,
        )
        deadline = loop.time() + whole_s
        undecided: list[tuple[int, int]] = []
        servers_gone: set[int] = set()  # asked once: its other members are not asked
        decided_by_discord = 0  # neither undecided nor unclear, nor a moderator's word first

        async def check(guild_id: int, user_id: int) -> None:
            # The deadline bounds the asking alone: a cancel once begun is finished, even
            # when Easel stops meanwhile (``stop_restored_checks``). A member a check cut
            # short asked about keeps that check's.
            due = self._stopped.answer_due(guild_id, user_id, by=deadline)
            try:
                async with asyncio.timeout_at(due), at_once:
                    if guild_id in servers_gone:
                        standing = Standing(server_gone=True)
                    elif not self._stopped.awaiting_answer(guild_id, user_id):
                        return  # a moderator's word came first
                    else:
                        await paced.turn()  # live interactions keep most of the rate limit
                        async with asyncio.timeout(RESTORED_CHECK_TIMEOUT_S):
                            standing = await lookup(guild_id, user_id)
            except Exception as unclear:  # any failure leaves the jobs
                if isinstance(unclear, TimeoutError) and loop.time() >= due:
                    undecided.append((guild_id, user_id))  # logged once, below
                    return
                log.warning(
                    "%s: could not ask Discord about member %s of guild %s (%r); their %s "
                    "there are kept",
                    occasion.when,
                    user_id,
                    guild_id,
                    unclear,
                    occasion.jobs,
                )
                return
            if standing.server_gone:
                servers_gone.add(guild_id)
            if not self._stopped.awaiting_answer(guild_id, user_id):
                return  # a moderator's word came while Discord was asked: it is newer
            nonlocal decided_by_discord
            decided_by_discord += 1
            applying = asyncio.ensure_future(self._apply(guild_id, user_id, standing, easel_id))
            self._applying.add(applying)
            applying.add_done_callback(self._applying.discard)
            await asyncio.shield(applying)

        async def answered(guild_id: int, user_id: int) -> None:
            try:
                await check(guild_id, user_id)
            except Exception:  # the stop, added first, holds their work all the same
                log.exception(
                    "%s: the stop of member %s of guild %s was not applied in full",
                    occasion.when,
                    user_id,
                    guild_id,
                )
            # A stop applied, or none: the work waits no more. Not when Easel stops first
            # (cancelled): it waits on, journaled, for the next start's check.
            self._stopped.answered(guild_id, user_id)

        await asyncio.gather(*(answered(guild_id, user_id) for guild_id, user_id in members))
        if undecided:
            log.warning(
                "%s: %d member(s) not decided in time (%.0f s for those first asked now); "
                "their %s are kept: %s",
                occasion.when,
                len(undecided),
                whole_s,
                occasion.jobs,
                ", ".join(f"member {user} of guild {guild}" for guild, user in undecided),
            )
        log.info(
            "%s: %d of %d member(s) with %s decided by Discord's answer",
            occasion.when,
            decided_by_discord,
            len(members),
            occasion.jobs,
        )

    async def _apply(self, guild_id: int, user_id: int, standing: Standing, easel_id: int) -> None:
        """What Discord said of the member, asked at start-up or in a new session: their
        jobs in the server cancelled when they are gone, in a timeout, or the server is gone."""
        if standing.server_gone:
            await self.cancel_jobs(guild_id, user_id, StopCause.SERVER_GONE, easel_id=easel_id)
        elif standing.gone:
            await self.cancel_jobs(guild_id, user_id, StopCause.GONE, easel_id=easel_id)
        elif (until := standing.timed_out_until) is not None and until > self._clock():
            await self.cancel_jobs(
                guild_id, user_id, StopCause.TIMEOUT, easel_id=easel_id, until=until
            )
