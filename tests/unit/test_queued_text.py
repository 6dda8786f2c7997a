"""A queued job's first message says something true of when it should be done: an estimate under
a second (a small job with nothing ahead) is "done in a moment", never "about 0 s"."""

from __future__ import annotations

from bot.jobs.queue import JobState
from cogs.results.progress import queued_text
from db.jobs import JobStatus


def queued(position: int, eta_s: float | None, *, at_least: bool = False) -> JobState:
    return JobState(JobStatus.QUEUED, position=position, eta_s=eta_s, at_least=at_least)


def test_a_wait_under_a_second_reads_done_in_a_moment() -> None:
    assert queued_text(queued(0, 0.0)) == "⏳ Queued — position 1, done in a moment."
    assert queued_text(queued(0, 0.4)) == "⏳ Queued — position 1, done in a moment."


def test_a_longer_or_unknown_wait_reads_as_before() -> None:
    assert queued_text(queued(2, 40.2)) == "⏳ Queued — position 3, done in about 40 s."
    assert queued_text(queued(1000, 900.0, at_least=True)) == (
        "⏳ Queued — position over 1000, done in at least 900 s."
    )
    # A lower bound is rounded down: 899.6 s is not "at least 900 s".
    assert queued(1000, 899.6, at_least=True).done_in() == "done in at least 899 s"
    assert queued_text(queued(0, None)) == "⏳ Queued — position 1."
