"""A ``--relax`` job runs only when no other job waits (README): batching does not let it pass
a waiting job of a higher class, as a partner or as the loaded model's leader, whichever
fairness (``bot.jobs.scheduler``, "Batching bound")."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosqlite
import pytest
from hypothesis import given, settings

from bot.jobs.queue import Submission
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
from tests.queue.test_fair_scheduler import job, job_mixes
from tests.support.engines import HeldEngine
from tests.support.sinks import started_queue

RELAX, STANDARD = PriorityClass.RELAX, PriorityClass.STANDARD


@pytest.mark.parametrize("fairness", FAIRNESS_CHOICES)
@pytest.mark.parametrize("standard_waiting", [3, 6])
def test_a_relax_job_joins_no_batch_while_standard_jobs_of_others_wait(
    fairness: Fairness, standard_waiting: int
) -> None:
    """The audit's case: a relax job on the leader's model, submitted after other servers'
    members' standard jobs on another model, waits until every one of them has started."""
    scheduler = FairScheduler(
        SchedulerConfig(max_batch=4, per_user_in_flight=9, fairness=fairness), ["cpu"]
    )
    leader = job(1, model="a", guild=1, at=0.0)
    standard = [
        job(10 + k, model="b", guild=2 + k % 2, at=1.0 + k) for k in range(standard_waiting)
    ]
    relax = job(99, model="a", guild=4, at=50.0, priority=RELAX)
    for queued in (leader, *standard, relax):
        scheduler.submit(queued)

    assert scheduler.next_batch("cpu", 60.0) == [leader]
    scheduler.finish(leader.job_id)
    started: list[QueuedJob] = []
    while batch := scheduler.next_batch("cpu", 60.0):
        if relax in batch:
            assert set(standard) <= set(started), "the relax job started before a standard one"
        started += batch
        for queued in batch:
            scheduler.finish(queued.job_id)
    assert set(started) == {*standard, relax}


@pytest.mark.parametrize("fairness", FAIRNESS_CHOICES)
async def test_through_the_queue_a_relax_job_renders_after_the_standard_jobs_before_it(
    fairness: Fairness, conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """While a job holds the device (a batch of up to four), member 1 asks for a picture, three
    members of another server for pictures of other settings, then member 99 for member 1's
    settings with --relax: the device renders member 1's alone and member 99's last."""
    engine = HeldEngine()
    slots = [DeviceWorker("cpu", lambda _: engine)]
    queue, sink = await started_queue(conn, slots, tmp_path / "images", fairness=fairness)

    async def submit(
        member: int, server: int, cfg: float, seed: int, priority: PriorityClass = STANDARD
    ) -> None:
        request = RenderRequest("a cat", seed=seed, steps=2, cfg_scale=cfg)
        await queue.submit(
            Submission("imagine", request, member, server, channel_id=9, priority=priority)
        )

    with engine:
        await submit(50, 3, cfg=9.0, seed=50)  # holds the device
        assert await asyncio.to_thread(engine.started.wait, 10)
        await submit(1, 1, cfg=1.0, seed=1)
        for member in (10, 11, 12):  # each their own settings: batched with no one
            await submit(member, 2, cfg=float(member), seed=member)
        await submit(99, 4, cfg=1.0, seed=99, priority=RELAX)
        engine.released.set()
        await sink.wait_for(6)
    await queue.stop()
    assert [request.seed for request in engine.rendered] == [50, 1, 10, 11, 12, 99]
    assert engine.batches == [1] * 6


@pytest.mark.parametrize("fairness", FAIRNESS_CHOICES)
def test_a_relax_job_leads_for_the_loaded_model_only_when_no_standard_job_waits(
    fairness: Fairness,
) -> None:
    config = SchedulerConfig(max_batch=4, model_affinity_turns=1, fairness=fairness)
    scheduler = FairScheduler(config, ["cpu"])
    standard = job(1, model="b", guild=1, at=0.0)
    relax = job(2, model="a", guild=2, at=1.0, priority=RELAX)
    scheduler.submit(standard)
    scheduler.submit(relax)
    assert scheduler.next_batch("cpu", 2.0, loaded_model="a") == [standard]
    assert scheduler.next_batch("cpu", 2.0, loaded_model="a") == [relax]


@pytest.mark.parametrize("fairness", FAIRNESS_CHOICES)
def test_relax_jobs_still_batch_once_no_standard_job_is_left_waiting(fairness: Fairness) -> None:
    """Batching stays useful: a relax job joins a batch that takes every standard job ahead of
    it, passing only relax jobs (its own class, within the batching bound)."""
    scheduler = FairScheduler(SchedulerConfig(max_batch=4, fairness=fairness), ["cpu"])
    first, second = job(1, model="a", guild=1, at=0.0), job(2, model="a", guild=2, at=1.0)
    other_model = job(3, model="b", guild=3, at=2.0, priority=RELAX)
    relax = job(4, model="a", guild=4, at=3.0, priority=RELAX)
    for queued in (first, second, other_model, relax):
        scheduler.submit(queued)
    assert scheduler.fair_order(4.0, "cpu") == [first, second, other_model, relax]
    assert scheduler.next_batch("cpu", 4.0) == [first, second, relax]


@settings(max_examples=60, deadline=None)
@given(job_mixes())
def test_no_batch_starts_a_relax_job_past_a_waiting_job_of_a_higher_class(
    mix: tuple[SchedulerConfig, list[QueuedJob], list[bool]],
) -> None:
    """Random mixes of members, servers, models, classes, devices and caps, in either fairness,
    each device leading with the model it rendered last. The jobs are submitted at 0..39 s and
    started by 300 s, short of the default aging period: a job's class is its own."""
    config, jobs, finishes = mix
    scheduler = FairScheduler(config)
    for queued in jobs:
        scheduler.submit(queued)
    loaded: dict[str, object] = {}
    running: list[QueuedJob] = []
    now = 100.0
    for step, finish_one in enumerate(finishes):
        device = "cpu" if step % 2 else "gpu"
        fair = scheduler.fair_order(now, device)
        batch = scheduler.next_batch(device, now, loaded_model=loaded.get(device))
        for started in batch:
            if started.priority == RELAX:
                passed = fair[: fair.index(started)]
                assert all(ahead in batch for ahead in passed if ahead.priority > RELAX)
        if batch:
            loaded[device] = batch[0].model
        running += batch
        if running and (finish_one or not batch):
            scheduler.finish(running.pop(0).job_id)
        now += 1.0
        if not running and scheduler.queued_count == 0:
            break
