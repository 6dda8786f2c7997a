"""cogs.common's quota check before a picture is read: a picture whose settings may make a
free --relax job (/use-settings) is refused up front only when neither the smallest job nor
the smallest --relax job would be taken, telling why each is not; a refusal is counted
(easel_quota_refusals) once, only when told and only when the member's limits or relax caps
refuse either form (the queue bound alone is not counted)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from bot.jobs.queue import QuotaExceeded, Submission
from bot.metrics import METRICS_REGISTRY as REGISTRY
from bot.user_errors import Reason, UserError
from cogs.common import _check_smallest_job_fits

QUOTA_FULL = "You have used 5 of 5 images today."
BOUND_FULL = "Not queued: you may have at most 4 jobs waiting or running here, and you have 4."
RELAX_CAPS = "Not queued: --relax is free, so it is taken while you have at most 4 jobs waiting."
NONE_ALLOWED = "You are allowed no images per day here, --relax jobs included."
REASONS = {BOUND_FULL: Reason.QUEUE}  # the queue bound's; the others (relax caps too) quota's


class Queue:
    """JobQueue's answers, read only (it counts nothing: ``quota_refused`` counts as told)."""

    def __init__(self, *, charged: str | None, free: str | None) -> None:
        self._refusals = {False: charged, True: free}
        self.asked: list[bool] = []

    async def quota_refusal(self, submission: Submission, jobs: int = 1) -> QuotaExceeded | None:
        relax = bool(submission.request.options.get("relax"))
        self.asked.append(relax)
        refusal = self._refusals[relax]
        if refusal is None:
            return None
        return QuotaExceeded(refusal, REASONS.get(refusal, Reason.QUOTA))


def quota_refusals_counted() -> float:
    return REGISTRY.get_sample_value("easel_quota_refusals_total") or 0.0


def told_both(charged: str, free: str) -> str:
    """The sentence when the job and its free form are refused for different reasons."""
    return f"⛔ {charged} As a --relax job: {free}"


def interaction_with(queue: Queue) -> Any:
    return SimpleNamespace(
        user=SimpleNamespace(id=3),
        guild_id=1,
        permissions=SimpleNamespace(manage_guild=False, administrator=False),
        client=SimpleNamespace(queue=queue),
    )


@pytest.mark.parametrize(
    ("charged", "free", "refused", "reason", "counted"),
    [
        (None, None, None, None, 0),
        (QUOTA_FULL, None, None, None, 0),  # its settings may ask for --relax: read them
        # No job at all fits: with its settings' --relax, once their jobs end. Recorded as
        # what refuses the --relax job; the quota told counted (review B2 #5).
        (QUOTA_FULL, BOUND_FULL, told_both(QUOTA_FULL, BOUND_FULL), Reason.QUEUE, 1),
        # The bound refuses the job, the relax caps (the quota's) its free form: counted.
        (BOUND_FULL, RELAX_CAPS, told_both(BOUND_FULL, RELAX_CAPS), Reason.QUOTA, 1),
        # The bound alone (as a --relax job too): told, but not a quota refusal.
        (BOUND_FULL, BOUND_FULL, f"⛔ {BOUND_FULL}", Reason.QUEUE, 0),
        (NONE_ALLOWED, NONE_ALLOWED, f"⛔ {NONE_ALLOWED}", Reason.QUOTA, 1),  # said once
    ],
)
async def test_a_job_that_may_be_free_is_refused_only_when_no_job_fits(
    charged: str | None,
    free: str | None,
    refused: str | None,
    reason: Reason | None,
    counted: int,
) -> None:
    queue = Queue(charged=charged, free=free)
    before = quota_refusals_counted()
    if refused is None:
        await _check_smallest_job_fits(interaction_with(queue), may_be_free=True)
    else:
        with pytest.raises(UserError) as error:
            await _check_smallest_job_fits(interaction_with(queue), may_be_free=True)
        assert (str(error.value), error.value.reason) == (refused, reason)
    assert quota_refusals_counted() - before == counted


async def test_a_charged_job_is_refused_on_its_quota_alone() -> None:
    queue = Queue(charged=QUOTA_FULL, free=None)
    counted = quota_refusals_counted()
    with pytest.raises(UserError):
        await _check_smallest_job_fits(interaction_with(queue), may_be_free=False)
    assert queue.asked == [False]
    assert quota_refusals_counted() == counted + 1
