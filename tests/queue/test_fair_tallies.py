"""The fair tallies (rule 2's turns and shares, servers' tallies) after any history of
submits, starts, measured finishes, cancels, requeues and put-backs equal a plain reference
model's: a list of each tally's starts, summed.

The reference states the rule the scheduler's lift bookkeeping (``_Charge.lifted``,
``_charged_again``, ``_moved_after``, ``_take_back``) keeps with no list:

- a start adds to its tally its *lift* (what the level added: ``max(level - tally, 0)``) and
  its job's work (``est_seconds``, 0.1 s at least);
- a finish measured at ``m`` seconds makes that work ``max(m, 0.1)``; a heavier measure's
  excess is first taken out of the lifts of the same tally's later starts, earliest first
  (the level had counted the time the job ran), a lighter one is charged whole;
- a finish measured at 0 (no device time) or a put-back takes the start out of its tally;
- the levels are the tallies of the first job's user, sharer and guild at each batch.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bot.jobs.scheduler import (
    FAIRNESS_CHOICES,
    Fairness,
    FairScheduler,
    PriorityClass,
    QueuedJob,
    SchedulerConfig,
)

_LEAST_WORK_S = 0.1
_FIRST_START = 2
_ids = itertools.count()


@dataclass
class _Entry:
    start: int
    lift: float
    work: float


@dataclass
class _Tally:
    """One tally's starts, in start order: what it is, and what its lifts add up to."""

    entries: list[_Entry] = field(default_factory=list)

    @property
    def work(self) -> float:
        return sum(entry.lift + entry.work for entry in self.entries)

    @property
    def start(self) -> int:
        return self.entries[-1].start if self.entries else 0

    @property
    def lifted(self) -> float:
        return sum(entry.lift for entry in self.entries)

    def charge(self, start: int, level: float, work: float) -> None:
        tally = self.work
        self.entries.append(_Entry(start, max(level - tally, 0.0), work))

    def measured(self, start: int, used_s: float) -> None:
        entry = next(entry for entry in self.entries if entry.start == start)
        excess = max(used_s, _LEAST_WORK_S) - entry.work
        entry.work = max(used_s, _LEAST_WORK_S)
        for later in self.entries[self.entries.index(entry) + 1 :]:
            taken = min(max(excess, 0.0), later.lift)
            later.lift -= taken
            excess -= taken

    def taken_out(self, start: int) -> None:
        self.entries = [entry for entry in self.entries if entry.start != start]


@dataclass
class _Reference:
    servers_take_turns: bool
    turns: dict[int, _Tally] = field(default_factory=dict)
    shares: dict[int, _Tally] = field(default_factory=dict)
    guilds: dict[int | None, _Tally] = field(default_factory=dict)
    levels: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # turn, share, guild
    starts: itertools.count[int] = field(default_factory=lambda: itertools.count(_FIRST_START))
    # Each running job's start, and its tallies: its user's turn, its sharer's share, its
    # guild's.
    running: dict[str, tuple[int, list[_Tally]]] = field(default_factory=dict)

    def tallies(self, job: QueuedJob, sharer: int) -> list[_Tally]:
        found = [
            self.turns.setdefault(job.user_id, _Tally()),
            self.shares.setdefault(sharer, _Tally()),
        ]
        if self.servers_take_turns:
            found.append(self.guilds.setdefault(job.guild_id, _Tally()))
        return found

    def started(self, batch: list[QueuedJob], first: QueuedJob, sharer_of: dict[str, int]) -> None:
        for kind, tally in enumerate(self.tallies(first, sharer_of[first.job_id])):
            self.levels[kind] = max(self.levels[kind], tally.work)
        for job in batch:
            start, work = next(self.starts), max(job.est_seconds, _LEAST_WORK_S)
            tallies = self.tallies(job, sharer_of[job.job_id])
            self.running[job.job_id] = (start, tallies)
            for kind, tally in enumerate(tallies):
                tally.charge(start, self.levels[kind], work)

    def finished(self, job_id: str, used_s: float | None) -> None:
        start, tallies = self.running.pop(job_id)
        for tally in tallies:
            if used_s == 0.0:
                tally.taken_out(start)
            elif used_s is not None:
                tally.measured(start, used_s)

    def put_back(self, job_id: str) -> None:
        start, tallies = self.running.pop(job_id)
        for tally in tallies:
            tally.taken_out(start)


def _assert_equal(scheduler: FairScheduler, reference: _Reference) -> None:
    users = scheduler._users
    for user_id in reference.turns.keys() | reference.shares.keys():
        turn = reference.turns.get(user_id, _Tally())
        share = reference.shares.get(user_id, _Tally())
        user = users.get(user_id)
        if user is None:  # it left no trace: none of its starts stands
            assert not turn.entries and not share.entries
            continue
        assert user.turn.start == turn.start
        assert user.share.start == share.start
        assert user.turn.work == pytest.approx(turn.work, rel=1e-9, abs=1e-9)
        assert user.share.work == pytest.approx(share.work, rel=1e-9, abs=1e-9)
        assert user.lifted == pytest.approx(turn.lifted, rel=1e-9, abs=1e-9)
        assert user.share_lifted == pytest.approx(share.lifted, rel=1e-9, abs=1e-9)
    for guild_id, tally in reference.guilds.items():
        kept = scheduler._guild_tallies.get(guild_id)
        assert (kept.start if kept else 0) == tally.start
        assert (kept.work if kept else 0.0) == pytest.approx(tally.work, rel=1e-9, abs=1e-9)
        lifted = scheduler._guild_lifted.get(guild_id, 0.0)
        assert lifted == pytest.approx(tally.lifted, rel=1e-9, abs=1e-9)


_MEASURES = [None, 0.0, 0.05, 1.0, 3.0, 20.0, 100.0]
_Step = tuple[str, int, float]


@st.composite
def histories(draw: st.DrawFn) -> tuple[Fairness, bool, list[_Step]]:
    """The fairness, whether guild 1's priority role ranks across guilds, and operations
    (name, a number picking what it acts on and how, seconds passing before it)."""
    # Submits and starts twice as often as the others.
    names = st.sampled_from(
        [*("submit", "start") * 2, "finish", "finish", "put_back", "cancel", "requeue"]
    )
    steps = st.lists(
        st.tuples(names, st.integers(0, 10_000), st.sampled_from([0.0, 0.5, 1.0, 4.0])),
        min_size=20,
        max_size=80,
    )
    return draw(st.sampled_from(FAIRNESS_CHOICES)), draw(st.booleans()), draw(steps)


@settings(max_examples=100, deadline=None)
@given(histories())
# Found by it: a start put back after a later one was (twice, the first restarted between)
# left that later one's charge counting the first's work, taken back again with it.
@example(
    ("members", False, [*[("submit", 0, 0.0)] * 2, *[("start", 0, 0.0), ("put_back", 0, 0.0)] * 2])
)
def test_the_tallies_are_the_reference_models_after_any_history(
    history: tuple[Fairness, bool, list[_Step]],
) -> None:
    fairness, priority_across, steps = history
    config = SchedulerConfig(
        per_user_in_flight=3,
        max_batch=2,
        aging_seconds=3.0,
        fairness=fairness,
        priority_across_guilds=frozenset({1}) if priority_across else frozenset(),
    )
    scheduler = FairScheduler(config, ["a", "b"])
    reference = _Reference(fairness == "servers")
    queued: list[QueuedJob] = []
    running: list[QueuedJob] = []
    now = 0.0
    for name, pick, elapsed in steps:
        now += elapsed
        if name == "submit":
            item = QueuedJob(
                job_id=f"job-{next(_ids)}",
                user_id=pick % 3,
                guild_id=[1, 2, None][pick // 5 % 3],
                batch_key=("sd15",),
                priority=PriorityClass(pick // 15 % 3),
                submitted_at=now,
                est_seconds=float(pick // 45 % 10),
            )
            scheduler.submit(item)
            queued.append(item)
        elif name == "start":
            device = ["a", "b"][pick % 2]
            planned, sharer_of = scheduler._plan(device, now, None)
            batch = scheduler.next_batch(device, now)
            assert batch == planned
            if batch:
                first_id = next(iter(sharer_of))
                first = next(item for item in queued if item.job_id == first_id)
                reference.started(batch, first, sharer_of)
            queued = [item for item in queued if item not in batch]
            running += batch
        elif name == "cancel" and queued:
            assert scheduler.cancel(queued.pop(pick % len(queued)).job_id)
        elif name in ("finish", "requeue", "put_back") and running:
            ended = running.pop(pick % len(running))
            if name == "finish":
                used_s = _MEASURES[pick // 2 % len(_MEASURES)]
                scheduler.finish(ended.job_id, used_s)
                reference.finished(ended.job_id, used_s)
            elif name == "requeue":
                scheduler.requeue(ended.job_id)
                reference.finished(ended.job_id, None)  # its start stands, as estimated
                queued.append(ended)
            else:
                scheduler.put_back_unstarted(ended.job_id)
                reference.put_back(ended.job_id)
                queued.append(ended)
        _assert_equal(scheduler, reference)
