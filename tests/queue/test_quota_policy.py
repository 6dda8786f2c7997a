"""bot.policy.quota: limit resolution, calendar periods and refusal messages."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.policy.quota import (
    DEFAULT_LIMITS,
    UNLIMITED,
    Cost,
    Period,
    QuotaLimits,
    check,
    period_start,
    reset_at,
    resolve_limits,
)
from db.quotas import LIMIT_COLUMNS, Usage


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


def usage_of(images: int = 0, gpu_seconds: float = 0.0) -> dict[Period, Usage]:
    return dict.fromkeys(Period, Usage(images, gpu_seconds))


def test_limit_fields_match_the_ledger_columns() -> None:
    assert tuple(f.name for f in dataclasses.fields(QuotaLimits)) == LIMIT_COLUMNS


def test_resolution_order() -> None:
    user = QuotaLimits(images_per_day=5)
    roles = [QuotaLimits(images_per_day=20), QuotaLimits(images_per_day=50, images_per_week=70)]
    guild = QuotaLimits(images_per_day=10)

    def resolve(
        *,
        is_admin: bool = False,
        user_override: QuotaLimits | None = user,
        role_overrides: list[QuotaLimits] = roles,
        guild_default: QuotaLimits | None = guild,
    ) -> QuotaLimits:
        return resolve_limits(
            is_admin=is_admin,
            user_override=user_override,
            role_overrides=role_overrides,
            guild_default=guild_default,
        )

    assert resolve(is_admin=True) == UNLIMITED
    assert resolve() == user
    # The most generous role wins per limit; unlimited (None) beats any number.
    assert resolve(user_override=None) == QuotaLimits(images_per_day=50)
    assert resolve(user_override=None, role_overrides=[]) == guild
    assert resolve(user_override=None, role_overrides=[], guild_default=None) == DEFAULT_LIMITS


def test_periods_are_calendar_utc() -> None:
    now = ts(2026, 11, 25, 15, 30)  # a Wednesday
    assert period_start(Period.DAY, now) == ts(2026, 11, 25)
    assert reset_at(Period.DAY, now) == ts(2026, 11, 26)
    assert period_start(Period.WEEK, now) == ts(2026, 11, 23)  # Monday
    assert reset_at(Period.WEEK, now) == ts(2026, 11, 30)
    assert period_start(Period.MONTH, now) == ts(2026, 11, 1)
    assert reset_at(Period.MONTH, now) == ts(2026, 12, 1)
    assert reset_at(Period.MONTH, ts(2026, 12, 31, 23, 59)) == ts(2027, 1, 1)
    # The first instant of a period belongs to it.
    assert period_start(Period.DAY, ts(2026, 11, 26)) == ts(2026, 11, 26)


@given(st.floats(min_value=0, max_value=4e9), st.sampled_from(list(Period)))
def test_now_lies_inside_its_period(now: float, period: Period) -> None:
    start, end = period_start(period, now), reset_at(period, now)
    assert start <= now < end
    assert period_start(period, end) == end  # the next period starts where this one ends


def test_refusal_when_the_limit_is_used_up() -> None:
    now = ts(2026, 11, 25, 12)
    refusal = check(usage_of(100), QuotaLimits(images_per_day=100), Cost(1, 5.0), now)
    assert refusal is not None
    assert refusal.message == (
        f"You have used 100 of 100 images today; the limit resets <t:{int(ts(2026, 11, 26))}:R>."
    )


def test_refusal_when_the_request_does_not_fit_what_is_left() -> None:
    now = ts(2026, 11, 25, 12)
    limits = QuotaLimits(gpu_seconds_per_week=600.0)
    refusal = check(usage_of(gpu_seconds=590.0), limits, Cost(1, 30.0), now)
    assert refusal is not None
    assert refusal.message == (
        "This request needs 30 GPU-seconds but you have 10 of 600 left this week; "
        f"the limit resets <t:{int(ts(2026, 11, 30))}:R>."
    )


def test_refusal_for_a_request_larger_than_the_limit_itself() -> None:
    refusal = check(usage_of(), QuotaLimits(images_per_day=3), Cost(4, 0.0), 0.0)
    assert refusal is not None
    assert (
        refusal.message
        == "This request needs 4 images but the limit is 3 images per day; ask for less."
    )


def test_a_request_larger_than_a_used_up_limit_is_told_to_wait_for_the_reset() -> None:
    """Asking for less cannot help while the limit is used up: the refusal says both."""
    now = ts(2026, 11, 25, 12)
    refusal = check(usage_of(12), QuotaLimits(images_per_day=1), Cost(4, 0.0), now)
    assert refusal is not None
    assert refusal.message == (
        "This request needs 4 images but the limit is 1 image per day and you have used 12 "
        f"today; ask for at most 1 after the limit resets <t:{int(ts(2026, 11, 26))}:R>."
    )


def test_gpu_seconds_are_counted_in_words_and_not_asked_for_by_number() -> None:
    """A member asks for pictures, steps and sizes, not GPU-seconds: a request larger than a
    used-up GPU-seconds limit is told to ask for less after the reset, and a request or limit
    of 1 of any unit reads singular."""
    now = ts(2026, 11, 25, 12)
    refusal = check(
        usage_of(gpu_seconds=0.5), QuotaLimits(gpu_seconds_per_day=0.5), Cost(1, 1.0), now
    )
    assert refusal is not None
    assert refusal.message == (
        "This request needs 1 GPU-second but the limit is 0.5 GPU-seconds per day and you have "
        f"used 0.5 today; ask for less after the limit resets <t:{int(ts(2026, 11, 26))}:R>."
    )
    larger = check(usage_of(), QuotaLimits(gpu_seconds_per_day=1.0), Cost(1, 2.0), now)
    assert larger is not None
    assert larger.message == (
        "This request needs 2 GPU-seconds but the limit is 1 GPU-second per day; ask for less."
    )


def test_the_limit_that_resets_last_is_reported() -> None:
    now = ts(2026, 11, 25, 12)
    limits = QuotaLimits(images_per_day=10, images_per_month=10)
    refusal = check(usage_of(10), limits, Cost(1, 0.0), now)
    assert refusal is not None
    assert refusal.period is Period.MONTH


def test_requests_within_limits_pass() -> None:
    limits = QuotaLimits(images_per_day=10, gpu_seconds_per_day=100.0)
    assert check(usage_of(6, 50.0), limits, Cost(4, 50.0), 0.0) is None
    assert check(usage_of(7), limits, Cost(4, 0.0), 0.0) is not None
    assert check({}, UNLIMITED, Cost(4, 1e9), 0.0) is None


def test_missing_usage_for_a_limited_period_is_named() -> None:
    with pytest.raises(ValueError, match="usage for the week is needed"):
        check({Period.DAY: Usage(0, 0.0)}, QuotaLimits(images_per_week=1), Cost(1, 0.0), 0.0)


def test_negative_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="images_per_day must be 0 or more"):
        QuotaLimits(images_per_day=-1)
    with pytest.raises(ValueError, match="unknown quota limits"):
        QuotaLimits.from_mapping({"images_per_year": 1})
