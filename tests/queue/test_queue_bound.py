"""A member's jobs waiting or running in one server are bounded (EASEL_MAX_QUEUED_PER_MEMBER,
bot.policy.queue_bound), checked before the acknowledgement and again, in SQLite, when the job
is reserved; admins and members without an image limit included, each server on its own."""

from __future__ import annotations

from pathlib import Path

import aiosqlite
import pytest

from bot.jobs.accounting import QuotaExceeded
from bot.jobs.queue import JobQueue, Submission
from bot.policy.queue_bound import check_queue_bound
from inference.types import RenderRequest

GUILD, OTHER_GUILD, ADMIN = 100, 200, 1


def as_admin(guild_id: int = GUILD) -> Submission:
    """The server's admin: no image limit there."""
    return Submission(
        kind="imagine",
        request=RenderRequest("a cat", seed=1, steps=2),
        user_id=ADMIN,
        guild_id=guild_id,
        is_admin=True,
    )


def test_the_bound_counts_the_jobs_a_request_makes_and_zero_is_none() -> None:
    assert check_queue_bound(3, waiting=1, asked=2) is None
    refusal = check_queue_bound(3, waiting=2, asked=2)
    assert refusal is not None and refusal.message == (
        "Not queued: you may have at most 3 jobs waiting or running here, and you have 2, "
        "and this request makes 2. Wait for some to finish, or `/cancel` one."
    )
    assert check_queue_bound(0, waiting=10_000, asked=1) is None


async def test_a_submit_past_the_bound_is_refused_and_reserves_nothing(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    # No render slot: a submitted job stays queued, unfinished.
    queue = JobQueue(conn, [], tmp_path / "images", max_queued_per_member=2)
    for _ in range(2):
        await queue.submit(as_admin())
    assert await queue.quota_refusal(as_admin()) is not None  # before the acknowledgement
    with pytest.raises(QuotaExceeded, match="at most 2 jobs waiting or running here"):
        await queue.submit(as_admin())  # and when it would be reserved
    async with conn.execute("SELECT COUNT(*) FROM quota_ledger") as cursor:
        assert tuple(await cursor.fetchone() or ()) == (2,)  # none for the refused one
    assert queue.queued_count() == 2
    await queue.submit(as_admin(OTHER_GUILD))  # another server counts on its own
