"""A result whose seeds the journal's integers cannot keep (a version 1 worker's face pass or
fast upscale reading a picture's text's 64-bit or negative seed) is stored and posted with
the request's seeds, not failed as unstorable (real queue and SQLite, an instant engine)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import aiosqlite

from bot.jobs.queue import Submission
from db import jobs as journal
from inference.types import RenderedImage, RenderRequest
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine
from tests.support.sinks import started_queue

# What a picture's text may say, past what SQLite's signed 64-bit integers hold, and below 0.
WRITTEN_SEEDS = (2**64 - 1, -7)


@dataclass
class TextSeedEngine(InstantEngine):
    """Hands its pictures back with ``WRITTEN_SEEDS`` as their seeds."""

    @staticmethod
    def _pictures(request: RenderRequest) -> list[RenderedImage]:
        pictures = InstantEngine._pictures(request)
        return [
            replace(image, seed=seed) for image, seed in zip(pictures, WRITTEN_SEEDS, strict=True)
        ]


async def test_a_result_seed_the_journal_cannot_keep_is_stored_as_the_request_s(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    slots = [DeviceWorker("cpu", lambda _: TextSeedEngine())]
    queue, sink = await started_queue(conn, slots, tmp_path / "images")
    try:
        request = RenderRequest("a fox", seed=41, steps=1, count=2)
        job_id = await queue.submit(Submission("imagine", request, 1, 5))
        await sink.wait_for(1)
    finally:
        await queue.stop()
    [delivered] = sink.delivered
    assert delivered.succeeded, delivered.error
    assert [image.seed for image in delivered.images] == [41, 42]
    job = await journal.get_job(conn, job_id)
    assert job is not None and job.status == "done"
