"""The spending ``accounting.refusal_for`` keeps in memory follows the ledger through a job's
commit, a withheld job's refund and a new day: a member whose request fits is answered from
memory, without a read of SQLite (a memory that counted too much would refuse first and only
the ledger, read again, would let the request through)."""

from __future__ import annotations

import aiosqlite

from bot.jobs import accounting
from bot.policy.quota import QuotaLimits
from db.quotas import LimitScope
from inference.types import RenderRequest
from tests.queue.test_acknowledge_from_memory import counting_statements

GUILD, MEMBER = 100, 2
MEMBER_HERE = accounting.Member(MEMBER, GUILD)
NOON = 1_767_009_600.0  # 2025-12-29 12:00 UTC
NEXT_NOON = NOON + 86_400
NO_DM_LIMITS = QuotaLimits()


def pictures(count: int) -> RenderRequest:
    return RenderRequest("a cat", seed=1, steps=2, count=count)


async def refused(conn: aiosqlite.Connection, count: int, now: float) -> bool:
    refusal = await accounting.refusal_for(conn, MEMBER_HERE, pictures(count), now, NO_DM_LIMITS)
    return refusal is not None


async def fits_from_memory(conn: aiosqlite.Connection, count: int, now: float) -> bool:
    """Whether a request of ``count`` pictures fits, answered without SQL."""
    async with counting_statements(conn) as statements:
        fits = not await refused(conn, count, now)
    return fits and not statements


async def made(conn: aiosqlite.Connection, job_id: str, count: int, now: float) -> None:
    """A job of ``count`` pictures admitted and charged what it reserved."""
    admitted = await accounting.admit(conn, job_id, MEMBER_HERE, pictures(count), now, NO_DM_LIMITS)
    assert admitted is None
    await accounting.charge(conn, job_id, 1.0, count, now)


async def limit_to(conn: aiosqlite.Connection, images_per_day: int) -> None:
    limits = QuotaLimits(images_per_day=images_per_day)
    await accounting.set_limits(conn, LimitScope.USER, GUILD, MEMBER, limits, NOON)


async def test_a_commit_replaces_the_reservation_in_memory(conn: aiosqlite.Connection) -> None:
    await limit_to(conn, 3)
    assert not await refused(conn, 1, NOON)  # memory warm
    await made(conn, "a" * 16, 1, NOON)
    assert await fits_from_memory(conn, 2, NOON)  # 1 of 3 used
    assert await refused(conn, 3, NOON)


async def test_a_withheld_jobs_refund_is_given_back_in_memory(conn: aiosqlite.Connection) -> None:
    await limit_to(conn, 3)
    await made(conn, "a" * 16, 2, NOON)
    assert not await refused(conn, 1, NOON)  # memory warm: 2 of 3 used
    assert await accounting.refund_withheld(conn, "a" * 16, NOON)
    assert not await refused(conn, 3, NOON)  # read again once, after the refund
    assert await fits_from_memory(conn, 3, NOON)


async def test_a_new_day_is_read_once_then_answered_from_memory(
    conn: aiosqlite.Connection,
) -> None:
    await limit_to(conn, 3)
    await made(conn, "a" * 16, 2, NOON)
    assert not await refused(conn, 1, NOON)  # memory warm: 2 of 3 used today
    assert not await refused(conn, 3, NEXT_NOON)  # the day's start changed: read again
    assert await fits_from_memory(conn, 3, NEXT_NOON)
