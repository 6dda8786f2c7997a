"""What the fair scheduler is told of each job's end: the measured seconds it is paid by."""

from __future__ import annotations

import pytest

from bot.jobs.scheduler import FairScheduler


def noted_finishes(monkeypatch: pytest.MonkeyPatch) -> dict[str, float | None]:
    """From now on, each ``FairScheduler.finish`` still runs, and is noted here: the job's
    id and the seconds it was measured (None: none, its estimate stands)."""
    finished: dict[str, float | None] = {}
    finish = FairScheduler.finish

    def noting(self: FairScheduler, job_id: str, used_s: float | None = None) -> None:
        finished[job_id] = used_s
        finish(self, job_id, used_s)

    monkeypatch.setattr(FairScheduler, "finish", noting)
    return finished
