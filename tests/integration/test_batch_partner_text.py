"""Jobs of two servers share one pipeline call (real SQLite, real tiny renders): each picture's
text, in its PNG as posted, says its own job's seed and flags, never its batch partner's; the
call runs as its first job's request."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bot.jobs.queue import FinishedJob, JobQueue, Submission
from inference.engine import Engine
from inference.infotext import InfotextValue, infotext_from_png, parse_infotext
from inference.tiny import write_tiny_model
from inference.types import RenderedImage, RenderRequest
from inference.worker import DeviceWorker
from tests.support.sinks import started_queue

PRIVATE_GUILD, PUBLIC_GUILD = 100, 200


async def test_a_picture_batched_with_another_servers_job_says_its_own_seed_and_flags(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    write_tiny_model(models / "tiny", family="sd15", seed=0)
    stopped = JobQueue(conn, [], tmp_path / "images")  # both journaled before any device picks
    # A private job with --chaos 60 and the higher seed; a public one of another server, plain.
    private_id = await stopped.submit(
        Submission(
            "imagine",
            tiny_request("a red fox, blue sky, tree", seed=50, options={"chaos": 60}),
            user_id=1,
            guild_id=PRIVATE_GUILD,
            private=True,
        )
    )
    public_id = await stopped.submit(
        Submission("imagine", tiny_request("a blue bird, grass", seed=10), 2, PUBLIC_GUILD)
    )

    engine = Engine(models, device="cpu")
    calls: list[list[int]] = []
    render_batch = engine.render_batch

    def recorded(requests: Sequence[RenderRequest], *rest: Any) -> list[list[RenderedImage]]:
        calls.append([request.seed for request in requests])
        return render_batch(requests, *rest)

    monkeypatch.setattr(engine, "render_batch", recorded)
    queue, sink = await started_queue(
        conn, [DeviceWorker("cpu", lambda _: engine)], tmp_path / "images"
    )
    try:
        await sink.wait_for(2)
    finally:
        await queue.stop()
    assert [sorted(seeds) for seeds in calls] == [[10, 50]]  # one call, whichever leads it
    finished = {job.job_id: job for job in sink.delivered}
    assert all(job.succeeded for job in finished.values())
    written = {job_id: posted_params(finished[job_id]) for job_id in (private_id, public_id)}
    assert (written[private_id]["Seed"], written[private_id]["Chaos"]) == (50, 60)
    assert written[public_id]["Seed"] == 10  # its own, not counted from the call's first
    assert "Chaos" not in written[public_id]


def tiny_request(
    prompt: str, *, seed: int, options: dict[str, object] | None = None
) -> RenderRequest:
    return RenderRequest(
        prompt, width=64, height=64, steps=3, model="tiny", seed=seed, options=options or {}
    )


def posted_params(job: FinishedJob) -> dict[str, InfotextValue]:
    """The parameters its first picture's PNG says, as posted."""
    text = infotext_from_png(job.images[0].path.read_bytes())
    assert text is not None
    return parse_infotext(text)[2]
