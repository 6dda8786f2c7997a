"""/quota for the cogs: a member's limits, what they used in each period and when it resets."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import aiosqlite

from bot.jobs.accounting import Member, limits_for, usage_by_period
from bot.policy.quota import Period, QuotaLimits, reset_at


@dataclass(frozen=True)
class PeriodUsage:
    period: Period
    images: int
    gpu_seconds: float
    image_limit: int | None  # None: unlimited
    gpu_seconds_limit: float | None
    resets_at: float


@dataclass(frozen=True)
class QuotaReport:
    periods: list[PeriodUsage]

    @property
    def unlimited(self) -> bool:
        return all(p.image_limit is None and p.gpu_seconds_limit is None for p in self.periods)


class QuotaStatus:
    def __init__(
        self,
        conn: aiosqlite.Connection,
        dm_limits: QuotaLimits,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._conn = conn
        self._dm_limits = dm_limits  # what applies in direct messages, which no guild governs
        self._clock = clock

    async def report(self, member: Member) -> QuotaReport:
        """The member's limits and spending where they are (a guild, or direct messages)."""
        now = self._clock()
        limits: QuotaLimits = await limits_for(self._conn, member, self._dm_limits)
        usage = await usage_by_period(self._conn, member.user_id, member.guild_id, now)
        periods = []
        for period, used in usage.items():
            image_limit = limits.limit("images", period)
            periods.append(
                PeriodUsage(
                    period=period,
                    images=used.images,
                    gpu_seconds=used.gpu_seconds,
                    image_limit=None if image_limit is None else int(image_limit),
                    gpu_seconds_limit=limits.limit("gpu_seconds", period),
                    resets_at=reset_at(period, now),
                )
            )
        return QuotaReport(periods)
