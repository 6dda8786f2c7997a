"""A limit of 0 is how admins stop a member: it refuses every job, a free --relax one too,
while any other limit still lets free jobs through once it is spent, or spent past (measured
GPU-seconds, a limit lowered)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bot.policy.quota import Cost, Period, QuotaLimits, check
from db.quotas import Usage

NOW = 1_767_000_000.0
FREE = Cost(images=0, gpu_seconds=0.0)


@given(st.integers(min_value=0, max_value=1000), st.sampled_from(list(Period)))
def test_a_zero_limit_refuses_even_a_free_job(used: int, period: Period) -> None:
    limits = QuotaLimits(**{f"images_per_{period.value}": 0})
    refusal = check(dict.fromkeys(Period, Usage(used, 0.0)), limits, FREE, NOW)
    assert refusal is not None and refusal.period is period
    assert refusal.message.startswith(f"You are allowed no images per {period.value} here")


@given(
    st.integers(min_value=1, max_value=1000).flatmap(
        lambda limit: st.tuples(st.just(limit), st.integers(min_value=0, max_value=3 * limit))
    )
)
def test_a_spent_limit_still_takes_a_free_job(limit_and_used: tuple[int, int]) -> None:
    limit, used = limit_and_used
    limits = QuotaLimits(images_per_day=limit, gpu_seconds_per_day=float(limit))
    assert check(dict.fromkeys(Period, Usage(used, float(used))), limits, FREE, NOW) is None


def test_a_paid_job_over_a_zero_limit_is_not_told_to_ask_for_less() -> None:
    refusal = check(
        dict.fromkeys(Period, Usage(0, 0.0)),
        QuotaLimits(images_per_day=0),
        Cost(images=1, gpu_seconds=1.0),
        NOW,
    )
    assert refusal is not None
    assert refusal.message.startswith("You are allowed no images per day here")
    assert "ask for less" not in refusal.message
