"""Limits read back from the ledger's rows (``QuotaLimits.from_mapping``) and merged across a
member's roles keep every limit: a GPU-seconds limit an admin set must not read as unlimited."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bot.policy.quota import QuotaLimits, most_generous

counts = st.none() | st.integers(min_value=0, max_value=10_000)
seconds = st.none() | st.floats(min_value=0, max_value=1e6, allow_nan=False)
limits = st.builds(
    QuotaLimits,
    images_per_day=counts,
    images_per_week=counts,
    images_per_month=counts,
    gpu_seconds_per_day=seconds,
    gpu_seconds_per_week=seconds,
    gpu_seconds_per_month=seconds,
)


@given(limits)
def test_limits_read_from_their_columns_are_the_limits_written(written: QuotaLimits) -> None:
    assert QuotaLimits.from_mapping(written.as_mapping()) == written


def test_the_most_generous_role_wins_for_gpu_seconds_too() -> None:
    roles = [
        QuotaLimits(gpu_seconds_per_day=60.0, images_per_week=10),
        QuotaLimits(gpu_seconds_per_day=600.0, gpu_seconds_per_month=5000.0),
    ]
    # Per limit: the largest number, and a limit one role leaves unset (unlimited) stays unset.
    assert most_generous(roles) == QuotaLimits(gpu_seconds_per_day=600.0)
