"""Free pictures are bounded in pictures, not only in jobs (bot.policy.quota's relax caps,
checked by bot.jobs.accounting before the acknowledgement and again when the job is
reserved): a /compare grid is one job of up to 16 pictures, and counts as 16. The caps bound
the queue, not spending, so a server's admins are held to them too."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import aiosqlite
import pytest

from bot.compare import Axis, parse_axis, plan_comparison
from bot.jobs.accounting import QuotaExceeded
from bot.jobs.queue import JobQueue, Submission
from bot.policy.quota import (
    RELAX_MAX_UNFINISHED_JOBS,
    RELAX_MAX_UNFINISHED_PICTURES,
    Unfinished,
    check_relax,
)
from inference.types import RenderRequest

GUILD, OTHER_GUILD, ADMIN = 100, 200, 1
RELAXED = RenderRequest("a cat", seed=1, steps=2, options={"relax": True})


@pytest.fixture
def queue(conn: aiosqlite.Connection, tmp_path: Path) -> JobQueue:
    # No render slot: a submitted job stays queued, unfinished.
    return JobQueue(conn, [], tmp_path / "images")


def as_admin(request: RenderRequest, guild_id: int = GUILD) -> Submission:
    """The server's admin (unlimited there), as every member's free pictures are bounded."""
    return Submission(
        kind="imagine", request=request, user_id=ADMIN, guild_id=guild_id, is_admin=True
    )


def relaxed_grid(seeds: str) -> RenderRequest:
    """A /compare --relax over ``seeds``: one request, a picture per cell."""
    x = parse_axis(Axis.SEED, seeds, RELAXED.prompt, 150, ())
    return plan_comparison(RELAXED, x, None).request


def test_the_caps_are_four_imagines_of_four_pictures() -> None:
    four_by_four = Unfinished(jobs=3, pictures=12)
    assert check_relax(four_by_four, Unfinished(jobs=1, pictures=4)) is None
    assert (RELAX_MAX_UNFINISHED_JOBS, RELAX_MAX_UNFINISHED_PICTURES) == (4, 16)
    refusal = check_relax(Unfinished(jobs=4, pictures=4), Unfinished(jobs=1, pictures=1))
    assert refusal is not None
    # Pasted settings queue as --relax from their "Relax: True" too, untyped.
    assert refusal.message.startswith(
        "Not queued: --relax (or `Relax: True` in pasted settings) is free"
    )
    assert refusal.message.endswith(
        "at most 4 jobs waiting or running here, this one included; you have 4."
    )
    refusal = check_relax(Unfinished(jobs=2, pictures=2), Unfinished(jobs=3, pictures=3))
    assert refusal is not None and refusal.message.endswith("you have 2 and this asks for 3.")
    refusal = check_relax(Unfinished(jobs=1, pictures=1), Unfinished(jobs=1, pictures=16))
    assert refusal is not None
    assert refusal.message.endswith(
        "at most 16 pictures waiting or being made here, this request's included; "
        "you have 1 and this asks for 16."
    )


async def test_a_relaxed_grid_counts_its_pictures_for_admins_too(queue: JobQueue) -> None:
    await queue.submit(as_admin(RELAXED))
    grid = as_admin(relaxed_grid("1-16"))
    assert grid.request.count == 16
    refusal = await queue.quota_refusal(grid)  # before the acknowledgement
    assert refusal is not None and "you have 1 and this asks for 16" in refusal.message
    with pytest.raises(QuotaExceeded, match="at most 16 pictures"):  # and when it is reserved
        await queue.submit(grid)
    # A smaller grid fits beside the one picture waiting; then only what is left does.
    assert await queue.quota_refusal(as_admin(relaxed_grid("1-15"))) is None
    await queue.submit(as_admin(relaxed_grid("1-14")))
    assert await queue.quota_refusal(as_admin(RELAXED)) is None
    await queue.submit(as_admin(RELAXED))
    with pytest.raises(QuotaExceeded, match="you have 16 and this asks for 1"):
        await queue.submit(as_admin(RELAXED))
    # Another server's queue is its own; an ordinary job is charged, not capped.
    await queue.submit(as_admin(relaxed_grid("1-16"), OTHER_GUILD))
    await queue.submit(as_admin(dataclasses.replace(RELAXED, options={})))
    assert queue.queued_count() == 5


async def test_four_relaxed_imagines_of_four_pictures_are_taken_and_a_fifth_is_not(
    queue: JobQueue,
) -> None:
    four = dataclasses.replace(RELAXED, count=4)
    for _ in range(RELAX_MAX_UNFINISHED_JOBS):
        await queue.submit(as_admin(four))
    refusal = await queue.quota_refusal(as_admin(RELAXED))
    assert refusal is not None and "at most 4 jobs waiting or running" in refusal.message
    with pytest.raises(QuotaExceeded, match="you have 4"):
        await queue.submit(as_admin(RELAXED))


async def test_repeats_count_as_jobs_before_the_acknowledgement(queue: JobQueue) -> None:
    await queue.submit(as_admin(RELAXED))
    await queue.submit(as_admin(RELAXED))
    three_pictures = as_admin(dataclasses.replace(RELAXED, count=3))  # --repeat 2: 3 jobs
    assert await queue.quota_refusal(three_pictures) is None  # as one job it would fit
    refusal = await queue.quota_refusal(three_pictures, jobs=3)
    assert refusal is not None and "you have 2 and this asks for 3" in refusal.message
