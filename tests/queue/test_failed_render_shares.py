"""A failed render pays its member's place in the fair order the device time it used (its
quota is refunded whole all the same); one the engine refused before any step was reported is
charged nothing there: its start is taken back (real queue and SQLite, an instant engine)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import pytest

from bot.jobs.queue import JobQueue, Submission
from bot.jobs.queue.cancels import RunningBatch
from bot.jobs.queue.job_queue import _failure_seconds
from inference.types import (
    ProgressCallback,
    RenderedImage,
    RenderFailed,
    RenderInputError,
    RenderRequest,
    StepProgress,
)
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine
from tests.support.scheduler_finishes import noted_finishes
from tests.support.sinks import started_queue

GUILD = 5
WORKED_S = 0.3


@dataclass
class FailingEngine(InstantEngine):
    """Fails "late" prompts after ``WORKED_S`` of work, refuses "refused" ones at once, and
    "stepped" ones after a step and ``WORKED_S`` (as a /compare whose later cell names a LoRA
    that does not fit its model: the engine refuses it only at that cell's pipeline call)."""

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]:
        if "refused" in requests[0].prompt:
            raise RenderInputError("refused before any tensor")
        if "stepped" in requests[0].prompt:
            if progress is not None:
                progress(StepProgress(1, 2, 0.0))
            time.sleep(WORKED_S)
            raise RenderInputError("refused at a later cell")
        if "late" in requests[0].prompt:
            time.sleep(WORKED_S)
            raise RenderFailed("the render failed after some work")
        return super().render_batch(requests, progress, cancel)


async def test_a_failed_render_pays_its_time_and_one_refused_before_any_step_nothing(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Member 1's render fails after 0.3 s: the scheduler is told those 0.3 s (not left at
    its estimate of 0.16 s). Member 2's is refused before any work: told 0 s, it leaves no
    start behind (member 2 is not held as having started). Member 3's is refused after a
    step and 0.3 s: it pays them, refused or not (told 0 s, it was free to resubmit at the
    head of the line). All are refunded whole. No progress listener: steps count all the
    same."""
    finished = noted_finishes(monkeypatch)
    slots = [DeviceWorker("cpu", lambda _: FailingEngine())]
    journaling = JobQueue(conn, slots, tmp_path / "images")  # journaled first
    late = await journaling.submit(Submission("imagine", RenderRequest("late", steps=2), 1, GUILD))
    refused = await journaling.submit(
        Submission("imagine", RenderRequest("refused", steps=3), 2, GUILD)  # not batched
    )
    stepped = await journaling.submit(
        Submission("imagine", RenderRequest("stepped", steps=4), 3, GUILD)
    )
    queue, sink = await started_queue(conn, slots, tmp_path / "images")
    try:
        await sink.wait_for(3)
    finally:
        await queue.stop()  # its dispatchers have ended: every slot was released
    assert finished.keys() == {late, refused, stepped}
    for worked in (late, stepped):
        assert (told := finished[worked]) is not None and WORKED_S <= told < 2 * WORKED_S + 1
    assert finished[refused] == 0.0
    assert queue._scheduler.started_before(1) and queue._scheduler.started_before(3)
    assert not queue._scheduler.started_before(2)
    async with conn.execute("SELECT job_id FROM quota_ledger WHERE kind = 'refund'") as cursor:
        assert {row[0] for row in await cursor.fetchall()} == {late, refused, stepped}


@pytest.mark.parametrize(
    ("in_process", "steps_seen", "error", "told"),
    [
        (True, False, RenderInputError("refused"), 0.0),
        (True, True, RenderInputError("refused at a later cell"), 1.5),
        (False, False, RenderInputError("a worker refused it"), 0.0),
        # A worker's refusal after its steps: its device time is not known here, so the
        # estimate stands (never 0, nor the broker's wait).
        (False, True, RenderInputError("a worker refused a later cell"), None),
        (False, True, RenderFailed("a worker failed"), None),
    ],
)
def test_a_refusal_is_free_only_before_any_step_here_or_on_a_worker(
    in_process: bool, steps_seen: bool, error: Exception, told: float | None
) -> None:
    running = RunningBatch(("job",), in_process=in_process, steps_seen=steps_seen)
    assert _failure_seconds(error, running, waited_s=1.5) == told
