"""Quota accounting around a job's life: admit (check + reserve), commit, refund.

The policy (which limits apply, what a refusal says) is ``bot.quota``; the ledger rows are
``db.quotas``. This module joins them at the three moments the queue knows about.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aiosqlite

from bot.quota import (
    Cost,
    Period,
    QuotaLimits,
    Refusal,
    check,
    period_start,
    resolve_limits,
)
from db import quotas as ledger
from inference.types import RenderRequest

# A rough GPU cost used for the reservation only; the measured time replaces it at commit.
ESTIMATED_SECONDS_PER_STEP_512 = 0.08


class QuotaExceeded(Exception):
    """The member's limits refuse this job; ``message`` names the limit and when it resets."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Member:
    """Who acts, where (None: a direct message), their roles there, and whether they manage
    that guild: admin power belongs to a member in one guild, never to a person everywhere."""

    user_id: int
    guild_id: int | None
    role_ids: Sequence[int] = ()
    is_admin: bool = False  # manages ``guild_id`` (Manage Server there)

    def __post_init__(self) -> None:
        if self.is_admin and self.guild_id is None:
            raise ValueError("a direct message has no admins: is_admin needs a guild_id")


def estimated_cost(request: RenderRequest) -> Cost:
    pixels = (request.width or 512) * (request.height or 512)
    seconds = ESTIMATED_SECONDS_PER_STEP_512 * request.steps * request.count * pixels / 512**2
    return Cost(images=request.count, gpu_seconds=round(seconds, 3))


async def limits_for(
    conn: aiosqlite.Connection, member: Member, dm_limits: QuotaLimits
) -> QuotaLimits:
    """The member's limits where they are: in a guild, its overrides (none for its admins);
    in direct messages, which no guild governs, the operator's ``dm_limits``."""
    if member.guild_id is None:
        return dm_limits
    found = await ledger.overrides_for(conn, member.guild_id, member.user_id, member.role_ids)
    return resolve_limits(
        is_admin=member.is_admin,
        user_override=QuotaLimits.from_mapping(found.user) if found.user else None,
        role_overrides=[QuotaLimits.from_mapping(role) for role in found.roles],
        guild_default=QuotaLimits.from_mapping(found.guild) if found.guild else None,
    )


async def refusal_for(
    conn: aiosqlite.Connection,
    member: Member,
    request: RenderRequest,
    now: float,
    dm_limits: QuotaLimits,
) -> Refusal | None:
    """Why this request does not fit the member's limits now, or None; reads only."""
    limits = await limits_for(conn, member, dm_limits)
    usage = await usage_by_period(conn, member.user_id, member.guild_id, now)
    return check(usage, limits, estimated_cost(request), now)


async def usage_by_period(
    conn: aiosqlite.Connection, user_id: int, guild_id: int | None, now: float
) -> dict[Period, ledger.Usage]:
    """The member's spending in the current day, week and month (one query)."""
    periods = list(Period)
    spent = await ledger.usage_since_each(
        conn, user_id, guild_id, [period_start(period, now) for period in periods]
    )
    return dict(zip(periods, spent, strict=True))


async def admit(
    conn: aiosqlite.Connection,
    job_id: str,
    member: Member,
    request: RenderRequest,
    now: float,
    dm_limits: QuotaLimits,
) -> Refusal | None:
    """Reserve the job's estimated cost; or, when it does not fit, write nothing and say why.

    Returns rather than raises so the caller's transaction can commit: a refusal is an
    answer, not a failure (see ``db.database.transaction``)."""
    refusal = await refusal_for(conn, member, request, now, dm_limits)
    if refusal is None:
        cost = estimated_cost(request)
        await ledger.reserve(
            conn, job_id, member.user_id, member.guild_id, cost.images, cost.gpu_seconds, now
        )
    return refusal


async def charge(
    conn: aiosqlite.Connection, job_id: str, gpu_seconds: float, images: int, now: float
) -> None:
    await ledger.commit(conn, job_id, gpu_seconds, now, images=images)


async def refund(conn: aiosqlite.Connection, job_id: str, now: float) -> None:
    await ledger.refund(conn, job_id, now)
