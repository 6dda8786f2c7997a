"""FairScheduler: fair order, caps, aging, batching bound, devices, position/ETA, cancel."""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.jobs.scheduler import (
    FAIRNESS_CHOICES,
    IDLE_USER_FORGOTTEN_S,
    Fairness,
    FairScheduler,
    PriorityClass,
    QueuedJob,
    SchedulerConfig,
)

STANDARD = PriorityClass.STANDARD
_ids = itertools.count()


def job(
    user: int,
    *,
    at: float = 0.0,
    model: str = "sd15",
    priority: PriorityClass = STANDARD,
    guild: int | None = 1,
    device: str | None = None,
    est: float = 10.0,
) -> QueuedJob:
    return QueuedJob(
        job_id=f"u{user}-{next(_ids)}",
        user_id=user,
        guild_id=guild,
        batch_key=(model, 512, 512),
        priority=priority,
        submitted_at=at,
        est_seconds=est,
        device=device,
    )


def drain_one_at_a_time(scheduler: FairScheduler, now: float = 0.0) -> list[QueuedJob]:
    """Start and finish jobs one by one on one device, returning the start order."""
    started = []
    while batch := scheduler.next_batch("cpu", now):
        assert len(batch) == 1
        started.append(batch[0])
        scheduler.finish(batch[0].job_id)
    return started


@dataclass
class Simulation:
    """One device rendering every batch in ``render_s``; jobs arrive at their submitted_at."""

    scheduler: FairScheduler
    render_s: float = 1.0
    batches: list[tuple[float, list[QueuedJob]]] = field(default_factory=list)

    def run(self, arrivals: list[QueuedJob]) -> None:
        pending = sorted(arrivals, key=lambda j: j.submitted_at)
        now = 0.0
        while pending or self.scheduler.queued_count:
            while pending and pending[0].submitted_at <= now:
                self.scheduler.submit(pending.pop(0))
            batch = self.scheduler.next_batch("cpu", now)
            if not batch:
                now = pending[0].submitted_at
                continue
            self.batches.append((now, batch))
            now += self.render_s
            for started in batch:
                self.scheduler.finish(started.job_id)

    def start_of(self, job_id: str) -> tuple[int, float]:
        for index, (at, batch) in enumerate(self.batches):
            if any(j.job_id == job_id for j in batch):
                return index, at
        raise AssertionError(f"{job_id} never started")


@pytest.mark.parametrize("max_batch", [1, 4])
@pytest.mark.parametrize("light_users_share_model", [True, False])
def test_light_users_are_not_starved_by_a_heavy_user(
    max_batch: int, light_users_share_model: bool
) -> None:
    config = SchedulerConfig(per_user_in_flight=2, max_batch=max_batch)
    heavy = [job(0, at=0.0) for _ in range(50)]
    light_users = [1, 2, 3, 4]
    light = [
        job(user, at=0.5, model="sd15" if light_users_share_model else f"model{user}")
        for user in light_users
        for _ in range(5)
    ]
    simulation = Simulation(FairScheduler(config))
    simulation.run(heavy + light)

    bound = config.per_user_in_flight + len(light_users)
    for user in light_users:
        first = next(j for j in light if j.user_id == user)
        index, _ = simulation.start_of(first.job_id)
        renders_waited = sum(1 for at, _ in simulation.batches[:index] if at >= first.submitted_at)
        assert renders_waited <= bound
    started = [j.job_id for _, batch in simulation.batches for j in batch]
    assert sorted(started) == sorted(j.job_id for j in heavy + light)


def test_round_robin_across_users_and_fifo_within_each() -> None:
    scheduler = FairScheduler(SchedulerConfig(max_batch=1))
    jobs = {user: [job(user, at=float(i)) for i in range(3)] for user in (7, 8, 9)}
    for i in range(3):
        for user in (9, 7, 8):  # user 9 submits first each round
            scheduler.submit(jobs[user][i])
    order = drain_one_at_a_time(scheduler)
    assert [j.user_id for j in order] == [9, 7, 8] * 3
    for user, own in jobs.items():
        assert [j for j in order if j.user_id == user] == own


def test_least_recently_started_user_goes_first() -> None:
    scheduler = FairScheduler(SchedulerConfig(max_batch=1))
    first = job(1, at=0.0)
    scheduler.submit(first)
    assert scheduler.next_batch("cpu", 1.0) == [first]
    scheduler.finish(first.job_id)
    again = job(1, at=2.0)
    newcomer = job(2, at=3.0)  # submitted later, but user 2 never had a turn
    scheduler.submit(again)
    scheduler.submit(newcomer)
    assert scheduler.next_batch("cpu", 4.0) == [newcomer]


def test_per_user_cap_counts_running_jobs() -> None:
    scheduler = FairScheduler(SchedulerConfig(per_user_in_flight=2, max_batch=4))
    mine = [job(1) for _ in range(4)]
    for queued in mine:
        scheduler.submit(queued)
    assert scheduler.next_batch("cpu", 0.0) == mine[:2]
    assert scheduler.next_batch("cuda:1", 0.0) == []  # both slots busy
    scheduler.finish(mine[0].job_id)
    assert scheduler.next_batch("cpu", 1.0) == [mine[2]]


def test_guild_cap_lets_other_guilds_through() -> None:
    scheduler = FairScheduler(SchedulerConfig(per_guild_in_flight=1, max_batch=4))
    a, b, c = job(1, guild=10), job(2, guild=10), job(3, guild=20)
    direct = [job(4, guild=None), job(5, guild=None)]  # direct messages have no guild cap
    for queued in (a, b, c, *direct):
        scheduler.submit(queued)
    assert scheduler.next_batch("cpu", 0.0) == [a, c, *direct]
    scheduler.finish(a.job_id)
    assert scheduler.next_batch("cpu", 1.0) == [b]


def test_strict_priority_between_classes() -> None:
    scheduler = FairScheduler(SchedulerConfig(max_batch=1, per_user_in_flight=9))
    relax = job(1, priority=PriorityClass.RELAX, at=0.0)
    standard = job(2, priority=STANDARD, at=1.0)
    urgent = job(3, priority=PriorityClass.PRIORITY, at=2.0)
    own_urgent = job(1, priority=PriorityClass.PRIORITY, at=3.0)
    for queued in (relax, standard, urgent, own_urgent):
        scheduler.submit(queued)
    assert drain_one_at_a_time(scheduler, now=4.0) == [urgent, own_urgent, standard, relax]


def test_a_priority_role_orders_only_its_own_servers_jobs() -> None:
    """Server A's priority members pass A's standard member, not server B's earlier job: between
    servers the fair share decides."""
    scheduler = FairScheduler(SchedulerConfig(max_batch=1))
    urgent = PriorityClass.PRIORITY
    other_server = job(1, guild=20, at=0.0)
    standard_here = job(2, guild=10, at=1.0)
    priority_here = [
        job(3, guild=10, at=2.0, priority=urgent),
        job(4, guild=10, at=3.0, priority=urgent),
    ]
    for queued in (other_server, standard_here, *priority_here):
        scheduler.submit(queued)
    assert drain_one_at_a_time(scheduler) == [other_server, *priority_here, standard_here]


def test_the_operators_priority_servers_go_before_other_servers() -> None:
    """A server the operator lists (``priority_across_guilds``) has its priority members pass
    other servers' jobs too; another server's priority role still orders that server's only."""
    scheduler = FairScheduler(SchedulerConfig(max_batch=1, priority_across_guilds=frozenset({10})))
    urgent = PriorityClass.PRIORITY
    elsewhere = job(1, guild=20, at=0.0)
    priority_elsewhere = job(2, guild=20, at=1.0, priority=urgent)
    listed = job(3, guild=10, at=2.0, priority=urgent)
    for queued in (elsewhere, priority_elsewhere, listed):
        scheduler.submit(queued)
    assert drain_one_at_a_time(scheduler) == [listed, priority_elsewhere, elsewhere]


def test_a_server_whose_members_all_have_priority_takes_only_its_fair_share() -> None:
    """Server A's members all hold a priority role and keep jobs waiting on the one device:
    server B's member still starts at their fair turn, not after aging (600 s)."""
    render_s = 20.0
    scheduler = FairScheduler(SchedulerConfig(max_batch=1))
    now = 0.0
    members_of_a = itertools.cycle(range(100, 105))

    def submit_for_a() -> None:
        scheduler.submit(
            job(next(members_of_a), guild=1, at=now, priority=PriorityClass.PRIORITY, est=render_s)
        )

    for _ in range(3):
        submit_for_a()
    waiting = job(999, guild=2, at=now, est=render_s)
    scheduler.submit(waiting)
    starts = 0
    while (started := scheduler.next_batch("cpu", now)) != [waiting]:
        starts += 1
        assert starts <= 5, f"server B's job still waits after {starts} of server A's"
        now += render_s
        scheduler.finish(started[0].job_id)
        submit_for_a()  # A's members keep one more waiting


def starts_of_busy_members(members: dict[int, tuple[int, PriorityClass]]) -> Counter[int]:
    """One device renders 10 s jobs one at a time for 6,000 s (aging 600 s) while each member
    (user id: guild and class) keeps one job waiting; how many jobs each member started."""
    scheduler = FairScheduler(SchedulerConfig(max_batch=1, aging_seconds=600.0))
    starts: Counter[int] = Counter()
    for user, (guild, priority) in members.items():
        scheduler.submit(job(user, guild=guild, priority=priority))
    for step in range(1, 601):
        now = 10.0 * step
        [started] = scheduler.next_batch("cpu", now)
        scheduler.finish(started.job_id)
        starts[started.user_id] += 1
        guild, priority = members[started.user_id]
        scheduler.submit(job(started.user_id, guild=guild, priority=priority, at=now))
    return starts


def test_a_priority_role_reorders_its_servers_turns_without_changing_its_share() -> None:
    """Server A (11 busy members) against server B (10): with or without a patron in A, A
    starts the same share of the jobs, and with one the patron takes most of A's turns (before
    the fix the patron paced all of A: A fell from 53% to 23%)."""
    server_b = {200 + index: (2, STANDARD) for index in range(10)}
    plain_a = {100 + index: (1, STANDARD) for index in range(11)}
    without_role = starts_of_busy_members({**plain_a, **server_b})
    # The same members, but A's member 110 holds a priority role.
    with_patron = starts_of_busy_members({**plain_a, 110: (1, PriorityClass.PRIORITY), **server_b})
    a_without = sum(without_role[user] for user in plain_a)
    a_with = sum(with_patron[user] for user in plain_a)
    assert a_without == pytest.approx(600 * 11 / 21, abs=12)
    assert a_with == pytest.approx(a_without, abs=18)  # within 3 points of the 600 starts
    assert with_patron[110] > a_with / 2


def test_new_priority_members_riding_an_aged_jobs_lift_cannot_starve_another_server() -> None:
    """Server 1 holds an aged standard job, so it ranks PRIORITY between servers, and gets a
    new priority member at every start, who goes first within server 1. Server 3's standard
    job still starts soon after it has aged (60 s): server 1's turns are charged to the aged
    job's member, not taken for free (before the fix it never started within 3,000 s)."""
    scheduler = FairScheduler(
        SchedulerConfig(per_user_in_flight=1, max_batch=1, aging_seconds=60.0)
    )
    for index in range(3):  # both members have started jobs before
        run_alone(scheduler, 20, at=20.0 * index)
        run_alone(scheduler, 30, at=20.0 * index + 10.0)
    aged = job(20, guild=1, at=60.0)
    waiting = job(30, guild=3, at=60.0)
    newcomers = itertools.count(1000)
    patron = PriorityClass.PRIORITY
    newcomers_jobs = [job(next(newcomers), guild=1, at=60.0, priority=patron) for _ in range(2)]
    for queued in (aged, waiting, *newcomers_jobs):
        scheduler.submit(queued)
    started = start_of_waiting_job(
        scheduler,
        waiting,
        lambda now: scheduler.submit(job(next(newcomers), guild=1, at=now, priority=patron)),
        3000.0,
    )
    assert started is not None and started <= 60.0 + 60.0 + 30.0


@pytest.mark.parametrize("across", [frozenset(), frozenset({1})], ids=["server", "operators"])
def test_a_stream_of_new_priority_members_cannot_pass_their_servers_aged_job(
    across: frozenset[int],
) -> None:
    """A member of server 1 who has started jobs before waits with a standard job, while a new
    member holding server 1's priority role arrives at every start: each goes first by rule 2
    (never started). Once the standard job has waited the aging period (60 s) it goes before
    the priority jobs that have waited less, in an operator's priority server too (before the
    fix it never started)."""
    config = SchedulerConfig(max_batch=1, aging_seconds=60.0, priority_across_guilds=across)
    scheduler = FairScheduler(config)
    for index in range(3):
        run_alone(scheduler, 20, at=10.0 * index)
    waiting = job(20, guild=1, at=30.0)
    scheduler.submit(waiting)
    newcomers = itertools.count(1000)
    patron = PriorityClass.PRIORITY
    for _ in range(2):
        scheduler.submit(job(next(newcomers), guild=1, at=30.0, priority=patron))
    started = start_of_waiting_job(
        scheduler,
        waiting,
        lambda now: scheduler.submit(job(next(newcomers), guild=1, at=now, priority=patron)),
        3000.0,
    )
    assert started == 30.0 + 60.0


@pytest.mark.parametrize(("priority", "wait"), [(PriorityClass.PRIORITY, 0.0), (STANDARD, 60.0)])
def test_a_patron_who_started_before_goes_before_a_busy_servers_aged_backlog(
    priority: PriorityClass, wait: float
) -> None:
    """Eight members of a server keep a job each queued, so every job waits past the aging
    period (60 s) and is aged when it starts. A patron who has started before still goes first
    by rule 2 (they used less); only newcomers' priority jobs wait for the aged ones. Without
    the role their job waits the aging period like everyone's."""
    scheduler = FairScheduler(SchedulerConfig(max_batch=1, aging_seconds=60.0))
    patron, busy = 9, range(1, 9)
    for index, member in enumerate([patron, *busy]):
        run_alone(scheduler, member, at=10.0 * index)
    for member in busy:
        scheduler.submit(job(member, at=90.0))
    now = 90.0
    patrons_job = None
    while now < 1000.0:
        if now == 300.0:
            patrons_job = job(patron, at=now, priority=priority)
            scheduler.submit(patrons_job)
        [started] = scheduler.next_batch("cpu", now)
        if started is patrons_job:
            break
        now += 10.0
        scheduler.finish(started.job_id)
        scheduler.submit(job(started.user_id, at=now))
    assert now - 300.0 == wait


def start_of_waiting_job(
    scheduler: FairScheduler, waiting: QueuedJob, keep_submitting: Any, horizon: float
) -> float | None:
    """One device renders jobs of 10 s one at a time; after each start ``keep_submitting(now)``
    queues one more job. When ``waiting`` starts (None: not within ``horizon``)."""
    now = waiting.submitted_at
    while now < horizon:
        started = scheduler.next_batch("cpu", now)
        if started == [waiting]:
            return now
        now += 10.0
        for item in started:
            scheduler.finish(item.job_id)
        keep_submitting(now)
    return None


def test_a_job_aged_past_the_bound_goes_before_an_operators_priority_server() -> None:
    """Server A is an operator's priority server whose patron keeps three jobs waiting; server
    B's standard job waits 60 s (the aging period), then ranks as PRIORITY everywhere and goes
    first by rule 2 (before the fix it never started: aging counted only in its own server)."""
    config = SchedulerConfig(max_batch=1, aging_seconds=60.0, priority_across_guilds=frozenset({1}))
    scheduler = FairScheduler(config)
    urgent = PriorityClass.PRIORITY
    for _ in range(3):
        scheduler.submit(job(1, guild=1, priority=urgent))
    waiting = job(2, guild=2)
    scheduler.submit(waiting)
    started = start_of_waiting_job(
        scheduler,
        waiting,
        lambda now: scheduler.submit(job(1, guild=1, at=now, priority=urgent)),
        2000.0,
    )
    assert started == 60.0


def test_a_job_aged_past_the_bound_goes_before_another_servers_newcomers() -> None:
    """Server B's member has started jobs before; server A has a stream of members new to the
    queue, who go first by rule 2. Once B's job has waited the aging period it ranks PRIORITY
    and goes before A's unaged jobs (before the fix it never started)."""
    scheduler = FairScheduler(SchedulerConfig(max_batch=1, aging_seconds=60.0))
    for index in range(5):
        run_alone(scheduler, 2, at=10.0 * index)
    waiting = job(2, guild=2, at=50.0)
    scheduler.submit(waiting)
    newcomers = itertools.count(1000)
    for _ in range(3):
        scheduler.submit(job(next(newcomers), guild=1, at=50.0))
    started = start_of_waiting_job(
        scheduler,
        waiting,
        lambda now: scheduler.submit(job(next(newcomers), guild=1, at=now)),
        3000.0,
    )
    assert started == 110.0


def test_an_aged_job_lifts_its_server_whose_own_order_still_holds() -> None:
    """Between servers an aged job ranks PRIORITY and lifts its server's turn above another
    server's unaged job. Within its server it goes before a priority member's job that has
    waited less than the aging period; once that one has waited as long, both are PRIORITY
    jobs that have waited it, and rule 2 orders them (the patron has started less)."""
    scheduler = FairScheduler(SchedulerConfig(max_batch=1, aging_seconds=10.0))
    run_alone(scheduler, 1, at=0.0)
    aged = job(1, guild=10, at=1.0)  # PRIORITY at 11
    patron = job(2, guild=10, at=5.0, priority=PriorityClass.PRIORITY)
    elsewhere = job(3, guild=20, at=5.0)
    for queued in (aged, patron, elsewhere):
        scheduler.submit(queued)
    assert scheduler.fair_order(8.0) == [patron, elsewhere, aged]
    assert scheduler.fair_order(12.0) == [aged, patron, elsewhere]
    assert scheduler.fair_order(15.0) == [patron, elsewhere, aged]


def test_aging_lets_relax_run_despite_a_constant_stream() -> None:
    aging = 10.0
    scheduler = FairScheduler(SchedulerConfig(max_batch=1, aging_seconds=aging))
    relax = job(99, priority=PriorityClass.RELAX, at=0.0)
    # A STANDARD job arrives every second, exactly as fast as the device renders.
    busy = [job(1 + second % 3, at=float(second)) for second in range(40)]
    simulation = Simulation(scheduler, render_s=1.0)
    simulation.run([relax, *busy])
    _, started_at = simulation.start_of(relax.job_id)
    # Strict priority holds it back until it has waited aging_seconds, then it is STANDARD
    # and, never having started a job, its user goes first.
    assert started_at == aging


def test_aging_promotes_one_class_per_period_up_to_priority() -> None:
    scheduler = FairScheduler(SchedulerConfig(max_batch=1, aging_seconds=10.0))
    relax = job(1, priority=PriorityClass.RELAX, at=0.0)
    urgent = job(2, priority=PriorityClass.PRIORITY, at=15.0)
    scheduler.submit(relax)
    scheduler.submit(urgent)
    assert scheduler.fair_order(15.0) == [urgent, relax]  # RELAX aged to STANDARD only
    assert scheduler.fair_order(20.0) == [relax, urgent]  # now PRIORITY, and older


def test_batches_group_only_compatible_jobs() -> None:
    scheduler = FairScheduler(SchedulerConfig(max_batch=4))
    a1, b1, a2, a3 = job(1, model="a"), job(2, model="b"), job(3, model="a"), job(4, model="a")
    for queued in (a1, b1, a2, a3):
        scheduler.submit(queued)
    assert scheduler.next_batch("cpu", 0.0) == [a1, a2, a3]
    assert scheduler.next_batch("cpu", 0.0) == [b1]


def test_batch_never_passes_a_users_incompatible_job() -> None:
    scheduler = FairScheduler(SchedulerConfig(max_batch=4, per_user_in_flight=4))
    first, second = job(1, model="b"), job(1, model="a")
    leader = job(2, model="a")
    for queued in (leader, first, second):
        scheduler.submit(queued)
    assert scheduler.next_batch("cpu", 0.0) == [leader]  # `second` would jump `first`


def test_batch_partners_stay_within_two_batches_of_fair_order() -> None:
    scheduler = FairScheduler(SchedulerConfig(max_batch=2, per_user_in_flight=9))
    # Fair order: a b b b b a — the second "a" is at position 5, beyond 2 * max_batch.
    jobs = [job(1, model="a"), *[job(u, model="b") for u in (2, 3, 4, 5)], job(6, model="a")]
    for queued in jobs:
        scheduler.submit(queued)
    assert scheduler.next_batch("cpu", 0.0) == [jobs[0]]


def test_loaded_model_may_jump_one_turn_only() -> None:
    config = SchedulerConfig(max_batch=1, model_affinity_turns=1)
    scheduler = FairScheduler(config)
    x, y, z = job(1, model="x"), job(2, model="y"), job(3, model="z")
    for queued in (x, y, z):
        scheduler.submit(queued)
    assert scheduler.next_batch("cpu", 0.0, loaded_model="z") == [x]  # z is two turns back
    assert scheduler.next_batch("cpu", 0.0, loaded_model="z") == [z]  # now one turn back
    assert scheduler.next_batch("cpu", 0.0, loaded_model="z") == [y]


@st.composite
def job_mixes(draw: st.DrawFn) -> tuple[SchedulerConfig, list[QueuedJob], list[bool]]:
    config = SchedulerConfig(
        per_user_in_flight=draw(st.integers(1, 3)),
        per_guild_in_flight=draw(st.none() | st.integers(1, 4)),
        max_batch=draw(st.integers(1, 4)),
        fairness=draw(st.sampled_from(FAIRNESS_CHOICES)),
    )
    jobs = [
        job(
            draw(st.integers(0, 5)),
            at=float(index),
            model=draw(st.sampled_from(["a", "b", "c"])),
            priority=draw(st.sampled_from(list(PriorityClass))),
            guild=draw(st.sampled_from([1, 2, None])),
            device=draw(st.sampled_from([None, None, "cpu", "gpu"])),
        )
        for index in range(draw(st.integers(1, 40)))
    ]
    finishes = draw(st.lists(st.booleans(), min_size=200, max_size=200))
    return config, jobs, finishes


@settings(max_examples=60, deadline=None)
@given(job_mixes())
def test_every_batch_respects_fair_order_caps_and_fifo(
    mix: tuple[SchedulerConfig, list[QueuedJob], list[bool]],
) -> None:
    config, jobs, finishes = mix
    scheduler = FairScheduler(config)
    for queued in jobs:
        scheduler.submit(queued)
    running: list[QueuedJob] = []
    waiting = [queued.job_id for queued in jobs]
    now = 100.0
    for step, finish_one in enumerate(finishes):
        device = "cpu" if step % 2 else "gpu"
        # Every waiting job is in the order once: none held back behind a guild's PRIORITY
        # job is lost.
        whole = [queued.job_id for queued in scheduler.fair_order(now, respect_caps=False)]
        assert sorted(whole) == sorted(waiting)
        fair = scheduler.fair_order(now, device)
        batch = scheduler.next_batch(device, now)
        waiting = [job_id for job_id in waiting if job_id not in {j.job_id for j in batch}]
        horizon = fair[: 2 * config.max_batch]
        assert all(started in horizon for started in batch)
        assert len(batch) <= config.max_batch
        assert len({started.batch_key for started in batch}) <= 1
        assert all(started.device in (None, device) for started in batch)
        for user in {started.user_id for started in batch}:
            # FIFO: the user's started jobs are the first of theirs in the fair order.
            theirs = [j for j in fair if j.user_id == user]
            assert [j for j in batch if j.user_id == user] == theirs[
                : len([j for j in batch if j.user_id == user])
            ]
        running += batch
        for user in {j.user_id for j in running}:
            assert sum(j.user_id == user for j in running) <= config.per_user_in_flight
        if config.per_guild_in_flight is not None:
            for guild in {j.guild_id for j in running} - {None}:
                assert sum(j.guild_id == guild for j in running) <= config.per_guild_in_flight
        if running and (finish_one or not batch):
            scheduler.finish(running.pop(0).job_id)
        now += 1.0
        if not running and scheduler.queued_count == 0:
            break
    assert scheduler.queued_count == 0 or running


@st.composite
def endless_streams(
    draw: st.DrawFn,
) -> tuple[SchedulerConfig, list[tuple[int, PriorityClass, int, int]]]:
    """Members (guild, class, seconds a job takes, jobs kept waiting), some servers listed as
    the operator's priority servers."""
    config = SchedulerConfig(
        max_batch=1,
        per_user_in_flight=1,
        aging_seconds=20.0,
        priority_across_guilds=draw(st.frozensets(st.sampled_from([1, 2]))),
        fairness=draw(st.sampled_from(FAIRNESS_CHOICES)),
    )
    members = draw(
        st.lists(
            st.tuples(
                st.sampled_from([1, 2, 3]),
                st.sampled_from(list(PriorityClass)),
                st.sampled_from([5, 10]),
                st.integers(1, 2),
            ),
            min_size=2,
            max_size=4,
        )
    )
    return config, members


@settings(max_examples=40, deadline=None)
@given(endless_streams())
def test_no_job_waits_forever_whatever_the_servers_roles_and_streams(
    streams: tuple[SchedulerConfig, list[tuple[int, PriorityClass, int, int]]],
) -> None:
    """Every member keeps jobs waiting on one device, whatever their servers, priority roles
    and the operator's priority servers: each job starts within a bound. By ``2 * aging``
    a job and its member's older ones rank PRIORITY everywhere and lift their server; then
    only members whose starts add up to no more work (rule 2) start before each of its
    member's jobs ahead of it, each of them at most ``longest / shortest + 2`` times."""
    config, members = streams
    scheduler = FairScheduler(config, ["cpu"])
    longest = max(seconds for *_, seconds, _ in members)
    shortest = min(seconds for *_, seconds, _ in members)
    kept = max(waiting for *_, waiting in members)
    passes = (len(members) - 1) * (longest // shortest + 2) + 1
    bound = 2 * config.aging_seconds + kept * passes * longest + longest
    now = 0.0
    waiting: dict[str, QueuedJob] = {}

    def submit(member: int) -> None:
        guild, priority, seconds, _ = members[member]
        queued = job(member, guild=guild, priority=priority, at=now, est=seconds)
        scheduler.submit(queued)
        waiting[queued.job_id] = queued

    for member, (*_, kept_waiting) in enumerate(members):
        for _ in range(kept_waiting):
            submit(member)
    while now < 4 * bound:
        [started] = scheduler.next_batch("cpu", now)
        del waiting[started.job_id]
        now += started.est_seconds
        scheduler.finish(started.job_id)
        submit(started.user_id)
        oldest = min(queued.submitted_at for queued in waiting.values())
        assert now - oldest <= bound, f"a job waited over {bound} s"


def test_device_affinity_and_fifo_per_device() -> None:
    scheduler = FairScheduler(SchedulerConfig(max_batch=4, per_user_in_flight=4))
    pinned = job(1, model="big", device="cuda:1", at=0.0)
    anywhere = job(1, model="small", at=1.0)
    scheduler.submit(pinned)
    scheduler.submit(anywhere)
    assert scheduler.next_batch("cuda:0", 2.0) == [anywhere]
    assert scheduler.next_batch("cuda:0", 2.0) == []
    assert scheduler.next_batch("cuda:1", 2.0) == [pinned]


def test_position_and_eta_follow_the_fair_order() -> None:
    scheduler = FairScheduler(SchedulerConfig(max_batch=1), devices=["cuda:0"])
    running = job(1, est=10.0)
    scheduler.submit(running)
    assert scheduler.next_batch("cuda:0", 0.0) == [running]
    queued = [job(2, est=5.0), job(3, est=7.0), job(2, est=3.0)]
    for item in queued:
        scheduler.submit(item)
    now = 4.0
    assert [scheduler.position(j.job_id, now) for j in queued] == [0, 1, 2]
    assert scheduler.position(running.job_id, now) is None
    # 6 s left on the running job, then 5 + 7 ahead, then its own 3.
    assert scheduler.eta(queued[2].job_id, now) == pytest.approx(now + 6 + 5 + 7 + 3)
    # Held back by the queue (a restored job awaiting a check), it renders nowhere.
    not_rendering = {running.job_id}
    eta = scheduler.eta(queued[2].job_id, now, not_rendering=not_rendering)
    assert eta == pytest.approx(now + 5 + 7 + 3)
    snapshot = scheduler.snapshot(now)
    assert [r.job for r in snapshot.running] == [running]
    assert list(snapshot.queued) == queued


def test_eta_shares_the_work_among_devices() -> None:
    scheduler = FairScheduler(devices=["cuda:0", "cuda:1"])
    jobs = [job(user, est=10.0) for user in range(5)]
    for item in jobs:
        scheduler.submit(item)
    assert scheduler.eta(jobs[4].job_id, 0.0) == pytest.approx(40.0 / 2 + 10.0)


def test_cancel_drops_queued_jobs_only() -> None:
    scheduler = FairScheduler(SchedulerConfig(per_user_in_flight=1, max_batch=1))
    first, second, third = job(1), job(1), job(1)
    for item in (first, second, third):
        scheduler.submit(item)
    assert scheduler.cancel(second.job_id)
    assert scheduler.position(second.job_id, 0.0) is None
    assert not scheduler.cancel(second.job_id)
    assert scheduler.next_batch("cpu", 0.0) == [first]
    assert scheduler.next_batch("cpu", 0.0) == []  # at the cap
    assert not scheduler.cancel(first.job_id)  # running: its dispatcher stops and finishes it
    assert scheduler.next_batch("cpu", 0.0) == []
    scheduler.finish(first.job_id)
    assert scheduler.next_batch("cpu", 0.0) == [third]
    assert not scheduler.cancel("no-such-job")


def test_requeue_puts_a_running_job_back_in_its_place() -> None:
    scheduler = FairScheduler(SchedulerConfig(max_batch=1, per_user_in_flight=1))
    first, second = job(1, at=0.0), job(1, at=1.0)
    scheduler.submit(first)
    scheduler.submit(second)
    assert scheduler.next_batch("cuda:0", 2.0) == [first]
    scheduler.requeue(first.job_id)
    assert scheduler.running_count == 0
    assert scheduler.fair_order(3.0, respect_caps=False) == [first, second]
    assert scheduler.next_batch("cuda:1", 3.0) == [first]
    with pytest.raises(KeyError, match="not running"):
        scheduler.requeue(second.job_id)


@pytest.mark.parametrize("put_back_first", [0, 1])
def test_jobs_put_back_unstarted_keep_their_users_turn(put_back_first: int) -> None:
    """Jobs handed out, then held back before they started (restored ones awaiting a check),
    go back to their places, and their user to the round-robin place they had: no turn was
    used, whichever is put back first. A requeue (a lost render) uses the turn."""
    scheduler = FairScheduler(SchedulerConfig(max_batch=2, per_user_in_flight=2))
    held, other = [job(1, at=0.0), job(1, at=1.0)], job(2, at=2.0, model="other")
    for item in held:
        scheduler.submit(item)
    assert scheduler.next_batch("cpu", 3.0) == held
    scheduler.submit(other)
    for index in (put_back_first, 1 - put_back_first):
        scheduler.put_back_unstarted(held[index].job_id)
    # Neither user started a job: the earlier submit goes first.
    assert scheduler.fair_order(4.0, respect_caps=False) == [held[0], other, held[1]]
    assert scheduler.next_batch("cpu", 4.0) == [held[0], held[1]]
    scheduler.requeue(held[0].job_id)
    scheduler.requeue(held[1].job_id)
    assert scheduler.fair_order(5.0, respect_caps=False) == [other, *held]


def test_a_patrons_job_put_back_unstarted_gives_the_server_its_turn_back() -> None:
    """Server 1's patron takes the server's turn, charged to the share of its member who has
    started least; put back unstarted, both the patron's turn and that member's share are as
    before, so the same order stands (server 2's member does not pass)."""
    scheduler = FairScheduler(SchedulerConfig(max_batch=1))
    run_alone(scheduler, 1, at=0.0)  # server 1's standard member
    for at in (1.0, 2.0):  # the patron has started more
        run_alone(scheduler, 3, at=at, est=20.0)
    scheduler.submit(job(2, guild=2, at=5.0))
    [started] = scheduler.next_batch("cpu", 5.0)  # server 2's member, once
    scheduler.finish(started.job_id)
    queued = [
        job(1, at=10.0),
        job(3, at=10.0, priority=PriorityClass.PRIORITY, est=100.0),
        job(2, guild=2, at=10.0),
    ]
    for item in queued:
        scheduler.submit(item)
    before = scheduler.fair_order(11.0, respect_caps=False)
    assert before[0] == queued[1]  # the patron, on member 1's share
    assert scheduler.next_batch("cpu", 11.0) == [queued[1]]
    scheduler.put_back_unstarted(queued[1].job_id)
    assert scheduler.fair_order(12.0, respect_caps=False) == before


def test_a_later_start_of_the_user_stands_when_a_held_job_is_put_back() -> None:
    scheduler = FairScheduler(SchedulerConfig(max_batch=1, per_user_in_flight=2))
    held, started = job(1, at=0.0), job(1, at=1.0)
    for item in (held, started):
        scheduler.submit(item)
    assert scheduler.next_batch("cpu", 2.0) == [held]
    assert scheduler.next_batch("cpu", 2.0) == [started]  # it renders
    later = job(2, at=3.0)
    scheduler.submit(later)
    scheduler.put_back_unstarted(held.job_id)
    assert scheduler.fair_order(4.0, respect_caps=False) == [later, held]
    with pytest.raises(KeyError, match="not running"):
        scheduler.put_back_unstarted(held.job_id)


def test_a_held_job_put_back_under_a_later_start_takes_only_its_own_work_off() -> None:
    """Member 1's costly job and a cheap one are handed out in turn, and the costly one is
    held back: their place counts the cheap one's work alone (not both, which would put them
    behind member 2's 50 s for 100 s never rendered). The cheap one put back as well, they
    are where they were before both."""
    scheduler = FairScheduler(SchedulerConfig(max_batch=1, per_user_in_flight=2))
    run_alone(scheduler, 2, at=0.0, est=50.0)
    costly, cheap = job(1, at=1.0, model="x", est=100.0), job(1, at=1.5, model="y", est=1.0)
    start_one_then_the_other(scheduler, costly, cheap)
    waiting = job(2, at=3.0, model="z")
    scheduler.submit(waiting)
    scheduler.put_back_unstarted(costly.job_id)
    assert scheduler.fair_order(4.0, respect_caps=False) == [costly, waiting]
    scheduler.put_back_unstarted(cheap.job_id)  # never started a job, as before
    assert scheduler.fair_order(4.0, respect_caps=False) == [costly, waiting, cheap]


def test_could_grow_only_for_partial_batches() -> None:
    scheduler = FairScheduler(SchedulerConfig(max_batch=2))
    a, b = job(1), job(2)
    assert not scheduler.could_grow([])
    assert scheduler.could_grow([a])
    assert not scheduler.could_grow([a, b])


def test_peek_batch_starts_nothing() -> None:
    scheduler = FairScheduler()
    item = job(1)
    scheduler.submit(item)
    assert scheduler.peek_batch("cpu", 0.0) == [item]
    assert scheduler.running_count == 0
    assert scheduler.next_batch("cpu", 0.0) == [item]


def test_bad_input_is_refused_with_the_accepted_range() -> None:
    with pytest.raises(ValueError, match=r"batch_window_s must be within 0\.\.0\.05"):
        SchedulerConfig(batch_window_s=0.2)
    with pytest.raises(ValueError, match="per_user_in_flight must be at least 1"):
        SchedulerConfig(per_user_in_flight=0)
    with pytest.raises(ValueError, match="images must be at least 1"):
        QueuedJob("j", 1, None, ("m",), STANDARD, 0.0, images=0)
    scheduler = FairScheduler()
    item = job(1)
    scheduler.submit(item)
    with pytest.raises(ValueError, match="already queued"):
        scheduler.submit(item)
    with pytest.raises(KeyError, match="not running"):
        scheduler.finish(item.job_id)


def count_queue_walks(scheduler: FairScheduler, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """For each walk over every device (``view.device`` None: the one positions read), how
    many jobs it has placed so far."""
    walks: list[int] = []
    walk = scheduler._walk

    def counting(view: Any, now: float, *, respect_caps: bool) -> Iterator[QueuedJob]:
        if view.device is not None:
            yield from walk(view, now, respect_caps=respect_caps)
            return
        walks.append(0)
        number = len(walks) - 1
        for placed in walk(view, now, respect_caps=respect_caps):
            walks[number] += 1
            yield placed

    monkeypatch.setattr(scheduler, "_walk", counting)
    return walks


def test_lookups_between_changes_walk_the_queue_once(monkeypatch: pytest.MonkeyPatch) -> None:
    scheduler = FairScheduler(SchedulerConfig(aging_seconds=100.0), devices=["cpu"])
    jobs = [job(user % 7, at=100.0 + user) for user in range(30)]  # promoted from 200 on
    waiting = job(99, at=40.0, priority=PriorityClass.RELAX)
    for item in [*jobs, waiting]:
        scheduler.submit(item)
    walks = count_queue_walks(scheduler, monkeypatch)
    for now in (130.0, 135.0, 139.0):  # time passes, but no job is promoted before 140
        for item in jobs:
            scheduler.position(item.job_id, now)
            scheduler.eta(item.job_id, now)
        scheduler.snapshot(now)
    assert len(walks) == 1
    assert scheduler.position(waiting.job_id, 139.0) == 30
    assert scheduler.position(waiting.job_id, 140.0) == 0  # promoted: the order is walked again
    assert len(walks) == 2
    for change in (
        lambda: scheduler.submit(job(5, at=141.0)),
        lambda: scheduler.cancel(jobs[3].job_id),
        lambda: scheduler.next_batch("cpu", 141.0),
    ):
        change()
        scheduler.position(jobs[-1].job_id, 141.0)
        scheduler.eta(jobs[-1].job_id, 141.0)
    assert len(walks) == 5


def test_a_promotion_behind_a_users_first_job_moves_it_up() -> None:
    """Aging events follow only the first job of each of a user's lanes; the kept order must
    still end when a job behind it is promoted."""
    scheduler = FairScheduler(SchedulerConfig(aging_seconds=10.0))
    relax = PriorityClass.RELAX
    first, behind = job(1, at=0.0, priority=relax), job(1, at=1.0, priority=relax)
    others = [job(2, at=5.0), job(2, at=6.0), job(2, at=7.0)]
    for item in [first, behind, *others]:
        scheduler.submit(item)
    assert scheduler.position(behind.job_id, 10.5) == 4  # first is standard now, behind relax
    assert scheduler.position(behind.job_id, 11.5) == 2  # behind is standard too: its turn


def test_a_position_near_the_front_walks_no_further(monkeypatch: pytest.MonkeyPatch) -> None:
    scheduler = FairScheduler()
    jobs = [job(user, at=float(user)) for user in range(40)]
    for item in jobs:
        scheduler.submit(item)
    walks = count_queue_walks(scheduler, monkeypatch)
    assert scheduler.position(jobs[2].job_id, 50.0) == 2
    assert walks == [3]
    assert len(scheduler.snapshot(50.0).queued) == 40
    assert walks == [40]


@st.composite
def scheduler_histories(draw: st.DrawFn) -> tuple[Fairness, list[tuple[str, int, float]]]:
    """The fairness, and operations (name, a number picking what it acts on, seconds passing
    before it)."""
    names = st.sampled_from(["submit", "submit", "submit", "start", "finish", "cancel", "requeue"])
    return draw(st.sampled_from(FAIRNESS_CHOICES)), draw(
        st.lists(
            st.tuples(names, st.integers(0, 1_000), st.sampled_from([0.0, 0.5, 1.0, 2.5, 4.0])),
            min_size=1,
            max_size=60,
        )
    )


@settings(max_examples=80, deadline=None)
@given(scheduler_histories())
def test_positions_and_etas_equal_a_fresh_walk_after_any_history(
    fairness_and_history: tuple[Fairness, list[tuple[str, int, float]]],
) -> None:
    """The answers read from the kept order equal the old computation, which walked the whole
    fair order on every call; a short aging period makes promotions happen between calls."""
    fairness, history = fairness_and_history
    config = SchedulerConfig(aging_seconds=3.0, max_batch=2, fairness=fairness)
    scheduler = FairScheduler(config, ["cpu", "gpu"])
    queued: list[QueuedJob] = []
    running: list[QueuedJob] = []
    now = 0.0
    for name, pick, elapsed in history:
        now += elapsed
        if name == "submit":
            item = job(
                pick % 5,
                at=now,
                priority=PriorityClass(pick % 3),
                guild=[1, 2, None][pick // 3 % 3],
                device=[None, None, "cpu", "gpu"][pick % 4],
                est=float(1 + pick % 9),
            )
            scheduler.submit(item)
            queued.append(item)
        elif name == "start":
            started = scheduler.next_batch(["cpu", "gpu"][pick % 2], now)
            queued = [item for item in queued if item not in started]
            running += started
        elif name == "cancel" and queued:
            assert scheduler.cancel(queued.pop(pick % len(queued)).job_id)
        elif name in ("finish", "requeue") and running:
            ended = running.pop(pick % len(running))
            if name == "finish":
                scheduler.finish(ended.job_id)
            else:
                scheduler.requeue(ended.job_id)
                queued.append(ended)
        answers = [
            (scheduler.position(item.job_id, now), scheduler.eta(item.job_id, now))
            for item in queued
        ]
        snapshot = scheduler.snapshot(now)
        # The old algorithm, as the oracle: walk the fair order afresh for each answer.
        order = scheduler.fair_order(now, respect_caps=False)
        assert list(snapshot.queued) == order
        running_left = sum(
            max(0.0, r.job.est_seconds - (now - r.started_at)) for r in snapshot.running
        )
        expected = []
        for item in queued:
            index = order.index(item)
            ahead = running_left + sum(other.est_seconds for other in order[:index])
            expected.append((index, now + ahead / 2 + item.est_seconds))
        assert [position for position, _ in answers] == [index for index, _ in expected]
        assert [eta for _, eta in answers] == pytest.approx([eta for _, eta in expected])


def test_a_deep_queue_is_walked_only_as_far_as_positions_are_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Behind ``positions_counted`` jobs a position reads that many (at least) and the ETA
    sums only those: a submit into a deep queue walks no further, and finding when the kept
    order ends reads no waiting job (the promotions are kept in time order)."""
    counted = 50
    scheduler = FairScheduler(SchedulerConfig(positions_counted=counted), devices=["cpu"])
    jobs = [job(user % 400, at=float(index), est=2.0) for index, user in enumerate(range(2000))]
    for item in jobs:
        scheduler.submit(item)
    walks = count_queue_walks(scheduler, monkeypatch)
    read = Counter[str]()
    effective_class = scheduler._effective_class

    def counting(queued: QueuedJob, now: float) -> int:
        read[queued.job_id] += 1
        return effective_class(queued, now)

    monkeypatch.setattr(scheduler, "_effective_class", counting)
    last = jobs[-1]
    assert scheduler.position(last.job_id, 3000.0) == counted
    assert scheduler.eta(last.job_id, 3000.0) == pytest.approx(3000.0 + counted * 2.0 + 2.0)
    assert walks == [counted]
    assert scheduler.position(jobs[7].job_id, 3000.0) == 7  # near the front: exact
    scheduler.submit(job(1, at=3001.0))
    read.clear()
    assert scheduler.position(last.job_id, 3001.0) == counted
    assert walks == [counted, counted]
    assert len(read) < 4 * counted, "the whole queue was read to find when its order ends"
    assert scheduler.cancel(jobs[0].job_id)
    assert len(scheduler.snapshot(3001.0, limit=10).queued) == 10
    assert walks == [counted, counted, 10]


def test_a_servers_priority_member_keeps_the_walks_short(monkeypatch: pytest.MonkeyPatch) -> None:
    """5,000 members wait in one server whose patron (a priority role) has started much: a
    submit's position and ETA, and the next batch, read a number of users bounded by what
    they place, not the whole queue (each member ahead of the patron in rule 2 was read and
    set aside on every walk before)."""
    scheduler = FairScheduler(SchedulerConfig(max_batch=4, per_user_in_flight=100), ["gpu"])
    urgent = PriorityClass.PRIORITY
    for _ in range(50):
        scheduler.submit(job(1, priority=urgent))
    for _ in range(12):
        for started in scheduler.next_batch("gpu", 0.0):
            scheduler.finish(started.job_id)
    for member in range(5000):
        scheduler.submit(job(1000 + member))
    for _ in range(5):
        scheduler.submit(job(1, priority=urgent))
    heads_read = 0
    head = scheduler._head

    def counting(*args: Any) -> Any:
        nonlocal heads_read
        heads_read += 1
        return head(*args)

    monkeypatch.setattr(scheduler, "_head", counting)
    newcomer = job(99_999)
    scheduler.submit(newcomer)
    counted = scheduler.config.positions_counted
    assert scheduler.position(newcomer.job_id, 0.0) == counted  # behind the 5,000
    assert scheduler.eta(newcomer.job_id, 0.0) is not None
    assert heads_read < 4 * counted
    heads_read = 0
    assert len(scheduler.peek_batch("gpu", 0.0)) == 4  # of 2 * max_batch placed
    assert heads_read < 4 * 2 * 4


@settings(max_examples=60, deadline=None)
@given(scheduler_histories())
def test_capped_positions_and_etas_are_the_fresh_walks_up_to_the_cap(
    fairness_and_history: tuple[Fairness, list[tuple[str, int, float]]],
) -> None:
    """With ``positions_counted`` small, every answer is the fresh walk's, capped there."""
    fairness, history = fairness_and_history
    counted = 3
    config = SchedulerConfig(
        aging_seconds=3.0, max_batch=2, positions_counted=counted, fairness=fairness
    )
    scheduler = FairScheduler(config, ["cpu", "gpu"])
    # The oracle is a twin given the same calls: asking the scheduler under test for its fair
    # order would walk it afresh and hide a stale cached order from position() and eta().
    twin = FairScheduler(config, ["cpu", "gpu"])
    queued: list[QueuedJob] = []
    now = 0.0
    for name, pick, elapsed in history:
        now += elapsed
        if name == "submit":
            item = job(
                pick % 5,
                at=now,
                priority=PriorityClass(pick % 3),
                guild=[1, 2, None][pick // 3 % 3],
                est=float(1 + pick % 9),
            )
            scheduler.submit(item)
            twin.submit(item)
            queued.append(item)
        elif name == "start":
            device = ["cpu", "gpu"][pick % 2]
            started = scheduler.next_batch(device, now)
            assert twin.next_batch(device, now) == started
            queued = [item for item in queued if item not in started]
            for item in started:
                scheduler.finish(item.job_id)
                twin.finish(item.job_id)
        elif name == "cancel" and queued:
            cancelled = queued.pop(pick % len(queued)).job_id
            assert scheduler.cancel(cancelled)
            assert twin.cancel(cancelled)
        order = twin.fair_order(now, respect_caps=False)
        assert list(scheduler.snapshot(now, limit=counted).queued) == order[:counted]
        for item in queued:
            place = min(order.index(item), counted)
            ahead = sum(other.est_seconds for other in order[:place])
            assert scheduler.position(item.job_id, now) == place
            assert scheduler.eta(item.job_id, now) == pytest.approx(
                now + ahead / 2 + item.est_seconds
            )


def test_a_later_job_promoted_again_moves_in_positions_and_etas_asked_alone() -> None:
    """Aging events follow only the first job of a lane, so the cached order must also expire
    at the second promotion of a job further back: here the second RELAX job of member 1 turns
    PRIORITY at 25 and passes member 2's priority jobs, which have waited less, with only
    position and eta asked."""
    scheduler = FairScheduler(SchedulerConfig(aging_seconds=10.0), devices=["cpu"])
    first = job(1, at=0.0, priority=PriorityClass.RELAX)  # STANDARD at 10, PRIORITY at 20
    second = job(1, at=5.0, priority=PriorityClass.RELAX)  # STANDARD at 15, PRIORITY at 25
    other_first = job(2, at=17.0, priority=PriorityClass.PRIORITY)
    other_second = job(2, at=17.0, priority=PriorityClass.PRIORITY)
    jobs = [first, second, other_first, other_second]
    for item in jobs:
        scheduler.submit(item)
    expected = {
        18.0: [2, 3, 0, 1],
        22.0: [0, 3, 1, 2],  # the first job's last promotion
        26.0: [0, 1, 2, 3],  # the second job's last promotion: it now passes member 2's
    }
    for now, places in expected.items():
        assert [scheduler.position(item.job_id, now) for item in jobs] == places, now
        etas = [scheduler.eta(item.job_id, now) for item in jobs]
        assert etas == [pytest.approx(now + 10.0 * place + 10.0) for place in places], now


def test_a_patrons_job_in_an_operators_server_stops_being_fresh_on_time() -> None:
    """In an operator's priority server a patron's job ranks PRIORITY at once, so no promotion
    falls when it stops being fresh: an aging event of its own must reorder the server then."""
    config = SchedulerConfig(max_batch=1, aging_seconds=10.0, priority_across_guilds=frozenset({1}))
    scheduler = FairScheduler(config)
    run_alone(scheduler, 1, at=0.0, est=30.0)
    aged = job(1, at=0.0)  # PRIORITY at 10
    patron = job(2, at=1.0, priority=PriorityClass.PRIORITY)  # fresh until 11
    for queued in (aged, patron):
        scheduler.submit(queued)
    assert scheduler.fair_order(5.0) == [patron, aged]
    assert scheduler.fair_order(10.5) == [aged, patron]  # the patron's job is still fresh
    assert scheduler.fair_order(12.0) == [patron, aged]  # both waited: rule 2 (patron less)


def test_kept_positions_expire_when_a_new_patrons_job_stops_being_fresh() -> None:
    """The kept order (positions and ETAs asked alone) must also expire when a new patron's
    job stops being fresh in an operator's priority server, where no promotion of its rank
    falls then."""
    config = SchedulerConfig(max_batch=1, aging_seconds=10.0, priority_across_guilds=frozenset({1}))
    scheduler = FairScheduler(config, devices=["cpu"])
    run_alone(scheduler, 1, at=0.0, est=30.0)
    aged = job(1, at=0.0)  # PRIORITY at 10
    patron = job(2, at=1.0, priority=PriorityClass.PRIORITY)  # fresh until 11
    jobs = [aged, patron]
    for queued in jobs:
        scheduler.submit(queued)
    for now, places in {10.5: [0, 1], 11.5: [1, 0]}.items():
        assert [scheduler.position(queued.job_id, now) for queued in jobs] == places, now
        etas = [scheduler.eta(queued.job_id, now) for queued in jobs]
        assert etas == [pytest.approx(now + 10.0 * place + 10.0) for place in places], now


def run_alone(scheduler: FairScheduler, user: int, at: float, est: float = 10.0) -> None:
    """``user`` submits one job at ``at`` (estimated ``est`` s), which starts and finishes at
    once."""
    scheduler.submit(job(user, at=at, est=est))
    [started] = scheduler.next_batch("cpu", at)
    scheduler.finish(started.job_id)


def start_one_then_the_other(scheduler: FairScheduler, first: QueuedJob, second: QueuedJob) -> None:
    """One member's ``first`` and ``second`` (of different models) submitted, then started
    in turn at 2 s, each a batch of its own."""
    for item in (first, second):
        scheduler.submit(item)
    assert scheduler.next_batch("cpu", 2.0) == [first]
    assert scheduler.next_batch("cpu", 2.0) == [second]


def assert_memory_bounded(scheduler: FairScheduler) -> None:
    """Every index holds a bounded number of entries per member known and job queued."""
    users, queued = len(scheduler._users), len(scheduler._tickets)
    assert len(scheduler._promotions) <= 4 * queued + 66, "stale promotions pile up"
    assert len(scheduler._starts) <= 4 * users + 65, "stale starts pile up"
    for view in scheduler._views.values():
        assert len(view.heap) <= 4 * users + 65, "stale index entries pile up"
        for guild in view.guilds.values():
            assert len(guild.heap) <= 4 * users + 65, "stale index entries pile up"
            shares = 0 if guild.shares is None else len(guild.shares)
            assert shares <= 4 * users + 65, "stale share entries pile up"


def test_idle_users_are_forgotten_yet_nobody_passes_a_user_by_idling() -> None:
    """Members who ran jobs and then went idle for an hour are forgotten, least recently
    started first, but only while no one who started before them is still known: one who
    started earlier and waits still goes first when the later one comes back."""
    config = SchedulerConfig(aging_seconds=1e9)  # round robin alone decides
    scheduler = FairScheduler(config, devices=["cpu"])
    for user in range(1000):
        run_alone(scheduler, user, at=float(user))
    cancelled = job(5000, at=1000.0)  # never started: no trace once cancelled
    scheduler.submit(cancelled)
    assert scheduler.cancel(cancelled.job_id)
    assert 5000 not in scheduler._users
    later = 1000.0 + IDLE_USER_FORGOTTEN_S
    run_alone(scheduler, 2000, at=later)  # its submit forgets users idle since 999 and before
    assert set(scheduler._users) == {2000}
    assert_memory_bounded(scheduler)

    # Churn behind a member whose job keeps running (so nobody can be forgotten): the stale
    # entries of every start and promotion are still dropped.
    scheduler = FairScheduler(config, devices=["cpu"])
    busy = job(0, at=0.0, guild=7)
    scheduler.submit(busy)
    assert scheduler.next_batch("cpu", 0.0) == [busy]
    for turn in range(300):
        run_alone(scheduler, 1 + turn % 5, at=1.0 + turn)
    assert_memory_bounded(scheduler)
    scheduler.finish(busy.job_id)
    assert not scheduler._guild_running, "a guild with nothing running is still counted"

    # 1 started first and waits; 2, who started after 1, idles an hour then comes back.
    scheduler = FairScheduler(config, devices=["cpu"])
    run_alone(scheduler, 1, at=0.0)
    run_alone(scheduler, 2, at=1.0)
    waiting = job(1, at=3.0)
    scheduler.submit(waiting)
    back = job(2, at=5.0 + IDLE_USER_FORGOTTEN_S)
    scheduler.submit(back)
    assert scheduler.fair_order(back.submitted_at) == [waiting, back]


def test_a_member_back_after_an_idle_hour_still_goes_after_newcomers() -> None:
    """A member forgotten after an idle hour, back with ``started_before`` (the journal's
    word), comes back behind members who never started a job, even ones who ask after them:
    the order of a scheduler that never forgot them. It kept nothing of them: without that
    word, they come back as a newcomer."""
    orders: dict[bool, list[int]] = {}  # the users in fair order
    for started_before in (True, False):
        scheduler = FairScheduler(SchedulerConfig(), devices=["cpu"])
        run_alone(scheduler, 1, at=0.0)
        busy = job(3, at=0.0)
        scheduler.submit(busy)
        assert scheduler.next_batch("cpu", 0.0) == [busy]
        back = job(1, at=4000.0)
        scheduler.submit(back, started_before=started_before)
        newcomer = job(2, at=4001.0)
        scheduler.submit(newcomer)
        orders[started_before] = [item.user_id for item in scheduler.fair_order(4002.0)]
        if started_before:
            scheduler.finish(busy.job_id)
            assert scheduler.next_batch("cpu", 4003.0) == [newcomer, back]  # one batch, so
    assert orders == {True: [2, 1], False: [1, 2]}


def test_members_back_from_an_idle_hour_go_by_submit_time() -> None:
    """Several members back from an idle hour go in the order their jobs were submitted:
    who of them started a job least recently is forgotten with them."""
    scheduler = FairScheduler(SchedulerConfig(), devices=["cpu"])
    for user, at in ((1, 0.0), (3, 1.0), (4, 2.0)):
        run_alone(scheduler, user, at=at)
    first_back = job(3, at=5000.0)
    # Forgets 1 and 3 (4 is idle since this call only); back, the journal says they started.
    scheduler.submit(first_back, started_before=True)
    second_back = job(1, at=5001.0)  # 1 started before 3, yet asks later
    scheduler.submit(second_back, started_before=True)
    assert scheduler.fair_order(5002.0) == [first_back, second_back]
    start_numbers = {user: scheduler._users[user].turn.start for user in (1, 3, 4)}
    assert start_numbers[1] == start_numbers[3] < start_numbers[4], "not both forgotten"


def test_idleness_counts_from_the_first_call_after_the_last_job_ends() -> None:
    """``finish`` and ``cancel`` take no time: a member whose render ended long after it
    started is idle from the next call that tells the time, not from the render's start."""
    scheduler = FairScheduler(SchedulerConfig(), devices=["cpu"])
    started = job(1, at=0.0)
    scheduler.submit(started)
    assert scheduler.next_batch("cpu", 0.0) == [started]
    scheduler.finish(started.job_id)  # at 3000, say
    assert scheduler.peek_batch("cpu", 3000.0) == []  # the dispatcher looks for more work
    start_number = scheduler._users[1].turn.start
    scheduler.submit(job(1, at=3000.0 + IDLE_USER_FORGOTTEN_S - 1))
    assert scheduler._users[1].turn.start == start_number, "forgotten after under an hour idle"


def test_members_idle_past_the_hour_leave_nothing_behind() -> None:
    """After 20,000 members each ran a job and idled past the hour, every structure of the
    scheduler holds entries for the members still active only (a set of the ids of those
    forgotten, say, would hold them all)."""
    members = 20_000
    scheduler = FairScheduler(SchedulerConfig(), devices=["cpu"])
    for user in range(members):
        run_alone(scheduler, user, at=user * 0.01)
    assert scheduler.peek_batch("cpu", members * 0.01) == []  # the last one idle from now
    busy = job(members, at=members * 0.01 + IDLE_USER_FORGOTTEN_S)
    scheduler.submit(busy)  # forgets every member idle an hour: all the others
    assert scheduler.next_batch("cpu", busy.submitted_at) == [busy]
    assert set(scheduler._users) == {members}
    assert_memory_bounded(scheduler)
    sizes = {
        name: len(value)
        for name, value in vars(scheduler).items()
        if isinstance(value, (dict, list, set, deque))
    }
    assert max(sizes.values()) <= 4 * len(scheduler._users) + 65, sizes


def test_a_member_back_and_put_back_unstarted_stays_behind_newcomers() -> None:
    """A returner's job handed out and put back before it started (no turn used): they stand
    where they came back, behind a newcomer, though they left the scheduler meanwhile."""
    scheduler = FairScheduler(SchedulerConfig(), devices=["cpu"])
    run_alone(scheduler, 1, at=0.0)
    assert scheduler.peek_batch("cpu", 0.0) == []  # idle from now
    back = job(1, at=4000.0)
    scheduler.submit(back, started_before=True)
    assert scheduler.started_before(1)
    assert scheduler.next_batch("cpu", 4000.0) == [back]
    newcomer = job(2, at=4001.0)
    scheduler.submit(newcomer)
    assert not scheduler.started_before(2)
    scheduler.put_back_unstarted(back.job_id)
    assert scheduler.started_before(1)
    assert scheduler.fair_order(4002.0) == [newcomer, back]
    assert scheduler.cancel(back.job_id)
    assert not scheduler.started_before(1), "a member with nothing queued is no longer held"


def test_a_members_submits_behind_their_queued_job_leave_no_stale_index_entry() -> None:
    """A submit behind a lane's head changes none of its user's index entries, so it pushes
    none (each would be a stale entry every later walk skips), and the order stays exact."""
    scheduler = FairScheduler(devices=["cpu", "gpu"])
    busy = [job(1, at=float(index)) for index in range(50)]
    other = job(2, at=50.0)
    for item in [*busy, other]:
        scheduler.submit(item)
    assert [
        sum(len(guild.heap) for guild in view.guilds.values()) for view in scheduler._views.values()
    ] == [2, 2, 2]
    assert scheduler.position(other.job_id, 60.0) == 1
    assert scheduler.position(busy[49].job_id, 60.0) == 50
    assert scheduler.fair_order(60.0, respect_caps=False) == [busy[0], other, *busy[1:]]


@pytest.mark.parametrize("heavy_pictures", [4, 16])
def test_turns_are_shared_by_work_not_by_job(heavy_pictures: int) -> None:
    """A member sending /compare-sized jobs (16 pictures) or hires grids (4) and one sending
    single pictures share the device about evenly while both wait: each start moves its
    member back by the job's estimated seconds, not by one turn (by job, the heavy member had
    94% and 80% of it)."""
    scheduler = FairScheduler(SchedulerConfig(max_batch=4), devices=["gpu"])
    # Each member asks for the same pictures in all, 1 s each; every job its own batch key
    # (no batching, one job per start).
    for index in range(10 * heavy_pictures):
        if index < 10:
            heavy = job(1, at=index * 1e-3, model=f"a{index}", est=float(heavy_pictures))
            scheduler.submit(heavy)
        scheduler.submit(job(2, at=index * 1e-3 + 5e-4, model=f"b{index}", est=1.0))
    rendered = Counter[int]()  # seconds of each member's renders, while both wait
    now = 0.0
    while scheduler.queued_count:
        batch = scheduler.next_batch("gpu", now)
        users_waiting = {queued.user_id for queued in scheduler.fair_order(now)} | {
            started.user_id for started in batch
        }
        for started in batch:
            if users_waiting == {1, 2}:
                rendered[started.user_id] += started.est_seconds
            now += started.est_seconds
            scheduler.finish(started.job_id)
    light_share = rendered[2] / (rendered[1] + rendered[2])
    assert light_share >= 0.4, f"the single-picture member had {light_share:.0%} of the device"


def test_time_spent_idle_is_not_saved_up_as_turns() -> None:
    """Rule 2 counts work from the queue's level: a member back after others worked alone
    goes first once, as in round robin, then takes turns; the work they did not ask for
    meanwhile is not a credit of many turns in a row."""
    scheduler = FairScheduler(SchedulerConfig(max_batch=1), devices=["cpu"])
    run_alone(scheduler, 2, at=0.0)
    for index in range(20):  # member 1 alone: 2 is known, idle
        run_alone(scheduler, 1, at=1.0 + index)
    for index in range(4):
        scheduler.submit(job(1, at=30.0 + index))
        scheduler.submit(job(2, at=30.5 + index))
    assert [started.user_id for started in drain_one_at_a_time(scheduler, 40.0)] == [2, 1] * 4


@pytest.mark.parametrize("fairness", FAIRNESS_CHOICES)
def test_a_finish_with_measured_seconds_moves_the_tally_by_them(fairness: Fairness) -> None:
    """Both members' jobs are estimated alike (1 s), but member 1's measure 8 s each (an
    estimate blind to some work): finished with their measured seconds, member 2 starts about
    8 jobs for each of member 1's, where the estimates alone would alternate them. Member 2
    in another server, servers taking turns are moved alike."""
    scheduler = FairScheduler(SchedulerConfig(max_batch=1, fairness=fairness))
    for _ in range(12):
        scheduler.submit(job(1, est=1.0))
        scheduler.submit(job(2, guild=2, est=1.0))
    order = []
    while batch := scheduler.next_batch("cpu", 0.0):
        (started,) = batch
        order.append(started.user_id)
        scheduler.finish(started.job_id, used_s=8.0 if started.user_id == 1 else 1.0)
    assert order[:11] == [1, *[2] * 8, 1, 2]


@pytest.mark.parametrize(("measured", "order"), [(1.0, [1, 2, 3]), (10.0, [2, 1, 3])])
def test_a_job_put_back_after_another_was_measured_keeps_that_measure(
    measured: float, order: list[int]
) -> None:
    """Member 1's two jobs (1 s each, estimated) run at once; the first ends ``measured``,
    then the second is put back unstarted: member 1's place counts the first's measured work
    (10 s: behind member 2's 5 s, still before member 3's 12 s)."""
    scheduler = FairScheduler(SchedulerConfig(max_batch=1, per_user_in_flight=2))
    run_alone(scheduler, 2, at=0.0, est=5.0)
    run_alone(scheduler, 3, at=0.0, est=12.0)
    first, second = job(1, at=1.0, model="x", est=1.0), job(1, at=1.5, model="y", est=1.0)
    start_one_then_the_other(scheduler, first, second)
    for user in (2, 3):
        scheduler.submit(job(user, at=3.0))
    scheduler.finish(first.job_id, used_s=measured)
    scheduler.put_back_unstarted(second.job_id)
    assert [queued.user_id for queued in scheduler.fair_order(4.0, respect_caps=False)] == order


@pytest.mark.parametrize("fairness", FAIRNESS_CHOICES)
@pytest.mark.parametrize(
    ("second_put_back", "order"), [(False, [2, 2, *[1, 2] * 3]), (True, [2, *[1, 2] * 3, 1])]
)
def test_a_long_job_is_paid_once_when_its_member_started_again_from_the_level(
    fairness: Fairness, second_put_back: bool, order: list[int]
) -> None:
    """Three devices. Member 1's first job (estimated 1 s) runs 100 s on device a while
    member 2's 1 s jobs run on b; after 50 of them member 1's second starts on c, counted
    from the level, which had counted the time the first was running. Measured, the first
    moves member 1 by the 51 s the level had not counted: 101 s used against member 2's 99,
    they take turns again, where charging all 99 s put member 2's next 50 jobs first. The
    second put back unstarted instead, member 1 is back at the first's 100 s. Member 2 in
    another server, servers taking turns are moved alike."""
    scheduler = FairScheduler(SchedulerConfig(max_batch=1, per_user_in_flight=2, fairness=fairness))
    first, second = job(1, est=1.0), job(1, at=1.0, est=1.0)
    scheduler.submit(first)
    assert scheduler.next_batch("a", 0.0) == [first]
    for _ in range(120):
        scheduler.submit(job(2, guild=2, est=1.0))

    def started_on_b(jobs: int) -> list[int]:
        """Who starts each of ``jobs`` jobs run one by one on device b, measured as estimated."""
        started_by = []
        for _ in range(jobs):
            (started,) = scheduler.next_batch("b", 0.0)
            started_by.append(started.user_id)
            scheduler.finish(started.job_id, used_s=1.0)
        return started_by

    assert started_on_b(50) == [2] * 50
    scheduler.submit(second)
    assert scheduler.next_batch("c", 0.0) == [second]
    assert started_on_b(49) == [2] * 49
    scheduler.finish(first.job_id, used_s=100.0)
    if second_put_back:
        scheduler.put_back_unstarted(second.job_id)
    else:
        scheduler.finish(second.job_id, used_s=1.0)
    for _ in range(5):
        scheduler.submit(job(1, at=2.0, est=1.0))
    assert started_on_b(8) == order
