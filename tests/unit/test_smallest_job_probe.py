"""cogs.common's quota check before a picture is read: a picture whose settings may make a
free --relax job (/use-settings) is refused up front only when neither the smallest job nor
the smallest --relax job would be taken, telling why each is not; a refusal is counted
(easel_quota_refusals) once, and only when told."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

import cogs.common
from bot.jobs.queue import QuotaExceeded, Submission
from bot.user_errors import Reason, UserError
from cogs.common import _check_smallest_job_fits

QUOTA_FULL = "You have used 5 of 5 images today."
RELAX_FULL = "Not queued: you have 4 jobs waiting."
NONE_ALLOWED = "You are allowed no images per day here, --relax jobs included."
REASONS = {RELAX_FULL: Reason.QUEUE}  # the queue bound's; the others are quota's


class Queue:
    def __init__(self, *, charged: str | None, free: str | None) -> None:
        self._refusals = {False: charged, True: free}
        self.asked: list[bool] = []
        self.counted = 0  # easel_quota_refusals, counted as JobQueue.quota_refusal counts

    async def quota_refusal(
        self, submission: Submission, jobs: int = 1, *, counted: bool = True
    ) -> QuotaExceeded | None:
        relax = bool(submission.request.options.get("relax"))
        self.asked.append(relax)
        refusal = self._refusals[relax]
        if refusal is None:
            return None
        reason = REASONS.get(refusal, Reason.QUOTA)
        self.counted += counted and reason is Reason.QUOTA  # the bound is never counted
        return QuotaExceeded(refusal, reason)


def counted_with(queue: Queue, monkeypatch: pytest.MonkeyPatch) -> Queue:
    """``queue``, into whose count the cog's own counting goes too."""

    def quota_refused() -> None:
        queue.counted += 1

    monkeypatch.setattr(cogs.common.metrics, "quota_refused", quota_refused)
    return queue


def interaction_with(queue: Queue) -> Any:
    return SimpleNamespace(
        user=SimpleNamespace(id=3),
        guild_id=1,
        permissions=SimpleNamespace(manage_guild=False, administrator=False),
        client=SimpleNamespace(queue=queue),
    )


@pytest.mark.parametrize(
    ("charged", "free", "refused", "reason"),
    [
        (None, None, None, None),
        (QUOTA_FULL, None, None, None),  # its settings may ask for --relax: read them
        # No job at all fits: with its settings' --relax, once their jobs end. Recorded as
        # what refuses the --relax job; the quota told counted (review B2 #5).
        (QUOTA_FULL, RELAX_FULL, f"⛔ {QUOTA_FULL} As a --relax job: {RELAX_FULL}", Reason.QUEUE),
        (NONE_ALLOWED, NONE_ALLOWED, f"⛔ {NONE_ALLOWED}", Reason.QUOTA),  # said once
    ],
)
async def test_a_job_that_may_be_free_is_refused_only_when_no_job_fits(
    charged: str | None,
    free: str | None,
    refused: str | None,
    reason: Reason | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue = counted_with(Queue(charged=charged, free=free), monkeypatch)
    if refused is None:
        await _check_smallest_job_fits(interaction_with(queue), may_be_free=True)
        assert queue.counted == 0  # nothing refused, nothing counted
        return
    with pytest.raises(UserError) as error:
        await _check_smallest_job_fits(interaction_with(queue), may_be_free=True)
    assert (str(error.value), error.value.reason) == (refused, reason)
    assert queue.counted == 1


async def test_a_charged_job_is_refused_on_its_quota_alone() -> None:
    queue = Queue(charged=QUOTA_FULL, free=None)
    with pytest.raises(UserError):
        await _check_smallest_job_fits(interaction_with(queue), may_be_free=False)
    assert queue.asked == [False]
    assert queue.counted == 1
