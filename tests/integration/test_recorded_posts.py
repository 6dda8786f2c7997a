"""The posts of a job a delivery looks at before posting it again (``db.jobs.first_posts_in``):
its first post (its original response), those recorded since it finished, and those since its
latest try began, however many /show copies of it came before that try; and never more than a
few."""

from __future__ import annotations

import aiosqlite

from db import jobs as journal
from inference.types import RenderRequest
from tests.support.discord_clock import SNOWFLAKE_CLOCK

NOW = 1_800_000_000.0
MEMBER, GUILD, CHANNEL = 7, 5, 50


def message_id_at(seconds: float) -> int:
    """The id Discord gives a message posted at ``seconds`` since the epoch."""
    return (int(seconds * 1000) - 1_420_070_400_000) << 22


async def test_the_post_of_the_latest_try_is_read_after_any_number_of_earlier_posts(
    conn: aiosqlite.Connection,
) -> None:
    job = journal.NewJob(
        "a" * 16, "imagine", MEMBER, GUILD, CHANNEL, RenderRequest("a dog").to_json(), NOW
    )
    await journal.insert_job(conn, job)
    original_response = message_id_at(NOW + 1)
    copies_before = [message_id_at(NOW + 600 + n) for n in range(4)]  # /show, while undelivered
    tried_at = NOW + 3600
    its_post = message_id_at(tried_at + 2)
    copies_after = [message_id_at(tried_at + 60 + n) for n in range(5)]
    for message_id in [original_response, *copies_before, its_post, *copies_after]:
        await journal.record_job_message(conn, job.id, message_id)
    await journal.mark_post_attempted(conn, job.id, tried_at)
    assert await journal.first_posts_in(conn, job.id, CHANNEL, **SNOWFLAKE_CLOCK) == (
        original_response,
        its_post,
        *copies_after[: journal.POSTS_SINCE_TRY - 1],
    )
    assert await journal.first_posts_in(conn, job.id, CHANNEL + 1, **SNOWFLAKE_CLOCK) == ()


async def test_the_post_of_an_older_try_is_read_after_a_later_try_failed_before_looking(
    conn: aiosqlite.Connection,
) -> None:
    """Try 1 posts and links its post, then Easel stops before recording the delivery; try 2
    fails before it looks (a 503, or another stop). Try 3 still reads try 1's post."""
    job = journal.NewJob(
        "b" * 16, "imagine", MEMBER, GUILD, CHANNEL, RenderRequest("a dog").to_json(), NOW
    )
    await journal.insert_job(conn, job)
    original_response = message_id_at(NOW + 1)
    await journal.record_job_message(conn, job.id, original_response)
    await journal.mark_failed(conn, job.id, "the model is missing", NOW + 30)
    await journal.mark_post_attempted(conn, job.id, NOW + 100)
    its_post = message_id_at(NOW + 102)
    await journal.record_job_message(conn, job.id, its_post)
    await journal.mark_post_attempted(conn, job.id, NOW + 700)
    assert await journal.first_posts_in(conn, job.id, CHANNEL, **SNOWFLAKE_CLOCK) == (
        original_response,
        its_post,
    )
