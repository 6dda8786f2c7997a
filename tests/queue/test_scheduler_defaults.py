"""The scheduler as the queue builds it (``SchedulerConfig`` with only ``max_batch`` set) keeps
README's promise: a ``--relax`` job waits behind other classes for 10 minutes at most; and a
bad setting or job is refused naming what is wrong."""

from __future__ import annotations

import re

import pytest

from bot.jobs.scheduler import FairScheduler, PriorityClass, QueuedJob, SchedulerConfig


def queued(job_id: str, user_id: int, priority: PriorityClass, at: float) -> QueuedJob:
    return QueuedJob(job_id, user_id, 1, ("sd15", 512, 512), priority, submitted_at=at)


def test_a_relax_job_is_promoted_after_ten_minutes_of_waiting() -> None:
    scheduler = FairScheduler(SchedulerConfig(max_batch=4))
    relax = queued("relax", 1, PriorityClass.RELAX, at=0.0)
    standard = queued("standard", 2, PriorityClass.STANDARD, at=1.0)
    scheduler.submit(relax)
    scheduler.submit(standard)
    assert scheduler.fair_order(599.0) == [standard, relax]
    # Now STANDARD too, and its user's next job was submitted first.
    assert scheduler.fair_order(600.0) == [relax, standard]


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"max_batch": 0}, "max_batch must be at least 1, got 0"),
        ({"aging_seconds": 0.0}, "aging_seconds must be greater than 0, got 0.0"),
        ({"per_guild_in_flight": 0}, "per_guild_in_flight must be at least 1 or None"),
        ({"model_affinity_turns": -1}, "model_affinity_turns must be 0 or more, got -1"),
        ({"positions_counted": 0}, "positions_counted must be at least 1, got 0"),
    ],
)
def test_a_bad_setting_is_named_with_its_range(settings: dict[str, float], error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        SchedulerConfig(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"job_id": ""}, "job_id must be a non-empty string"),
        ({"batch_key": ()}, "batch_key must start with the model name"),
        ({"est_seconds": -1.0}, "est_seconds must be a finite number, 0 or more, got -1.0"),
        ({"est_seconds": float("nan")}, "est_seconds must be a finite number, 0 or more, got nan"),
        ({"est_seconds": float("inf")}, "est_seconds must be a finite number, 0 or more, got inf"),
    ],
)
def test_a_malformed_job_is_refused(fields: dict[str, object], error: str) -> None:
    job = {"job_id": "j", "user_id": 1, "guild_id": 1, "batch_key": ("sd15",)}
    with pytest.raises(ValueError, match=re.escape(error)):
        QueuedJob(**{**job, **fields}, priority=PriorityClass.STANDARD, submitted_at=0.0)  # type: ignore[arg-type]
