"""Servers take turns (``SchedulerConfig.fairness`` ``servers``, EASEL_FAIRNESS): a server with
many busy members gets the device time a server with one gets, its members sharing its turns by
the usual rules; rank (the operator's priority servers, aging up to STANDARD) still goes first.
``members``, the default, keeps the order of before (``bot.jobs.scheduler``, rule 1)."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from pathlib import Path

import aiosqlite
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.jobs.queue import JobQueue, Submission
from bot.jobs.queue import job_queue as queue_module
from bot.jobs.scheduler import (
    FAIRNESS_CHOICES,
    Fairness,
    FairScheduler,
    PriorityClass,
    QueuedJob,
    SchedulerConfig,
)
from inference.types import RenderRequest
from inference.worker import DeviceWorker
from tests.support.engines import HeldEngine, InstantEngine
from tests.support.polling import until
from tests.support.sinks import RecordingSink
from tests.support.slots import BrokerAwayAtFirst

_ids = itertools.count()


def job(
    user: int,
    guild: int | None,
    *,
    at: float = 0.0,
    priority: PriorityClass = PriorityClass.STANDARD,
    est: float = 10.0,
) -> QueuedJob:
    return QueuedJob(f"u{user}-{next(_ids)}", user, guild, ("sd15",), priority, at, est_seconds=est)


def scheduler(fairness: Fairness, **config: object) -> FairScheduler:
    return FairScheduler(SchedulerConfig(max_batch=1, fairness=fairness, **config), ["cpu"])  # type: ignore[arg-type]


def busy_server_against_one_member(fairness: Fairness, starts: int) -> list[QueuedJob]:
    """Server 1's ten members and server 2's one keep three jobs waiting each, one device
    renders them one at a time: the jobs in the order they start."""
    queue = scheduler(fairness)
    for member in [*range(10), 100]:
        for _ in range(3):
            queue.submit(job(member, 2 if member == 100 else 1))
    started = []
    now = 1.0
    for _ in range(starts):
        [first] = queue.next_batch("cpu", now)
        started.append(first)
        queue.finish(first.job_id)
        queue.submit(job(first.user_id, first.guild_id, at=now))
        now += 1.0
    return started


def test_servers_take_turns_whatever_their_number_of_members() -> None:
    started = busy_server_against_one_member("servers", 40)
    assert [queued.guild_id for queued in started] == [1, 2] * 20
    # Within server 1 its members still take turns: each of the ten starts twice.
    assert Counter(queued.user_id for queued in started if queued.guild_id == 1) == dict.fromkeys(
        range(10), 2
    )


def test_members_fairness_is_the_default_and_unchanged() -> None:
    """The measurement that asked for the setting: a member each, so server 2 gets 1 in 11."""
    assert SchedulerConfig().fairness == "members"
    started = busy_server_against_one_member("members", 40)
    assert Counter(queued.guild_id for queued in started) == {1: 37, 2: 3}


def test_servers_share_device_time_not_starts() -> None:
    """Server 1's two members ask for 16-picture jobs (160 s), server 2's one for single
    pictures (10 s): server 2 starts 16 jobs for each of server 1's (with members' fairness,
    for each of its members')."""
    queue = scheduler("servers")
    queue.submit(job(1, 1, est=160.0))
    queue.submit(job(11, 1, est=160.0))
    for _ in range(40):
        queue.submit(job(2, 2, est=10.0))
    guilds: list[int | None] = []
    now = 1.0
    while len(guilds) < 34:
        [first] = queue.next_batch("cpu", now)
        guilds.append(first.guild_id)
        queue.finish(first.job_id)
        now += first.est_seconds
    assert guilds == [1, *[2] * 16, 1, *[2] * 16]


def test_a_server_back_from_idle_has_saved_up_no_turns() -> None:
    """Server 2 idles while server 1 renders alone; back with two members, it goes first once,
    then they take turns: its idle time bought no run of turns."""
    queue = scheduler("servers")
    now = 0.0
    for _ in range(3):
        queue.submit(job(1, 1, at=now))
    for _ in range(20):  # server 1 alone, its member keeping three waiting
        [first] = queue.next_batch("cpu", now)
        queue.finish(first.job_id)
        queue.submit(job(1, 1, at=now))
        now += 1.0
    for member in (2, 22):
        for _ in range(3):
            queue.submit(job(member, 2, at=now))
    guilds = []
    for _ in range(6):
        [first] = queue.next_batch("cpu", now)
        guilds.append(first.guild_id)
        queue.finish(first.job_id)
        queue.submit(job(first.user_id, first.guild_id, at=now))
        now += 1.0
    assert guilds == [2, 1, 2, 1, 2, 1]


def test_the_operators_priority_server_still_goes_first_and_its_role_orders_its_own() -> None:
    """Rank goes before turns: the priority role's jobs of an operator's priority server pass
    every other server's; a priority role elsewhere orders only its own server's turns."""
    queue = scheduler("servers", priority_across_guilds=frozenset({10}))
    urgent = PriorityClass.PRIORITY
    listed = [job(1, 10, at=float(index), priority=urgent) for index in range(3)]
    elsewhere = job(2, 20, at=0.0)
    priority_elsewhere = job(3, 20, at=1.0, priority=urgent)
    third = job(4, 30, at=0.0)
    for queued in (*listed, elsewhere, priority_elsewhere, third):
        queue.submit(queued)
    assert queue.fair_order(5.0, respect_caps=False) == [
        *listed,
        priority_elsewhere,
        third,
        elsewhere,
    ]


def test_an_aged_relax_job_takes_its_servers_turn_once_it_ranks_standard() -> None:
    """Server 3's --relax job ranks STANDARD once it has waited ``aging_seconds``: then it
    takes its server's turn, though servers 1 and 2 keep standard jobs waiting."""
    queue = scheduler("servers", aging_seconds=20.0)
    relax = job(3, 3, at=0.0, priority=PriorityClass.RELAX)
    queue.submit(relax)
    for member, guild in ((1, 1), (2, 2)):
        queue.submit(job(member, guild))
    now = 0.0
    started = []
    while relax not in started:
        [first] = queue.next_batch("cpu", now)
        started.append(first)
        queue.finish(first.job_id)
        if first is not relax:
            queue.submit(job(first.user_id, first.guild_id, at=now))
        now += 10.0
    assert len(started) == 3  # at 20 s, the third start, not never


def test_a_deep_aged_backlog_takes_no_more_than_its_servers_turns() -> None:
    """Aging lifts no job past STANDARD between servers: server 1's ten members keep six jobs
    waiting each, so its jobs wait ten times ``aging_seconds``, and server 2's one member
    still starts every other job (ranked PRIORITY, server 1's aged backlog would take every
    turn until server 2's own jobs aged)."""
    queue = scheduler("servers", aging_seconds=60.0)
    for member in [*range(10), 100]:
        for _ in range(6 if member < 100 else 3):
            queue.submit(job(member, 2 if member == 100 else 1))
    now = 0.0
    waited: list[tuple[int | None, float]] = []  # each start's server, and how long its job
    for _ in range(300):
        [first] = queue.next_batch("cpu", now)
        waited.append((first.guild_id, now - first.submitted_at))
        queue.finish(first.job_id)
        now += 10.0
        queue.submit(job(first.user_id, first.guild_id, at=now))
    last = waited[-100:]
    assert min(wait for guild, wait in last if guild == 1) > 10 * queue.config.aging_seconds
    assert Counter(guild for guild, _ in last) == {1: 50, 2: 50}


def test_aging_still_orders_the_jobs_within_a_server() -> None:
    """Within its server an aged job goes before the job of a member who never started."""
    queue = scheduler("servers", aging_seconds=60.0)
    queue.submit(job(1, 1, at=0.0))
    [first] = queue.next_batch("cpu", 0.0)
    queue.finish(first.job_id)
    waiting = job(1, 1, at=1.0)
    newcomer = job(2, 1, at=50.0)
    queue.submit(waiting)
    queue.submit(newcomer)
    assert queue.fair_order(55.0) == [newcomer, waiting]  # rule 2: who never started first
    assert queue.fair_order(61.0) == [waiting, newcomer]  # aged: PRIORITY in its server


def test_with_priority_servers_an_aged_job_still_passes_their_priority_roles() -> None:
    """With priority servers listed, aging still lifts a job past every server once it has
    waited ``aging_seconds`` (``SchedulerConfig.fairness``): an endless stream of the priority
    server's priority role holds server 2's job back no longer than that."""
    queue = scheduler("servers", aging_seconds=60.0, priority_across_guilds=frozenset({10}))
    urgent = PriorityClass.PRIORITY
    held = job(2, 2, at=0.0)
    queue.submit(held)
    for member in range(3):
        queue.submit(job(member + 10, 10, at=0.0, priority=urgent))
    now = 0.0
    started = []
    for _ in range(20):
        [first] = queue.next_batch("cpu", now)
        started.append(first)
        queue.finish(first.job_id)
        now += 10.0
        queue.submit(job(first.user_id, first.guild_id, at=now, priority=first.priority))
    assert started.index(held) == 6  # at 60 s, once aged, not never


def test_after_a_restart_every_server_starts_once_before_any_starts_twice() -> None:
    """A restart keeps no tallies: every member is a returner (the journal's word), and every
    server starts once before any starts again, however many members it has and however long
    they have waited; then servers take turns as before."""
    queue = scheduler("servers")
    for member in range(10):  # server 1's members asked first
        queue.submit(job(member, 1, at=float(member)), started_before=True)
    queue.submit(job(100, 2, at=50.0), started_before=True)
    queue.submit(job(200, 3, at=60.0), started_before=True)
    order = [queued.guild_id for queued in queue.fair_order(100.0)]
    assert set(order[:3]) == {1, 2, 3}


def test_a_job_put_back_unstarted_gives_its_server_its_turn_back() -> None:
    """A job handed out and held back before its render (``put_back_unstarted``) used no turn:
    its server is next again, as it was."""
    queue = scheduler("servers")
    first_of_1 = job(1, 1, at=0.0)
    second_of_1 = job(2, 1, at=0.5)
    of_2 = job(3, 2, at=1.0)
    for queued in (first_of_1, second_of_1, of_2):
        queue.submit(queued)
    assert queue.next_batch("cpu", 2.0) == [first_of_1]
    assert queue.fair_order(2.0) == [of_2, second_of_1]
    queue.put_back_unstarted(first_of_1.job_id)
    assert queue.fair_order(2.0) == [first_of_1, of_2, second_of_1]


def test_a_held_job_put_back_under_a_later_start_of_its_server_takes_only_its_own_work_off() -> (
    None
):
    """Server 1 starts two jobs, the first is held back: the server keeps the second's turn,
    not the first's, so server 2 goes next and then server 1 again."""
    queue = scheduler("servers", per_user_in_flight=3)
    held, kept, later = job(1, 1, at=0.0), job(2, 1, at=0.1), job(1, 1, at=0.2)
    others = [job(3, 2, at=0.3 + index) for index in range(2)]
    for queued in (held, kept, later, *others):
        queue.submit(queued)
    assert queue.next_batch("cpu", 5.0) == [held]
    assert queue.next_batch("cpu", 5.0) == [others[0]]
    assert queue.next_batch("cpu", 5.0) == [kept]
    queue.put_back_unstarted(held.job_id)
    assert queue.fair_order(5.0) == [others[1], held, later]


def test_a_start_on_one_device_moves_its_server_back_in_every_devices_order() -> None:
    """Member 1 waits in server 1 (for the GPU) and in server 2: their server 2 job starts on
    the CPU, so server 2 is behind server 3 in the queue's order too, where member 1's next job
    is their server 1 one and server 2 is only member 4's."""
    queue = FairScheduler(SchedulerConfig(max_batch=1, fairness="servers"), ["cpu", "gpu"])
    on_the_gpu = QueuedJob("gpu-only", 1, 1, ("sd15",), PriorityClass.STANDARD, 0.0, device="gpu")
    anywhere = job(1, 2, at=1.0)
    of_server_2, of_server_3 = job(4, 2, at=2.0), job(5, 3, at=3.0)
    for queued in (on_the_gpu, anywhere, of_server_2, of_server_3):
        queue.submit(queued)
    assert queue.next_batch("cpu", 5.0) == [anywhere]
    order = queue.fair_order(5.0, respect_caps=False)
    assert order.index(of_server_3) < order.index(of_server_2)
    assert queue.snapshot(5.0).queued == tuple(order)


@st.composite
def busy_servers(draw: st.DrawFn) -> tuple[list[tuple[int | None, int]], list[int]]:
    """Members (server, jobs kept waiting) over 2-5 servers (None: direct messages), and the
    members whose next job joins the queue after each start (picked modulo the members)."""
    servers = draw(
        st.lists(st.sampled_from([1, 2, 3, 4, None]), min_size=2, max_size=5, unique=True)
    )
    members = [
        (server, draw(st.integers(1, 3)))
        for server in servers
        for _ in range(draw(st.integers(1, 6)))
    ]
    arrivals = draw(st.lists(st.integers(0, 1_000), min_size=30, max_size=30))
    return members, arrivals


@settings(max_examples=60, deadline=None)
@given(busy_servers())
def test_with_n_servers_waiting_every_one_starts_within_n_starts(
    mix: tuple[list[tuple[int | None, int]], list[int]],
) -> None:
    """Whatever the servers' members and backlogs, with jobs of one size: a server waiting (its
    last start, or the start its job joined the queue after) starts a job within N starts,
    N the number of servers."""
    members, arrivals = mix
    servers = len({server for server, _ in members})
    queue = scheduler("servers")
    waiting: Counter[int | None] = Counter()
    waits_since: dict[int | None, int] = {}  # the start each waiting server waits from

    def submit(member: int, at: float, start: int) -> None:
        server = members[member][0]
        queue.submit(job(member, server, at=at))
        waiting[server] += 1
        waits_since.setdefault(server, start)

    for member, (_, kept) in enumerate(members):
        for _ in range(kept):
            submit(member, 0.0, 0)
    for start, pick in enumerate(arrivals):
        for server, since in waits_since.items():
            assert start - since < servers, f"server {server} waits from start {since}"
        [first] = queue.next_batch("cpu", float(start))
        queue.finish(first.job_id)
        waiting[first.guild_id] -= 1
        del waits_since[first.guild_id]
        if waiting[first.guild_id]:
            waits_since[first.guild_id] = start + 1
        submit(pick % len(members), float(start), start + 1)


@pytest.mark.parametrize("fairness", ["guilds", ""])
def test_an_unknown_fairness_is_refused_naming_the_choices(fairness: str) -> None:
    with pytest.raises(ValueError, match="fairness must be members or servers"):
        SchedulerConfig(fairness=fairness)  # type: ignore[arg-type]


@st.composite
def queues(draw: st.DrawFn) -> tuple[Fairness, list[QueuedJob]]:
    """A fairness, and jobs of members over servers (None: direct messages) of every class."""
    fairness = draw(st.sampled_from(FAIRNESS_CHOICES))
    jobs = [
        job(
            draw(st.integers(0, 6)),
            draw(st.sampled_from([1, 2, 3, None])),
            at=float(draw(st.integers(0, 5))),
            priority=draw(st.sampled_from(list(PriorityClass))),
            est=float(draw(st.sampled_from([1, 10, 160]))),
        )
        for _ in range(draw(st.integers(1, 30)))
    ]
    return fairness, jobs


@settings(max_examples=80, deadline=None)
@given(queues())
def test_the_order_shown_is_the_order_jobs_start(mix: tuple[Fairness, list[QueuedJob]]) -> None:
    """Positions walk the fair order pretending each job starts before the next is chosen:
    the servers' tallies it moves are the ones the starts move, so one device starting jobs
    one at a time starts them in the order shown."""
    fairness, jobs = mix
    queue = FairScheduler(
        SchedulerConfig(max_batch=1, per_user_in_flight=100, fairness=fairness), ["cpu"]
    )
    for queued in jobs:
        queue.submit(queued)
    shown = queue.fair_order(10.0, respect_caps=False)
    started = []
    while batch := queue.next_batch("cpu", 10.0):
        started += batch
    assert started == shown


@pytest.mark.parametrize(
    ("fairness", "servers_in_turn"),
    [
        ("servers", [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1]),
        ("members", [1, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1]),
    ],
)
async def test_through_the_queue_two_servers_take_turns_on_the_device(
    fairness: Fairness, servers_in_turn: list[int], conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """While a job holds the one device, server 1's four members ask for two pictures each,
    then server 2's three members for one each: with servers taking turns the device renders
    the two servers' jobs in turn; with members' fairness (the default) each member's first."""
    engine = HeldEngine()
    queue = JobQueue(
        conn, [DeviceWorker("cpu", lambda _: engine)], tmp_path / "images", fairness=fairness
    )
    sink = RecordingSink(conn)
    queue.set_sink(sink)
    await queue.start()
    server_of_seed = {}
    seeds = itertools.count(1)

    async def submit(member: int, server: int) -> None:
        server_of_seed[seed := next(seeds)] = server
        # Each job its own guidance scale, so that no two share a batch, and one cost.
        request = RenderRequest("a cat", seed=seed, steps=2, cfg_scale=1.0 + seed / 2)
        await queue.submit(Submission("imagine", request, member, server, channel_id=9))

    with engine:
        await submit(50, 3)  # holds the device
        assert await asyncio.to_thread(engine.started.wait, 10)
        for member in (1, 2, 3, 4):
            for _ in range(2):
                await submit(member, 1)
        for member in (5, 6, 7):
            await submit(member, 2)
        shown = [job.guild_id for job in queue.snapshot().queued]
        engine.released.set()
        await sink.wait_for(12)
    await queue.stop()
    assert shown == servers_in_turn
    assert [server_of_seed[request.seed] for request in engine.rendered[1:]] == servers_in_turn


async def test_a_job_the_broker_did_not_take_keeps_its_members_and_servers_turn(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hand-out the broker did not answer rendered nothing: the job goes back with its
    member's and its server's turns given back, so it still starts before a job of another
    server asked for after it (charged, that server would go first)."""
    monkeypatch.setattr(queue_module, "UNAVAILABLE_PROBE_WAITS_S", (0.01, 0.01))
    slot = BrokerAwayAtFirst(InstantEngine(), answering=False)
    queue = JobQueue(conn, [slot], tmp_path / "images", fairness="servers")
    sink = RecordingSink(conn)
    queue.set_sink(sink)
    await queue.start()
    try:
        first = await queue.submit(
            Submission("imagine", RenderRequest("a cat", seed=1, steps=2), 1, 1, channel_id=9)
        )
        # Handed out, refused, queued again.
        await until(lambda: slot.hand_overs and queue.snapshot().queued)
        request = RenderRequest("a dog", seed=2, steps=2, cfg_scale=3.0)  # no batch-mate
        later = await queue.submit(Submission("imagine", request, 2, 2, channel_id=9))
        slot.answering.set()
        await sink.wait_for(2)
    finally:
        await queue.stop()
    assert slot.hand_overs == [first, first, later]
