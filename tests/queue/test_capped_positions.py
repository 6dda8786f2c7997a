"""A job further back than the scheduler counts (``positions_counted``) reads as such: its
place "over N" and its wait "at least N s", lower bounds, never a number that looks exact."""

from __future__ import annotations

from pathlib import Path

import aiosqlite
import pytest

from bot.jobs.queue import JobQueue, JobState, Submission
from bot.jobs.scheduler import FairScheduler, PriorityClass, QueuedJob, SchedulerConfig
from db.jobs import JobStatus
from inference.types import RenderRequest


def queued(position: int, eta_s: float, *, at_least: bool) -> JobState:
    return JobState(JobStatus.QUEUED, position=position, eta_s=eta_s, at_least=at_least)


def test_a_place_past_the_count_reads_as_a_lower_bound() -> None:
    assert queued(999, 950.0, at_least=False).place() == "position 1000"
    assert queued(999, 950.0, at_least=False).done_in() == "done in about 950 s"
    assert queued(1000, 900.0, at_least=True).place() == "position over 1000"
    assert queued(1000, 900.0, at_least=True).done_in() == "done in at least 900 s"
    running = JobState(JobStatus.RUNNING, position=None, eta_s=None)
    assert running.done_in() is None
    with pytest.raises(ValueError, match="only a queued job has a place"):
        running.place()


async def test_the_queue_says_which_places_are_past_the_count(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    # No render slot: submitted jobs stay queued. Admins: no image limit to run into.
    config = SchedulerConfig(positions_counted=2)
    queue = JobQueue(conn, [], tmp_path / "images", scheduler_config=config)
    ids = [
        await queue.submit(
            Submission("imagine", RenderRequest("a cat", seed=1, steps=2), 1, 100, is_admin=True)
        )
        for _ in range(4)
    ]
    states = [await queue.state(job_id) for job_id in ids]
    assert [(state.position, state.at_least) for state in states if state] == [
        (0, False),
        (1, False),
        (2, True),
        (2, True),
    ]
    first, _, third, _ = (state for state in states if state)
    assert third.place() == "position over 2"
    assert (third.done_in() or "").startswith("done in at least ")
    assert first.place() == "position 1"


def test_by_default_places_are_counted_to_100_and_only_what_a_member_reads_is_bounded() -> None:
    """The 150th job reads "over 100" ahead and an ETA summing only the 100 counted jobs (a
    lower bound of its exact one), while the jobs still start in the whole fair order: the
    count bounds what is shown, never who starts next."""
    counted = FairScheduler(devices=["cpu"])
    uncounted = FairScheduler(SchedulerConfig(positions_counted=10_000), devices=["cpu"])
    jobs = [
        QueuedJob(
            f"j{index}",
            1000 + index,
            1,
            ("m",),
            PriorityClass.STANDARD,
            float(index),
            est_seconds=float(1 + index % 3),
        )
        for index in range(200)
    ]
    for item in jobs:
        counted.submit(item)
        uncounted.submit(item)
    now, target = 200.0, jobs[149]
    assert uncounted.position(target.job_id, now) == 149
    assert counted.position(target.job_id, now) == 100
    lower_bound, exact = counted.eta(target.job_id, now), uncounted.eta(target.job_id, now)
    assert lower_bound == pytest.approx(
        now + sum(item.est_seconds for item in jobs[:100]) + target.est_seconds
    )
    assert exact is not None and lower_bound is not None and lower_bound < exact
    shown = JobState(JobStatus.QUEUED, position=100, eta_s=lower_bound - now, at_least=True)
    assert (shown.place(), shown.done_in()) == ("position over 100", "done in at least 202 s")
    started: list[QueuedJob] = []
    while batch := counted.next_batch("cpu", now):
        assert uncounted.next_batch("cpu", now) == batch
        started += batch
        for item in batch:
            counted.finish(item.job_id)
            uncounted.finish(item.job_id)
    assert started == jobs
