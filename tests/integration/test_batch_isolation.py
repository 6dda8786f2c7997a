"""One job's failure in a batch fails that job alone: the queue renders the rest again, alone."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite

from bot.jobs.queue import Submission
from bot.jobs.queue.values import INTERNAL_FAILURE
from db import jobs as journal
from inference.types import ProgressCallback, RenderedImage, RenderRequest
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine
from tests.support.sinks import started_queue


@dataclass
class CountingEngine(InstantEngine):
    """Also records the size of every call, failed ones included."""

    attempts: list[int] = field(default_factory=list)

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]:
        self.attempts.append(len(requests))
        return super().render_batch(requests, progress, cancel)


def submission(prompt: str, user_id: int, **request: object) -> Submission:
    return Submission(
        kind="imagine",
        request=RenderRequest(prompt, seed=user_id, steps=2, **request),  # type: ignore[arg-type]
        user_id=user_id,
    )


async def test_a_failing_job_fails_alone_and_its_batch_partners_render(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    engine = CountingEngine(seconds=0.3, fail_on="boom")
    queue, sink = await started_queue(
        conn, [DeviceWorker("cpu", lambda _: engine)], tmp_path / "images"
    )
    # The device is busy with another size, so the three that follow wait and batch together.
    await queue.submit(submission("dog", 1, width=128, height=128))
    ids = {
        prompt: await queue.submit(submission(prompt, user))
        for user, prompt in enumerate(["a cat", "boom", "a fox"], start=2)
    }
    await sink.wait_for(4)
    await queue.stop()

    outcome = {job.request.prompt: job for job in sink.delivered}
    assert outcome["a cat"].succeeded and outcome["a fox"].succeeded
    assert not outcome["boom"].succeeded
    assert outcome["boom"].error == f"{INTERNAL_FAILURE}; reference {ids['boom']}"
    # The batch of three failed; then each of its jobs rendered alone.
    assert engine.attempts == [1, 3, 1, 1, 1]
    for prompt in ("a cat", "a fox"):
        record = await journal.get_job(conn, ids[prompt])
        assert record is not None and record.status is journal.JobStatus.DONE
        assert record.error is None
