"""The fair scheduler: which queued jobs a free device should render next.

Pure and synchronous: no I/O, no clock of its own (every time-dependent call takes ``now``,
which must never decrease), and deterministic for a given sequence of calls.

Fair order
    1. Strict priority by *effective* class: ``PRIORITY`` > ``STANDARD`` > ``RELAX``. A job is
       promoted one class for every ``aging_seconds`` it has waited (capped at ``PRIORITY``).
       Within a guild (direct messages are one guild here) the class decides, and among
       ``PRIORITY`` jobs those that have waited ``aging_seconds`` go before a priority role's
       *fresh* jobs, which have not, of users who have not started since they became known
       (so an endless stream of new priority members, each first by rule 2, cannot hold an
       aged job back, while a member who has started keeps their role's place by rule 2;
       without roles every ``PRIORITY`` job is aged and nothing changes). Between guilds a
       job's *rank* does: its class, but a ``PRIORITY`` job (a priority role's) ranks as a
       ``STANDARD`` job submitted when it was, aging included, unless its guild is in
       ``priority_across_guilds`` (the operator's choice). A
       guild ranks as the best of its users' next jobs and is placed by its least *share*
       among the users of that rank (rule 2's tally, with a level of its own, moved by the
       turns the guild took on it). Its turn goes to its first job in its own order, and is
       charged to that user's turn and to the sharer's share (the same user without priority
       roles). So a server's priority role reorders who uses the server's turns, never how
       many it gets; and a job that has waited ``aging_seconds`` (twice that from ``RELAX``)
       ranks ``PRIORITY`` everywhere (no higher than ``STANDARD`` while servers take turns,
       below), lifting its guild while its share pays for the lift: nothing starves forever.
    2. Within a class, fair shares of work across users: the user whose starts add up to the
       least work goes first (a user who never started a job goes before everyone who has).
       Each start moves its user back by the job's ``est_seconds`` (``_LEAST_WORK_S`` at
       least), from their own tally or the queue's level, whichever is later: the level is the
       tally of the user first in the fair order at each start, so time spent idle, capped or
       behind a higher class is not saved up (one turn first, as in round robin). A job's end
       (``finish``) may put the device seconds it was measured to use in place of its
       estimate (one that used none is taken back, as if it never started); the time it used
       beyond that moves the user back less what the level added to their tally at their
       starts since (the level moved on while the job ran: that time is not counted
       twice). A member sending 16-picture jobs and one sending single pictures thus get
       about equal device time, not a turn each. Equal tallies go to the
       user who started least recently, then to the one whose next job was submitted first.
       A user idle (nothing queued or running) for ``IDLE_USER_FORGOTTEN_S`` is forgotten
       whole; back, their submit says whether they ever started a job (the caller reads the
       journal): then they go after the users who never started and before everyone who
       started since, and several such returners go by their next job's submit time.
    3. Within a user, first in first out (among the jobs that can run on the device asked for):
       a user's job never starts before one of theirs that is ahead of it.
    Servers take turns (``fairness`` ``servers``, the operator's EASEL_FAIRNESS): between
    guilds of one rank, rule 1's share gives way to the guild's own *tally*, rule 2's count
    kept for the guild as a whole (direct messages are one guild here too): each start moves
    it back by the job's work from its tally or the guilds' level (the tally of the guild first
    at each start), equal tallies going to the guild that started least recently. So guilds
    with jobs waiting get about equal device time, however many of their members wait, and a
    guild back from idle goes first once and saves up nothing. Tallies are kept for every guild
    seen (about 250 bytes each: 2.5 MB for 10,000) and none across a restart: then every guild
    is new, and among guilds of one rank each one waiting starts once before any starts twice.
    Within the guild nothing changes (aging included), and rank still goes first: an operator's
    priority server's priority role lifts its guild past the guilds of lower rank, its guild's
    tally paying for the lift. Aging lifts a job's rank no higher than ``STANDARD`` here: the
    tallies already bound every guild's wait, and a busy guild's aged backlog ranking
    ``PRIORITY`` would take every turn once the queue is ``aging_seconds`` deep. Only with
    priority servers listed does aging still lift a job to ``PRIORITY`` between guilds, as
    nothing else ends their priority roles' hold on the others; servers then take turns among
    the jobs that have not waited ``aging_seconds``, and the aged ones go first. A member gets
    a turn in each guild they use (the operator's EASEL_ALLOWED_SERVERS keeps strangers out).
    ``members`` (the default) is rule 1 as written.
    A user has at most ``per_user_in_flight`` jobs running, a guild at most
    ``per_guild_in_flight`` (direct messages have no guild cap); jobs of users or guilds at
    their cap wait without blocking others.

Batching bound
    ``next_batch`` simulates the fair order one job at a time (as if every batch held a single
    job) and numbers the jobs it would start 0, 1, 2...  A batch only ever takes jobs whose
    number is below ``2 * max_batch``: under strict fair dispatch in full batches such a job
    would have started in this batch or the next, so batching moves a job at most one batch
    ahead of its fair turn. The batch leader is job 0, or the first of jobs
    ``1..model_affinity_turns`` whose model is already loaded on the device (jumping that many
    turns at most); partners share the leader's ``batch_key`` and keep FIFO within each user.
    A job whose effective class is ``RELAX`` neither leads for the loaded model nor joins a
    batch while a job of a higher class ahead of it is left waiting: it runs only when no other
    job that could start waits (the README's ``--relax``).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final, Generic, Literal, NamedTuple, TypeVar

__all__ = [
    "FAIRNESS_CHOICES",
    "FairScheduler",
    "Fairness",
    "PriorityClass",
    "QueueSnapshot",
    "QueuedJob",
    "RunningJob",
    "SchedulerConfig",
]


class PriorityClass(IntEnum):
    """Higher runs first; aging promotes a waiting job towards ``PRIORITY``."""

    RELAX = 0
    STANDARD = 1
    PRIORITY = 2


@dataclass(frozen=True)
class QueuedJob:
    """One schedulable job. ``batch_key[0]`` is the model; equal keys can share one batch."""

    job_id: str
    user_id: int
    guild_id: int | None
    batch_key: tuple[object, ...]
    priority: PriorityClass
    submitted_at: float
    images: int = 1
    est_seconds: float = 10.0
    device: str | None = None  # affinity: None runs anywhere

    def __post_init__(self) -> None:
        if not self.job_id:
            raise ValueError("job_id must be a non-empty string")
        if not self.batch_key:
            raise ValueError(f"job {self.job_id}: batch_key must start with the model name")
        if self.images < 1:
            raise ValueError(f"job {self.job_id}: images must be at least 1, got {self.images}")
        # It orders the queue (rule 2): not-a-number would make the heap's comparisons
        # inconsistent, and an infinity would put its user behind every finite tally for good.
        if not (math.isfinite(self.est_seconds) and self.est_seconds >= 0):
            raise ValueError(
                f"job {self.job_id}: est_seconds must be a finite number, 0 or more,"
                f" got {self.est_seconds}"
            )

    @property
    def model(self) -> object:
        return self.batch_key[0]


# Between whom the queue is fair first (EASEL_FAIRNESS): members, or servers (then members).
Fairness = Literal["members", "servers"]
FAIRNESS_CHOICES: Final[tuple[Fairness, ...]] = ("members", "servers")


@dataclass(frozen=True)
class SchedulerConfig:
    per_user_in_flight: int = 2
    per_guild_in_flight: int | None = None
    # The guilds whose PRIORITY jobs go before other guilds' jobs too (rule 1).
    priority_across_guilds: frozenset[int] = frozenset()
    max_batch: int = 4
    aging_seconds: float = 600.0
    # How long a caller may hold a batch open for partners (see FairScheduler.could_grow).
    batch_window_s: float = 0.05
    # How many turns a job whose model is already loaded may jump to lead a batch.
    model_affinity_turns: int = 1
    # How far positions and ETAs are counted: a deep queue is walked this far, no further,
    # after each change (a job further back reads "at least this many ahead"), so a submit's
    # cost does not grow with the queue's depth. Who starts next is never bounded by it.
    positions_counted: int = 100
    # servers: guilds take turns before their users do (rule 1, "Servers take turns").
    fairness: Fairness = "members"

    def __post_init__(self) -> None:
        if self.per_user_in_flight < 1:
            raise ValueError(
                f"per_user_in_flight must be at least 1, got {self.per_user_in_flight}"
            )
        if self.per_guild_in_flight is not None and self.per_guild_in_flight < 1:
            raise ValueError(
                "per_guild_in_flight must be at least 1 or None (no cap), "
                f"got {self.per_guild_in_flight}"
            )
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {self.max_batch}")
        if self.aging_seconds <= 0:
            raise ValueError(f"aging_seconds must be greater than 0, got {self.aging_seconds}")
        if not 0 <= self.batch_window_s <= 0.05:
            raise ValueError(f"batch_window_s must be within 0..0.05, got {self.batch_window_s}")
        if self.model_affinity_turns < 0:
            raise ValueError(
                f"model_affinity_turns must be 0 or more, got {self.model_affinity_turns}"
            )
        if self.positions_counted < 1:
            raise ValueError(f"positions_counted must be at least 1, got {self.positions_counted}")
        if self.fairness not in FAIRNESS_CHOICES:
            raise ValueError(f"fairness must be members or servers, got {self.fairness!r}")


@dataclass(frozen=True)
class RunningJob:
    job: QueuedJob
    device: str
    started_at: float


@dataclass(frozen=True)
class QueueSnapshot:
    """For a queue view: ``queued`` is in fair order (all of it, or its first ``limit`` jobs
    when asked so), so an index is a position."""

    running: tuple[RunningJob, ...]
    queued: tuple[QueuedJob, ...]
    # Handed out, held back by the caller before they start (never filled here).
    awaiting_check: tuple[QueuedJob, ...] = ()


# A user with nothing queued or running is forgotten once idle this long (their memory would
# otherwise grow with every member ever seen), when that cannot move them ahead of anyone:
# nothing of them is kept, so back, ``submit``'s ``started_before`` tells a returner.
IDLE_USER_FORGOTTEN_S = 3600.0

# Start numbers: users who never started a job, then users who did and come back unknown
# (forgotten, or from before a restart), then each start, numbered upwards from _FIRST_START.
_NEVER_STARTED = 0
_RETURNED = 1
_FIRST_START = 2

# The least work a start counts (rule 2), so that jobs estimated at nothing still move their
# user back and cannot hold the turn.
_LEAST_WORK_S = 0.1


class _Turn(NamedTuple):
    """A user's place in rule 2 (lower goes first): the work their starts add up to on the
    queue's scale, then their last start number."""

    work: float
    start: int


# The classes as plain ints, for the walk's comparisons (an enum member's lookup costs more).
_PRIORITY = int(PriorityClass.PRIORITY)
_STANDARD = int(PriorityClass.STANDARD)
_RELAX = int(PriorityClass.RELAX)

_UNSTARTED = _Turn(0.0, _NEVER_STARTED)
_BACK = _Turn(0.0, _RETURNED)

# A lane holds one user's jobs of one priority class and one device affinity, in FIFO order.
_LaneKey = tuple[PriorityClass, str | None]
# A user's entry in their next job's guild: (-effective class, whether it is a fresh priority
# job, turn's work, turn's start, head submitted_at, head seq, version, user id, head ticket)
# orders who in the guild starts; the same with -rank, False and the share's work and start
# orders whose turn the guild takes between guilds. Entries whose version is no longer the
# user's are stale. (version, user id) is unique within a heap: the ticket is never compared.
_Entry = tuple[int, bool, float, int, float, int, int, int, "_Ticket"]
_VERSION: Final = 6
_USER: Final = 7
_TICKET: Final = 8
# A guild's entry between guilds: its best share entry's key (up to the version), the guild's
# version, the guild id. Stale once the guild's version moved on.
_GuildEntry = tuple[int, bool, float, int, float, int, int, int | None]
_GuildKey = tuple[int, bool, float, int, float, int]
_GUILD_VERSION: Final = 6
_GUILD: Final = 7
# A user's next job in a view: its ticket, its class, whether it is fresh, its rank (rule 1).
_Head = tuple["_Ticket", int, bool, int]
# Where a user with a current entry is in a view: the guild, and whether their two entries are
# one (the same class and rank, turn and share: always so without priority roles).
_Placed = tuple[int | None, bool]


# Whose tally a charge moves: a user's (their id), or a guild's (None: direct messages).
_Holder = TypeVar("_Holder", int, int | None)


class _Charge(NamedTuple, Generic[_Holder]):
    """One start's move of a tally (``put_back_unstarted`` undoes it): a user's turn or
    share, or its guild's (servers taking turns)."""

    holder: _Holder
    after: _Turn
    before: _Turn
    lift: float  # what the level added to the tally at this start (rule 2), no job's work
    lifted: float  # the lifts of the holder's tally so far, this one's included


class _Start(NamedTuple):
    turn: _Charge[int]  # the user who starts the job
    share: _Charge[int]  # the user whose share the guild's turn was (the same one without roles)
    guild: _Charge[int | None] | None  # its guild's tally, when servers take turns


@dataclass(slots=True)
class _Ticket:
    seq: int  # submission order, the final tie-breaker
    job: QueuedJob


@dataclass(slots=True, eq=False)
class _User:
    lanes: dict[_LaneKey, deque[_Ticket]] = field(default_factory=dict)
    turn: _Turn = _UNSTARTED
    # Like ``turn``, but moved by the starts their guild took on their share (rule 1).
    share: _Turn = _UNSTARTED
    running: int = 0
    version: int = 0
    idle_since: float | None = None  # since when nothing of theirs is queued or running
    # What the level added to ``turn`` and to ``share`` at their starts so far (rule 2).
    lifted: float = 0.0
    share_lifted: float = 0.0


@dataclass(slots=True, eq=False)
class _Heap:
    """A heap of user entries. A walk's ``copy`` leaves the original's list as it is and reads
    it in order from its top, keeping its own pushes apart: copying costs nothing, and reading
    k entries O(k log k), whatever the guild's size. An original changes only with a change of
    the scheduler's state, which drops every walk reading it (``_refresh``)."""

    entries: list[_Entry] = field(default_factory=list)  # a heap; pushes go here
    original: list[_Entry] = field(default_factory=list)  # a copy's, read and never changed
    frontier: list[tuple[_Entry, int]] = field(default_factory=list)  # its next, with index

    def __len__(self) -> int:
        return len(self.entries) + len(self.frontier)  # of an original: its entries

    def copy(self) -> _Heap:
        """A copy of an original (not of a copy)."""
        return _Heap(original=self.entries, frontier=[(self.entries[0], 0)] if self.entries else [])

    def top(self) -> _Entry | None:
        frontier, entries = self.frontier, self.entries
        if frontier and (not entries or frontier[0][0] < entries[0]):
            return frontier[0][0]
        return entries[0] if entries else None

    def pop(self) -> None:
        frontier, entries = self.frontier, self.entries
        if not frontier or (entries and entries[0] < frontier[0][0]):
            heapq.heappop(entries)
            return
        original = self.original
        child = 2 * frontier[0][1] + 1  # the popped entry's children take its place
        if child + 1 < len(original):
            heapq.heapreplace(frontier, (original[child], child))
            heapq.heappush(frontier, (original[child + 1], child + 1))
        elif child < len(original):
            heapq.heapreplace(frontier, (original[child], child))
        else:
            heapq.heappop(frontier)

    def push(self, entry: _Entry) -> None:
        heapq.heappush(self.entries, entry)

    def split(self) -> _Heap:
        """A heap of its own holding what this one (an original or a copy) holds now."""
        return _Heap(list(self.entries), self.original, list(self.frontier))

    def keep(self, wanted: Callable[[_Entry], bool]) -> None:
        """Drop an original's entries not ``wanted``."""
        self.entries = [entry for entry in self.entries if wanted(entry)]
        heapq.heapify(self.entries)


@dataclass(slots=True, eq=False)
class _Guild:
    """One guild's users in a view (or a walk's copy), in the guild's own order."""

    version: int
    heap: _Heap = field(default_factory=_Heap)  # who starts first (rule 1 and 2)
    # Whose share the guild's turn is; None while every user's two entries are one (``heap``
    # then orders both), so that a guild without priority roles keeps one heap, not two.
    shares: _Heap | None = None
    users: int = 0  # with a current entry
    uneven: int = 0  # of them, those whose two entries differ (in a view; a walk only splits)
    key: _GuildKey | None = None  # of its entry between guilds

    def copy(self) -> _Guild:
        shares = None if self.shares is None else self.shares.copy()
        return _Guild(self.version, self.heap.copy(), shares, self.users, self.uneven, self.key)

    def enter(self, head: _Head, turn: _Turn, share: _Turn, version: int, user_id: int) -> bool:
        """Push a user's entries for their next job ``head``; whether the two are one."""
        ticket, effective, fresh, rank = head
        # Only a newcomer's (or returner's) fresh job waits for the aged ones: they are the
        # endless supply; a member who has started competes by rule 2, so the role still counts.
        fresh = fresh and turn.start < _FIRST_START
        job = ticket.job
        entry = (-effective, fresh, *turn, job.submitted_at, ticket.seq, version, user_id, ticket)
        if effective == rank and not fresh and turn == share:
            self.heap.push(entry)
            if self.shares is not None:
                self.shares.push(entry)
            return True
        if self.shares is None:
            self.shares = self.heap.split()  # before the push: it holds no share entries
        self.heap.push(entry)
        share_entry = (-rank, False, *share, job.submitted_at, ticket.seq, version, user_id, ticket)
        self.shares.push(share_entry)
        return False


@dataclass(slots=True, eq=False)
class _View:
    """The fair-order index for one device (``None``: every job, whatever its affinity)."""

    device: str | None
    heap: list[_GuildEntry] = field(default_factory=list)  # guilds, best rank first
    guilds: dict[int | None, _Guild] = field(default_factory=dict)
    placed: dict[int, _Placed] = field(default_factory=dict)  # each user with a current entry


@dataclass(slots=True, eq=False)
class _QueueOrder:
    """The fair order over every device, in-flight caps ignored, walked only as far as it has
    been asked. It stands from one scheduler change to the next, and until ``valid_until``,
    when aging first promotes a queued job (either can reorder it)."""

    walk: Iterator[tuple[QueuedJob, int]]  # ``_walk``'s, each job with its sharer (unread)
    valid_until: float
    jobs: list[QueuedJob] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)  # job id -> its place in ``jobs``
    work_before: list[float] = field(default_factory=lambda: [0.0])  # est_seconds of jobs[:i]

    def place_of(self, job_id: str, limit: int) -> int:
        """Where the queued job ``job_id`` stands, walking on until it is reached; ``limit``
        when ``limit`` jobs start before it (the walk stops there)."""
        while job_id not in self.index and len(self.jobs) < limit:
            turn = next(self.walk, None)
            if turn is None:
                raise AssertionError(f"queued job {job_id} is missing from the fair order")
            self._take(turn[0])
        return min(self.index.get(job_id, limit), limit)

    def first(self, count: int | None) -> tuple[QueuedJob, ...]:
        """The first ``count`` jobs (None: all of them)."""
        more = None if count is None else max(0, count - len(self.jobs))
        for job, _ in itertools.islice(self.walk, more):
            self._take(job)
        return tuple(self.jobs[:count])

    def _take(self, job: QueuedJob) -> None:
        self.index[job.job_id] = len(self.jobs)
        self.jobs.append(job)
        self.work_before.append(self.work_before[-1] + job.est_seconds)


@dataclass(slots=True, eq=False)
class _Simulated:
    """A user's state while a walk pretends their jobs started one by one."""

    version: int
    turn: _Turn
    share: _Turn
    started: int = 0
    consumed: dict[_LaneKey, int] = field(default_factory=dict)  # jobs started, by lane


class FairScheduler:
    def __init__(self, config: SchedulerConfig | None = None, devices: Iterable[str] = ()) -> None:
        self.config = config or SchedulerConfig()
        self._users: dict[int, _User] = {}
        self._tickets: dict[str, tuple[_Ticket, _LaneKey]] = {}
        self._running: dict[str, RunningJob] = {}
        self._running_seq: dict[str, int] = {}  # submission order, kept for requeue
        # Each running job's moves of turn and share (``put_back_unstarted``).
        self._starts_of: dict[str, _Start] = {}
        self._guild_running: Counter[int | None] = Counter()
        self._views: dict[str | None, _View] = {None: _View(None)}
        # (time, user id, version): when one of that user's waiting jobs gets promoted by aging.
        self._aging_events: list[tuple[float, int, int]] = []
        # (time, job id): every promotion of every queued job, behind a lane's head too; the
        # kept order ends at the first one due (entries of jobs gone are dropped when on top).
        self._promotions: list[tuple[float, str]] = []
        self._submit_seq = itertools.count(1)
        self._versions = itertools.count(1)
        self._last_start_seq = _FIRST_START - 1
        # The queue's level of work (rule 2): no start counts from below it.
        self._level = 0.0
        self._share_level = 0.0  # the same for shares
        # Servers taking turns: each guild's tally (never forgotten: one per server served
        # since the start) and the guilds' level, as rule 2's for users.
        self._servers_take_turns = self.config.fairness == "servers"
        # How far aging lifts a job's rank between guilds: while servers take turns, no higher
        # than STANDARD (their tallies already bound each guild's wait: an aged backlog ranking
        # PRIORITY would take every turn), unless priority servers are listed (only aging lifts
        # other guilds' jobs past their priority roles' endless stream).
        self._rank_ceiling = (
            _STANDARD
            if self._servers_take_turns and not self.config.priority_across_guilds
            else _PRIORITY
        )
        self._guild_tallies: dict[int | None, _Turn] = {}
        self._guild_lifted: dict[int | None, float] = {}  # as ``_User.lifted``
        self._guild_level = 0.0
        # (turn, user id) at each start: who goes first in rule 2, for forgetting.
        self._starts: list[tuple[_Turn, int]] = []
        # Users left idle by a finish or cancel, which take no time: stamped at the next ``now``.
        self._newly_idle: list[int] = []
        self._clock = float("-inf")
        # Positions, ETAs and snapshots read this instead of walking the queue each time.
        self._queue_order_cache: _QueueOrder | None = None
        for device in devices:
            self._view(device)

    # ---- mutations -------------------------------------------------------------------------

    def submit(self, job: QueuedJob, *, started_before: bool = False) -> None:
        """Queue ``job``. ``started_before``: its user has ever started a job (the journal
        says so); read only when the scheduler holds nothing of theirs (never seen, or
        forgotten), to place them after the users who never started (rule 2)."""
        if job.job_id in self._tickets or job.job_id in self._running:
            raise ValueError(f"job {job.job_id} is already queued or running")
        self._move_clock(job.submitted_at)
        self._forget_idle_users()
        if self._enqueue(_Ticket(next(self._submit_seq), job), started_before=started_before):
            # Behind a head, nothing else of the user changed: their index entries and aging
            # event stand, and no stale entry is left for every walk to skip (a busy member's
            # submits would leave one each); only the kept order has to go.
            self._queue_order_cache = None
        else:
            self._refresh(job.user_id)

    def peek_batch(
        self, device: str, now: float, loaded_model: object | None = None
    ) -> list[QueuedJob]:
        """The batch ``next_batch`` would start, without starting it (leader first)."""
        return self._plan(device, now, loaded_model)[0]

    def _plan(
        self, device: str, now: float, loaded_model: object | None
    ) -> tuple[list[QueuedJob], dict[str, int]]:
        """The batch ``next_batch`` would start, and whose share each job of the fair order's
        first ones takes (the first job's user and sharer set the queue's levels)."""
        view = self._view(device)
        self._advance(view, now)
        horizon = 2 * self.config.max_batch
        turns = list(itertools.islice(self._walk(view, now, respect_caps=True), horizon))
        if not turns:
            return [], {}
        order = [job for job, _ in turns]
        sharer_of = {job.job_id: sharer for job, sharer in turns}
        first_of_user: dict[int, int] = {}
        for index, job in enumerate(order):
            first_of_user.setdefault(job.user_id, index)
        # A RELAX job runs only when no other job waits (the README's --relax): it starts in no
        # batch, as leader or partner, that leaves a job of a higher class ahead of it waiting.
        classes = [self._effective_class(job, now) for job in order]
        leader_index = 0
        if loaded_model is not None:
            for index, job in enumerate(order[: self.config.model_affinity_turns + 1]):
                if job.model == loaded_model and first_of_user[job.user_id] == index:
                    if classes[index] > _RELAX or max(classes[:index], default=_RELAX) == _RELAX:
                        leader_index = index
                    break
        leader = order[leader_index]
        batch = [leader]
        blocked_users: set[int] = set()  # FIFO: a user's later job may not pass a skipped one
        passed_class = _RELAX  # the highest class of the jobs skipped so far (none: RELAX)
        for index, job in enumerate(order):
            if len(batch) == self.config.max_batch:
                break
            if index == leader_index:
                continue
            if (
                job.user_id in blocked_users
                or job.batch_key != leader.batch_key
                or classes[index] == _RELAX < passed_class
            ):
                blocked_users.add(job.user_id)
                passed_class = max(passed_class, classes[index])
                continue
            batch.append(job)
        return batch, sharer_of

    def next_batch(
        self, device: str, now: float, loaded_model: object | None = None
    ) -> list[QueuedJob]:
        """Start and return the next batch for ``device`` (empty when nothing can run there)."""
        batch, sharer_of = self._plan(device, now, loaded_model)
        if sharer_of:
            first_id, first_sharer = next(iter(sharer_of.items()))
            first = self._users[self._tickets[first_id][0].job.user_id]
            self._level = max(self._level, first.turn.work)
            self._share_level = max(self._share_level, self._users[first_sharer].share.work)
            if self._servers_take_turns:
                first_guild = self._tickets[first_id][0].job.guild_id
                self._guild_level = max(self._guild_level, self._guild_tally(first_guild).work)
        touched: set[int] = set()
        charged_guilds: set[int | None] = set()
        for job in batch:
            ticket, lane_key = self._tickets.pop(job.job_id)
            user = self._users[job.user_id]
            lane = user.lanes[lane_key]
            if lane[0] is not ticket:
                raise AssertionError(f"job {job.job_id} is not the head of its lane")
            lane.popleft()
            if not lane:
                del user.lanes[lane_key]
            self._last_start_seq += 1
            turn = _Turn(_work_after(user.turn, self._level, job), self._last_start_seq)
            turn_lift = _lift(user.turn, self._level)
            user.lifted += turn_lift
            sharer_id = sharer_of[job.job_id]
            sharer = self._users[sharer_id]
            first_share = max(sharer.turn.start, sharer.share.start) < _FIRST_START
            share = _Turn(_work_after(sharer.share, self._share_level, job), self._last_start_seq)
            share_lift = _lift(sharer.share, self._share_level)
            sharer.share_lifted += share_lift
            guild_charge = None
            if self._servers_take_turns:
                tally = self._guild_tally(job.guild_id)
                after = _Turn(_work_after(tally, self._guild_level, job), self._last_start_seq)
                guild_lift = _lift(tally, self._guild_level)
                lifted = self._guild_lifted[job.guild_id] = (
                    self._guild_lifted.get(job.guild_id, 0.0) + guild_lift
                )
                guild_charge = _Charge(job.guild_id, after, tally, guild_lift, lifted)
                self._guild_tallies[job.guild_id] = after
                charged_guilds.add(job.guild_id)
            self._starts_of[job.job_id] = _Start(
                _Charge(job.user_id, turn, user.turn, turn_lift, user.lifted),
                _Charge(sharer_id, share, sharer.share, share_lift, sharer.share_lifted),
                guild_charge,
            )
            user.turn = turn
            sharer.share = share
            heapq.heappush(self._starts, (turn, job.user_id))
            if sharer_id != job.user_id:
                touched.add(sharer_id)
                if first_share:  # of one who never started: forgotten in rule 2's order too
                    heapq.heappush(self._starts, (sharer.turn, sharer_id))
            user.running += 1
            self._guild_running[job.guild_id] += 1
            self._running[job.job_id] = RunningJob(job, device, now)
            self._running_seq[job.job_id] = ticket.seq
            touched.add(job.user_id)
        self._refresh(*touched)
        self._rekey_everywhere(charged_guilds)
        return batch

    def finish(self, job_id: str, used_s: float | None = None) -> None:
        """A running job is done (rendered or failed): it leaves the scheduler. ``used_s``:
        the device seconds it was measured to use (its share of its batch's), which replace
        its ``est_seconds`` in what its start moved (rule 2's turn and share, its guild's
        tally; less what later starts from the level had counted: ``_charge_again``), so a
        member whose jobs were reckoned too light yields to the others as their work was;
        0 (it used no device time: it failed before any GPU work, or was stopped before a
        worker took it): its start is taken back, as ``put_back_unstarted`` takes one back,
        and it leaves; None (not measured): the estimate stands."""
        if job_id not in self._running:
            raise KeyError(f"job {job_id} is not running")
        if used_s is not None and used_s <= 0:
            start = self._undo_start(job_id)
            self._release(job_id)
            if start.turn.holder in self._users:  # else it left no trace (``_note_if_idle``)
                self._refresh(start.turn.holder)
            self._rekey_guild_of(start)
            return
        if used_s is not None and math.isfinite(used_s):
            job = self._running[job_id].job
            self._charge_again(job_id, max(used_s, _LEAST_WORK_S) - _least_work(job))
        self._release(job_id)

    def cancel(self, job_id: str) -> bool:
        """Drop a queued job; False when it is not queued. A running job is not dropped: its
        render stops through whoever runs it, who then calls ``finish`` (releasing it here too
        would free its slot twice). Callers check ownership."""
        found = self._tickets.pop(job_id, None)
        if found is None:
            return False
        ticket, lane_key = found
        user = self._users[ticket.job.user_id]
        lane = user.lanes[lane_key]
        lane.remove(ticket)
        if not lane:
            del user.lanes[lane_key]
        self._refresh(ticket.job.user_id)
        self._note_if_idle(ticket.job.user_id)
        return True

    def requeue(self, job_id: str) -> None:
        """Put a running job whose worker died back in the queue, at its original place.

        The user keeps the place in rule 2 their start gave them: the lost render's work is not
        given back, so a crashing job cannot be used to jump the queue.
        """
        if job_id not in self._running:
            raise KeyError(f"job {job_id} is not running, so it cannot be requeued")
        self._back_in_queue(job_id)

    def put_back_unstarted(self, job_id: str) -> None:
        """Put a job handed out but never started (held back before its render) back in the
        queue at its place, its user back at the place in rule 2 they had before its
        hand-out: unlike ``requeue``, no render was lost, so no turn was used. A later start
        of theirs stands, less this job's work, in place of this one."""
        if job_id not in self._running:
            raise KeyError(f"job {job_id} is not running, so it cannot be put back")
        start = self._undo_start(job_id)
        # Re-indexes the user at the place restored; one restored to _RETURNED with nothing
        # else queued or running leaves no trace as it leaves, and comes back as such.
        self._back_in_queue(job_id, started_before=start.turn.before.start == _RETURNED)
        self._rekey_guild_of(start)

    # ---- queries ---------------------------------------------------------------------------

    def could_grow(self, batch: list[QueuedJob]) -> bool:
        """Whether waiting ``batch_window_s`` for partners could make ``batch`` bigger.

        A caller that wants partners does ``peek_batch``; if ``could_grow``, waits the window
        (or until a submit), then takes ``next_batch``.
        """
        return 0 < len(batch) < self.config.max_batch

    def position(self, job_id: str, now: float) -> int | None:
        """How many queued jobs start before this one (0 = next); None if it is not queued.

        Counted over every device and ignoring in-flight caps, which delay but do not reorder;
        counted up to ``positions_counted``: a job further back reads that number (at least).
        """
        if job_id not in self._tickets:
            return None
        return self._queue_order(now).place_of(job_id, self.config.positions_counted)

    def eta(
        self, job_id: str, now: float, *, not_rendering: Collection[str] = frozenset()
    ) -> float | None:
        """Estimated time (same clock as ``now``) this queued job's render finishes.

        The remaining work of running jobs (but those ``not_rendering``: handed out, held back
        by the caller) and the ``est_seconds`` of the jobs ahead are shared among the known
        devices. None when the job is not queued. For a job further back than
        ``positions_counted`` only the counted jobs ahead are summed: a lower bound.
        """
        found = self._tickets.get(job_id)
        if found is None:
            return None
        order = self._queue_order(now)
        index = order.place_of(job_id, self.config.positions_counted)
        running_left = sum(
            max(0.0, running.job.est_seconds - (now - running.started_at))
            for running in self._running.values()
            if running.job.job_id not in not_rendering
        )
        devices = max(1, len(self._views) - 1)
        work_ahead = running_left + order.work_before[index]
        return now + work_ahead / devices + found[0].job.est_seconds

    def fair_order(
        self, now: float, device: str | None = None, *, respect_caps: bool = True
    ) -> list[QueuedJob]:
        """Queued jobs in the order they would start one at a time (``device`` None: any).
        Only the tests call it: their oracle for the batches ``next_batch`` takes."""
        view = self._view(device)
        self._advance(view, now)
        return [job for job, _ in self._walk(view, now, respect_caps=respect_caps)]

    def snapshot(self, now: float, limit: int | None = None) -> QueueSnapshot:
        """Running jobs, and the queued ones in fair order: the first ``limit`` (None: all)."""
        return QueueSnapshot(
            running=tuple(sorted(self._running.values(), key=lambda r: r.started_at)),
            queued=self._queue_order(now).first(limit),
        )

    def started_before(self, user_id: int) -> bool:
        """Whether ``user_id`` is held as having started a job (``submit``'s
        ``started_before`` to give when their job comes back after they left no trace): False
        for a user held as never started, and for one not held at all (ask the journal)."""
        user = self._users.get(user_id)
        return user is not None and user.turn.start != _NEVER_STARTED

    @property
    def queued_count(self) -> int:
        return len(self._tickets)

    @property
    def running_count(self) -> int:
        return len(self._running)

    # ---- internals -------------------------------------------------------------------------

    def _back_in_queue(self, job_id: str, *, started_before: bool = False) -> None:
        """Queue a running job again at its place (``requeue``, ``put_back_unstarted``)."""
        job = self._running[job_id].job
        seq = self._release(job_id)
        self._enqueue(_Ticket(seq, job), started_before=started_before)
        self._refresh(job.user_id)

    def _view(self, device: str | None) -> _View:
        view = self._views.get(device)
        if view is None:
            view = self._views[device] = _View(device)
            self._push(view, self._users)
        return view

    def _enqueue(self, ticket: _Ticket, *, started_before: bool = False) -> bool:
        """Put the ticket in its user's lane (the caller refreshes their index entries);
        whether it went behind that lane's head."""
        job = ticket.job
        lane_key: _LaneKey = (job.priority, job.device)
        user = self._users.get(job.user_id)
        if user is None:
            place = _BACK if started_before else _UNSTARTED
            user = self._users[job.user_id] = _User(turn=place, share=place)
        user.idle_since = None
        lane = user.lanes.setdefault(lane_key, deque())
        # Tickets normally arrive in sequence order; a requeued one goes back to its place.
        index = len(lane)
        while index > 0 and lane[index - 1].seq > ticket.seq:
            index -= 1
        lane.insert(index, ticket)
        self._tickets[job.job_id] = (ticket, lane_key)
        # Freshness ends need no entry: only a user who has not started has a fresh job that
        # counts, and only their lane heads' (the aging events in ``_refresh`` end those).
        unaged = self._unaged_rank(job)
        for promoted_from in range(unaged, PriorityClass.PRIORITY):
            promotion = self._next_promotion(job, unaged, promoted_from)
            heapq.heappush(self._promotions, (promotion, job.job_id))
        return index > 0

    def _release(self, job_id: str) -> int:
        """Forget a running job, freeing its in-flight slots; returns its submission seq."""
        running = self._running.pop(job_id)
        user = self._users[running.job.user_id]
        user.running -= 1
        guild_id = running.job.guild_id
        self._guild_running[guild_id] -= 1
        if not self._guild_running[guild_id]:
            del self._guild_running[guild_id]
        self._note_if_idle(running.job.user_id)
        del self._starts_of[job_id]
        return self._running_seq.pop(job_id)

    def _charge_again(self, job_id: str, change: float) -> None:
        """Move what running job ``job_id``'s start moved by ``change`` more work, less what
        the level added to the same tally at later starts (it had counted the time the job
        ran: not charged twice), and the charges of the starts after it of the same tallies
        with them (one put back later restores what it found, this change included)."""
        if not change:
            return
        turn, share, guild = self._starts_of[job_id]
        touched = []
        if (starter := self._users.get(turn.holder)) is not None:
            starter.turn, starter.lifted = _charged_again(
                turn, change, starter.turn, starter.lifted
            )
            heapq.heappush(self._starts, (starter.turn, turn.holder))
            touched.append(turn.holder)
        if (sharer := self._users.get(share.holder)) is not None:
            sharer.share, sharer.share_lifted = _charged_again(
                share, change, sharer.share, sharer.share_lifted
            )
            touched.append(share.holder)
        if guild is not None:
            self._guild_tallies[guild.holder], self._guild_lifted[guild.holder] = _charged_again(
                guild, change, self._guild_tally(guild.holder), self._guild_lifted[guild.holder]
            )
        for other, (later_turn, later_share, later_guild) in self._starts_of.items():
            self._starts_of[other] = _Start(
                _moved_after(later_turn, turn, change),
                _moved_after(later_share, share, change),
                None if later_guild is None else _moved_after(later_guild, guild, change),
            )
        self._refresh(*dict.fromkeys(touched))
        if guild is not None:
            self._rekey_everywhere((guild.holder,))

    def _undo_start(self, job_id: str) -> _Start:
        """Undo running job ``job_id``'s start in every tally it moved (``_take_back``),
        its sharer, when another user, indexed at the share restored; the caller releases it
        and re-indexes its user and guild."""
        start = self._starts_of[job_id]
        self._take_back(start)
        sharer_id = start.share.holder
        if sharer_id != start.turn.holder and sharer_id in self._users:
            self._refresh(sharer_id)
            self._note_if_idle(sharer_id)
        return start

    def _rekey_guild_of(self, start: _Start) -> None:
        """Index anew the guild whose tally ``start`` moved (servers taking turns)."""
        if start.guild is not None:
            self._rekey_everywhere((start.guild.holder,))

    def _take_back(self, start: _Start) -> None:
        """Undo one start's moves of its user's turn, its sharer's share and its guild's tally
        (a user forgotten since has nothing left to undo)."""
        turn, share, guild = start
        starter, sharer = self._users.get(turn.holder), self._users.get(share.holder)
        turn_moved_since = share_moved_since = False
        if starter is not None:
            turn_moved_since = starter.turn.start != turn.after.start
            starter.turn = _taken_back(turn, starter.turn)
            starter.lifted -= turn.lift
            if starter.turn.start >= _FIRST_START:
                heapq.heappush(self._starts, (starter.turn, turn.holder))  # may be dropped
        if sharer is not None:
            share_moved_since = sharer.share.start != share.after.start
            sharer.share = _taken_back(share, sharer.share)
            sharer.share_lifted -= share.lift
        guild_moved_since = False
        if guild is not None:
            tally = self._guild_tallies[guild.holder]
            guild_moved_since = tally.start != guild.after.start
            self._guild_tallies[guild.holder] = _taken_back(guild, tally)
            self._guild_lifted[guild.holder] -= guild.lift
        if turn_moved_since or share_moved_since or guild_moved_since:
            for other, (later_turn, later_share, later_guild) in self._starts_of.items():
                if turn_moved_since:
                    later_turn = _followed(later_turn, turn)
                if share_moved_since:
                    later_share = _followed(later_share, share)
                if guild_moved_since and later_guild is not None and guild is not None:
                    later_guild = _followed(later_guild, guild)
                self._starts_of[other] = _Start(later_turn, later_share, later_guild)

    def _note_if_idle(self, user_id: int) -> None:
        """A user left with nothing queued or running: one who has not started a job since
        they were new or came back leaves no trace (coming back again, ``started_before``
        puts them where they stood); one who did is forgotten later, idle from the next time
        the scheduler is told."""
        user = self._users[user_id]
        if user.lanes or user.running:
            return
        if max(user.turn.start, user.share.start) < _FIRST_START:
            del self._users[user_id]
        else:
            self._newly_idle.append(user_id)

    def _move_clock(self, now: float) -> None:
        """Advance the clock to ``now`` (never back) and stamp the users idle since the last
        move: idle from now, a lower bound of how long they have been."""
        self._clock = max(self._clock, now)
        for user_id in self._newly_idle:
            user = self._users.get(user_id)
            if user is None or user.lanes or user.running or user.idle_since is not None:
                continue  # forgotten, busy again, or already stamped
            user.idle_since = self._clock
        self._newly_idle.clear()

    def _forget_idle_users(self) -> None:
        """Forget users idle for IDLE_USER_FORGOTTEN_S, first in rule 2 first, and only while
        the one first of all is such a user: coming back (start number _RETURNED, ``submit``'s
        ``started_before``), they go after the users who never started and before every user
        who started since, as they did; nothing of them is kept."""
        starts = self._starts
        while starts:
            turn, user_id = starts[0]
            user = self._users.get(user_id)
            if user is not None and user.turn == turn:
                if user.idle_since is None or self._clock - user.idle_since < IDLE_USER_FORGOTTEN_S:
                    return
                del self._users[user_id]
            heapq.heappop(starts)

    def _queue_order(self, now: float) -> _QueueOrder:
        """The fair order over every device ignoring caps, walked anew only after a change."""
        view = self._views[None]
        self._advance(view, now)  # an aging event due by now refreshes, dropping the order
        kept = self._queue_order_cache
        if kept is None or now >= kept.valid_until:
            # Aging events follow only the first job of each lane; any job's promotion counts.
            promotions = self._promotions
            while promotions and (promotions[0][0] <= now or promotions[0][1] not in self._tickets):
                heapq.heappop(promotions)
            kept = self._queue_order_cache = _QueueOrder(
                walk=self._walk(view, now, respect_caps=False),
                valid_until=promotions[0][0] if promotions else float("inf"),
            )
        return kept

    def _effective_class(self, job: QueuedJob, now: float) -> int:
        return self._promoted(job, job.priority, now)

    def _rank(self, job: QueuedJob, now: float) -> int:
        """The job's class as it ranks between guilds (rule 1)."""
        unaged = self._unaged_rank(job)
        return min(self._promoted(job, unaged, now), max(unaged, self._rank_ceiling))

    def _fresh(self, job: QueuedJob, now: float) -> bool:
        """Whether ``job`` is a priority role's that has waited less than ``aging_seconds``:
        in its guild it goes after the PRIORITY jobs that have waited that long while its user
        has not started (rule 1, ``_Guild.enter``)."""
        return job.priority == _PRIORITY and now < self._next_promotion(job, _PRIORITY, _PRIORITY)

    def _unaged_rank(self, job: QueuedJob) -> int:
        if job.priority == _PRIORITY and job.guild_id not in self.config.priority_across_guilds:
            return _STANDARD
        return job.priority

    def _promoted(self, job: QueuedJob, unaged: int, now: float) -> int:
        # Promotion k happens at submitted_at + k * aging_seconds; _next_promotion uses the same
        # expression so the aging events and this computation can never disagree.
        promoted = unaged
        while promoted < _PRIORITY and self._next_promotion(job, unaged, promoted) <= now:
            promoted += 1
        return promoted

    def _next_promotion(self, job: QueuedJob, unaged: int, current_class: int) -> float:
        return job.submitted_at + (current_class - unaged + 1) * self.config.aging_seconds

    def _head(
        self, user: _User, view: _View, now: float, consumed: dict[_LaneKey, int] | None = None
    ) -> _Head | None:
        """The user's next job in ``view`` (after ``consumed`` simulated starts), its class,
        whether it is fresh, its rank."""
        best: tuple[_Ticket, int] | None = None
        best_key: tuple[int, float, int] | None = None
        device = view.device
        for lane_key, lane in user.lanes.items():
            lane_device = lane_key[1]
            if device is not None and lane_device is not None and lane_device != device:
                continue
            skipped = consumed.get(lane_key, 0) if consumed else 0
            if skipped >= len(lane):
                continue
            ticket = lane[skipped]
            effective = self._effective_class(ticket.job, now)
            key = (-effective, ticket.job.submitted_at, ticket.seq)
            if best_key is None or key < best_key:
                best, best_key = (ticket, effective), key
        if best is None:
            return None
        ticket, effective = best
        if ticket.job.priority != _PRIORITY:  # only a priority role's job ranks apart
            return ticket, effective, False, min(effective, self._rank_ceiling)
        return ticket, effective, self._fresh(ticket.job, now), self._rank(ticket.job, now)

    def _refresh(self, *user_ids: int) -> None:
        """Invalidate the users' index entries and push current ones into every view (each
        guild they touch keyed once, after all of them)."""
        self._queue_order_cache = None
        for user_id in user_ids:
            user = self._users[user_id]
            user.version = next(self._versions)
            promotions = []
            for lane in user.lanes.values():
                # The rank is promoted whenever the class is (to its ceiling), and a PRIORITY
                # job's rank alone; a fresh job (of a guild whose PRIORITY ranks everywhere)
                # stops being fresh.
                job = lane[0].job
                lane_rank = self._rank(job, self._clock)
                unaged = self._unaged_rank(job)
                if lane_rank < max(unaged, self._rank_ceiling):
                    promotions.append(self._next_promotion(job, unaged, lane_rank))
                elif (effective := self._effective_class(job, self._clock)) < _PRIORITY:
                    # The rank stopped below the class (servers taking turns): the class ages on.
                    promotions.append(self._next_promotion(job, job.priority, effective))
                elif self._fresh(job, self._clock):
                    promotions.append(self._next_promotion(job, _PRIORITY, _PRIORITY))
            if promotions:
                heapq.heappush(self._aging_events, (min(promotions), user_id, user.version))
        for view in self._views.values():
            self._push(view, user_ids)
        self._compact_if_needed()

    def _push(self, view: _View, user_ids: Iterable[int]) -> None:
        """Index each user's next job in ``view``, in that job's guild, then key anew the
        guilds they entered or left."""
        touched: set[int | None] = set()
        for user_id in user_ids:
            user = self._users[user_id]
            head = self._head(user, view, self._clock)
            if head is not None:
                job = head[0].job
                guild = view.guilds.get(job.guild_id)
                if guild is None:
                    guild = view.guilds[job.guild_id] = _Guild(next(self._versions))
                even = guild.enter(head, user.turn, user.share, user.version, user_id)
                guild.users += 1
                guild.uneven += not even
                touched.add(job.guild_id)
            # Left only now, so that a user whose entries stay two keeps their guild split.
            placed = view.placed.pop(user_id, None)
            if head is not None:
                view.placed[user_id] = (head[0].job.guild_id, even)
            if placed is not None:
                left = view.guilds[placed[0]]
                left.users -= 1
                if not placed[1]:
                    left.uneven -= 1
                    if not left.uneven:
                        left.shares = None  # one heap orders both again
                touched.add(placed[0])
        for guild_id in touched:
            self._rekey(view, guild_id)

    def _rekey(self, view: _View, guild_id: int | None) -> None:
        """Index the guild between guilds anew after a change of its users' entries."""
        guild = view.guilds[guild_id]
        top = _guild_top(guild, self._is_current)
        if top is None:
            del view.guilds[guild_id]  # its entry between guilds is stale from now on
            return
        for heap in (guild.heap, guild.shares):
            if heap is not None and len(heap) > 4 * guild.users + 64:  # stale entries dominate
                heap.keep(lambda entry: self._is_current(entry[_USER], entry[_VERSION]))
        key = top[:_VERSION]
        if self._servers_take_turns:
            key = _by_tally(top, self._guild_tally(guild_id))
        if key != guild.key:
            guild.key, guild.version = key, next(self._versions)
            heapq.heappush(view.heap, (*key, guild.version, guild_id))

    def _guild_tally(self, guild_id: int | None) -> _Turn:
        return self._guild_tallies.get(guild_id, _UNSTARTED)

    def _rekey_everywhere(self, guild_ids: Iterable[int | None]) -> None:
        """Index the guilds between guilds anew in every view, after their tallies moved."""
        for view in self._views.values():
            for guild_id in guild_ids:
                if guild_id in view.guilds:
                    self._rekey(view, guild_id)

    def _guild_is_current(self, view: _View, guild_id: int | None, version: int) -> bool:
        guild = view.guilds.get(guild_id)
        return guild is not None and guild.version == version

    def _advance(self, view: _View, now: float) -> None:
        """Move the clock to ``now``, re-index promoted users and drop stale entries on top."""
        self._move_clock(now)
        events = self._aging_events
        promoted: dict[int, None] = {}  # in order, once each
        while events and events[0][0] <= now:
            _, user_id, version = heapq.heappop(events)
            if self._is_current(user_id, version):
                promoted[user_id] = None
        if promoted:
            self._refresh(*promoted)
        # Stale entries of guilds whose users just started sort first; dropping them here keeps
        # walks short.
        heap = view.heap
        while heap and not self._guild_is_current(view, heap[0][_GUILD], heap[0][_GUILD_VERSION]):
            heapq.heappop(heap)

    def _compact_if_needed(self) -> None:
        # Stale entries pile up with every refresh; rebuild once they dominate.
        limit = 4 * len(self._users) + 64
        for view in self._views.values():
            if len(view.heap) > 4 * len(view.guilds) + 64:
                view.heap = [
                    entry
                    for entry in view.heap
                    if self._guild_is_current(view, entry[_GUILD], entry[_GUILD_VERSION])
                ]
                heapq.heapify(view.heap)
        if len(self._promotions) > 4 * len(self._tickets) + 64:
            due = {
                entry
                for entry in self._promotions
                if entry[0] > self._clock and entry[1] in self._tickets
            }
            self._promotions = list(due)
            heapq.heapify(self._promotions)
        if len(self._starts) > limit:
            self._starts = [
                (turn, user_id)
                for turn, user_id in self._starts
                if (user := self._users.get(user_id)) is not None and user.turn == turn
            ]
            heapq.heapify(self._starts)
        if len(self._aging_events) > limit:
            self._aging_events = [
                event for event in self._aging_events if self._is_current(event[1], event[2])
            ]
            heapq.heapify(self._aging_events)

    def _is_current(self, user_id: int, version: int) -> bool:
        user = self._users.get(user_id)  # None: forgotten since (``_forget_idle_users``)
        return user is not None and user.version == version

    def _walk(
        self, view: _View, now: float, *, respect_caps: bool
    ) -> Iterator[tuple[QueuedJob, int]]:
        """Yield queued jobs in fair order, each with the user whose share its guild's turn
        is, pretending each starts before the next is chosen."""
        users = self._users
        heap = list(view.heap)  # simulated starts change copies only: this, and guilds' below
        guilds: dict[int | None, _Guild] = {}  # copied from the view's as the walk reaches them
        capped_guilds: set[int | None] = set()
        simulated: dict[int, _Simulated] = {}
        simulated_versions = itertools.count(-1, -1)
        start_seqs = itertools.count(self._last_start_seq + 1)
        level, share_level = self._level, self._share_level
        servers_take_turns, guild_level = self._servers_take_turns, self._guild_level
        tallies: dict[int | None, _Turn] = {}  # guilds' tallies moved by simulated starts
        guild_started: Counter[int | None] = Counter()
        user_cap = self.config.per_user_in_flight
        guild_cap = self.config.per_guild_in_flight

        def is_current(user_id: int, version: int) -> bool:
            state = simulated.get(user_id)
            if state is None:
                user = users.get(user_id)
                return user is not None and user.version == version
            return state.version == version

        def guild_of(guild_id: int | None) -> _Guild:
            guild = guilds.get(guild_id)
            if guild is None:
                kept = view.guilds.get(guild_id)
                guild = guilds[guild_id] = _Guild(0) if kept is None else kept.copy()
            return guild

        def tally_of(guild_id: int | None) -> _Turn:
            """The guild's tally as the simulated starts so far left it."""
            return tallies[guild_id] if guild_id in tallies else self._guild_tally(guild_id)

        def entry_of(guild_id: int | None, guild: _Guild) -> _GuildEntry | None:
            """The guild's entry between guilds, anew (None: none of its users is left)."""
            top = _guild_top(guild, is_current)
            if top is None:
                return None
            guild.version = next(simulated_versions)
            if servers_take_turns:
                return (*_by_tally(top, tally_of(guild_id)), guild.version, guild_id)
            return (*top[:_VERSION], guild.version, guild_id)

        def place(user_id: int, state: _Simulated, head: _Head | None, keyed: int | None) -> None:
            """Index the user's next job ``head`` in its guild's copy (the caller keys the
            guild ``keyed`` anew)."""
            if head is None or head[0].job.guild_id in capped_guilds:
                return
            guild_id = head[0].job.guild_id
            guild = guild_of(guild_id)
            guild.enter(head, state.turn, state.share, state.version, user_id)
            if guild_id != keyed and (entry := entry_of(guild_id, guild)) is not None:
                heapq.heappush(heap, entry)

        def simulated_state(user_id: int) -> _Simulated:
            state = simulated.get(user_id)
            if state is None:
                user = self._users[user_id]
                state = simulated[user_id] = _Simulated(0, user.turn, user.share)
            state.version = next(simulated_versions)  # their entries are stale from now on
            return state

        # The guild that just took a turn, keyed anew: pushed as the next one is popped, in one
        # step when it stays first.
        again: _GuildEntry | None = None
        while heap or again is not None:
            if again is None:
                popped = heapq.heappop(heap)
            else:
                popped, again = heapq.heappushpop(heap, again), None
            version, guild_id = popped[_GUILD_VERSION], popped[_GUILD]
            guild = guilds[guild_id] if guild_id in guilds else view.guilds.get(guild_id)
            if guild is None or guild.version != version or guild_id in capped_guilds:
                continue
            guild = guild_of(guild_id)
            # The guild's first user, and the user whose share its turn is: their entries were
            # current, on top, when the guild was keyed.
            first = guild.heap.top()
            sharer_entry = first if guild.shares is None else guild.shares.top()
            assert first is not None and sharer_entry is not None, "a keyed guild has users"
            user_id, sharer_id, job = first[_USER], sharer_entry[_USER], first[_TICKET].job
            state = simulated.get(user_id)
            if respect_caps:
                guild_load = self._guild_running[guild_id] + guild_started[guild_id]
                if guild_cap is not None and guild_id is not None and guild_load >= guild_cap:
                    capped_guilds.add(guild_id)  # nothing of it can start: its users leave
                    continue
                if self._users[user_id].running + (state.started if state else 0) >= user_cap:
                    simulated_state(user_id)  # this user can start nothing more: they leave
                    again = entry_of(guild_id, guild)
                    continue
            yield job, sharer_id
            guild.heap.pop()  # the entries just read, stale from now on
            if guild.shares is not None:
                guild.shares.pop()
            sharer = simulated_state(sharer_id)
            # Each job yielded is first as it starts, and its sharer's share first between guilds.
            share, share_level = sharer.share, max(share_level, sharer.share.work)
            start = next(start_seqs)
            sharer.share = _Turn(_work_after(share, share_level, job), start)
            state = sharer if sharer_id == user_id else simulated_state(user_id)
            level = max(level, state.turn.work)
            if state.turn == share and level == share_level:  # the same move (without roles)
                state.turn = sharer.share
            else:
                state.turn = _Turn(_work_after(state.turn, level, job), start)
            if servers_take_turns:
                tally = tally_of(guild_id)
                guild_level = max(guild_level, tally.work)
                tallies[guild_id] = _Turn(_work_after(tally, guild_level, job), start)
            state.started += 1
            lane_key = (job.priority, job.device)
            state.consumed[lane_key] = state.consumed.get(lane_key, 0) + 1
            guild_started[guild_id] += 1
            place(user_id, state, self._head(users[user_id], view, now, state.consumed), guild_id)
            if sharer_id != user_id:  # their next job is the one just read
                ticket = sharer_entry[_TICKET]
                effective = self._effective_class(ticket.job, now)
                head = (ticket, effective, self._fresh(ticket.job, now), -sharer_entry[0])
                place(sharer_id, sharer, head, guild_id)
            again = entry_of(guild_id, guild)


def _guild_top(guild: _Guild, is_current: Callable[[int, int], bool]) -> _Entry | None:
    """The entry that places the guild between guilds (rule 1): of its best rank, the least
    share (stale entries on top of its heaps are dropped); None when none of its users is
    left."""
    heap = guild.heap
    while (entry := heap.top()) is not None and not is_current(entry[_USER], entry[_VERSION]):
        heap.pop()
    shares = guild.shares
    if shares is None:
        return entry
    while (entry := shares.top()) is not None and not is_current(entry[_USER], entry[_VERSION]):
        shares.pop()
    return entry


def _by_tally(top: _Entry, tally: _Turn) -> _GuildKey:
    """Where a guild goes between guilds when servers take turns: at its top entry's rank, by
    its own ``tally`` in place of its sharer's share (rule 1)."""
    return (top[0], top[1], *tally, top[4], top[5])


def _taken_back(charge: _Charge[_Holder], current: _Turn) -> _Turn:
    """A tally once ``charge`` is undone: back to what it was, or, when a later start moved it
    since, that one's, less this job's work."""
    if current.start == charge.after.start:
        return charge.before
    return _Turn(current.work - (charge.after.work - charge.before.work), current.start)


def _followed(later: _Charge[_Holder], undone: _Charge[_Holder]) -> _Charge[_Holder]:
    """A later start's charge of the same tally once ``undone`` is: moved down with that
    tally by what ``undone`` had added (``_taken_back``), one that followed it following
    the one before; none counts its lift any more."""
    if later.holder != undone.holder or later.after.start <= undone.after.start:
        return later
    added = undone.after.work - undone.before.work
    before = _plus(later.before, -added)
    if later.before.start == undone.after.start:
        before = undone.before
    return later._replace(
        before=before, after=_plus(later.after, -added), lifted=later.lifted - undone.lift
    )


def _work_after(turn: _Turn, level: float, job: QueuedJob) -> float:
    """The work a user's starts add up to once ``job`` starts (rule 2)."""
    return max(turn.work, level) + _least_work(job)


def _lift(turn: _Turn, level: float) -> float:
    """What a start from ``turn`` adds to it to bring it up to the ``level`` (rule 2)."""
    return max(level - turn.work, 0.0)


def _least_work(job: QueuedJob) -> float:
    """The work ``job``'s start adds to a tally (rule 2)."""
    return max(job.est_seconds, _LEAST_WORK_S)


def _plus(turn: _Turn, change: float) -> _Turn:
    return _Turn(turn.work + change, turn.start)


def _absorbed(change: float, lifted_since: float) -> float:
    """How much of a start's ``change`` of work the level's lifts of its tally since
    (``lifted_since``) take in: a start counted from the level had counted the time that
    start's job was running, so a job measured heavier is not charged that time twice. A
    lighter one is charged all its change (the level bounds what its user saves up)."""
    return min(change, max(lifted_since, 0.0)) if change > 0 else 0.0


def _charged_again(
    charge: _Charge[_Holder], change: float, tally: _Turn, lifted: float
) -> tuple[_Turn, float]:
    """A ``tally`` and its ``lifted`` once ``charge``'s start counts ``change`` more work."""
    absorbed = _absorbed(change, lifted - charge.lifted)
    return _plus(tally, change - absorbed), lifted - absorbed


def _moved_after(
    later: _Charge[_Holder], charge: _Charge[_Holder] | None, change: float
) -> _Charge[_Holder]:
    """``later``, moved with its tally when it moved that tally after ``charge`` did, which
    now counts ``change`` more work: what its lift and the lifts before it absorb (as
    ``_charged_again``) moves neither it nor its tally."""
    if charge is None or later.holder != charge.holder or later.after.start <= charge.after.start:
        return later
    since = later.lifted - charge.lifted
    before_it, with_it = _absorbed(change, since - later.lift), _absorbed(change, since)
    return later._replace(
        before=_plus(later.before, change - before_it),
        after=_plus(later.after, change - with_it),
        lift=later.lift - (with_it - before_it),
        lifted=later.lifted - with_it,
    )
