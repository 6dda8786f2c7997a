"""The queue only answers whether a job fits: a refusal is counted (``easel_quota_refusals``)
where the member is told it (``bot.refusals.quota_refused``), so a check whose answer is never
told, or is overruled by another, counts nothing, and neither does a refusal at submit."""

from __future__ import annotations

from pathlib import Path

import aiosqlite
import pytest

from bot.jobs.queue import JobQueue, QuotaExceeded, Submission
from bot.metrics import METRICS_REGISTRY as REGISTRY
from bot.policy.quota import QuotaLimits
from bot.refusals import quota_refused
from bot.user_errors import Reason
from inference.types import RenderRequest

MEMBER = 2
CAT = RenderRequest("a cat", seed=1, steps=2)


def quota_refusals_counted() -> float:
    return REGISTRY.get_sample_value("easel_quota_refusals_total") or 0.0


async def test_neither_a_check_nor_a_submit_counts_the_refusal_it_returns(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    # No picture a day in direct messages: every job there is refused by the member's limits.
    queue = JobQueue(conn, [], tmp_path / "images", dm_limits=QuotaLimits(images_per_day=0))
    in_dm = Submission(kind="imagine", request=CAT, user_id=MEMBER, guild_id=None)
    counted = quota_refusals_counted()
    refusal = await queue.quota_refusal(in_dm)
    assert refusal is not None and refusal.reason is Reason.QUOTA
    with pytest.raises(QuotaExceeded):
        await queue.submit(in_dm)
    assert quota_refusals_counted() == counted, "a refusal nobody was told of was counted"
    # Told: counted once.
    told = quota_refused(refusal)
    assert str(told) == f"⛔ {refusal.message}"
    assert quota_refusals_counted() == counted + 1
