"""A picture that decodes to not-a-number values (an embedding whose finite numbers overflow the
text encoder) fails its own job, refunded and told why, through the queue and the real engine
on a tiny model; the member batched with it gets their picture from that batch, rendered once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
import torch
from safetensors.torch import save_file

from bot.jobs.queue import FinishedJob, JobQueue, Submission, job_queue
from bot.policy.quota import Period, period_start
from db import jobs as journal
from db import quotas as ledger
from inference.engine import Engine
from inference.tiny import TINY_TEXT_HIDDEN
from inference.types import RenderedImage, RenderRequest
from inference.worker import DeviceWorker
from tests.support.sinks import RecordingSink, started_queue

GUILD, MEMBER, OTHER = 5, 7, 8


def request(prompt: str) -> RenderRequest:
    return RenderRequest(prompt, seed=1, steps=2, width=64, height=64)


@pytest.fixture
def engine(tiny_models_dir: Path, tmp_path: Path) -> Engine:
    """The tiny model, with an embedding ``hugeemb`` whose finite values overflow: a prompt
    that uses it renders blank."""
    models = tmp_path / "models"
    (models / "embeddings").mkdir(parents=True)
    (models / "tiny").symlink_to(tiny_models_dir / "tiny", target_is_directory=True)
    overflowing = torch.full((1, TINY_TEXT_HIDDEN), 1e20)
    save_file({"emb_params": overflowing}, str(models / "embeddings" / "hugeemb.safetensors"))
    return Engine(models, "cpu")


# Renders alone first (another size), so the jobs submitted after it wait and batch together.
BUSY = RenderRequest("busy", seed=9, steps=2, width=96, height=96)


async def test_a_blank_picture_fails_its_job_alone_refunded_and_told_why(
    conn: aiosqlite.Connection,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await ledger.set_limits(conn, ledger.LimitScope.GUILD, GUILD, GUILD, {"images_per_day": 3}, 0)
    calls: list[list[str]] = []  # each render's prompts, in order
    render, render_batch = engine.render, engine.render_batch

    def render_alone(request: RenderRequest, *rest: Any) -> list[RenderedImage]:
        calls.append([request.prompt])
        return render(request, *rest)

    def render_together(requests: Sequence[RenderRequest], *rest: Any) -> list[list[RenderedImage]]:
        calls.append([request.prompt for request in requests])
        return render_batch(requests, *rest)

    monkeypatch.setattr(engine, "render", render_alone)
    monkeypatch.setattr(engine, "render_batch", render_together)
    # Every render measured as 10 device seconds: the batch's shares can be read exactly.
    monkeypatch.setattr(job_queue, "_device_seconds", lambda _results, _waited: 10.0)
    worker = DeviceWorker("cpu", lambda _: engine)
    queue, sink = await started_queue(conn, [worker], tmp_path / "images")
    try:
        await queue.submit(Submission("imagine", BUSY, 9))
        blank_id = await queue.submit(
            Submission("imagine", request("a cat hugeemb"), MEMBER, GUILD)
        )
        clean_id = await queue.submit(Submission("imagine", request("a cat"), OTHER, GUILD))
        await sink.wait_for(3)
    finally:
        await queue.stop()
    ended = {job.job_id: job for job in sink.delivered}
    assert len(sink.delivered) == 3  # each job delivered once
    # One call for both; neither rendered again alone (the blank one would come out blank).
    assert [sorted(prompts) for prompts in calls] == [["busy"], ["a cat", "a cat hugeemb"]]
    assert ended[clean_id].succeeded and len(ended[clean_id].images) == 1
    assert not ended[blank_id].succeeded
    assert ended[blank_id].error == (
        "a picture came out blank (not-a-number or infinite values): a LoRA or embedding it "
        f"uses may be broken (embedding hugeemb); try without them; reference {blank_id}"
    )
    # Batched: one start for both.
    started = {(await journal.get_job(conn, job_id)).started_at for job_id in (blank_id, clean_id)}  # type: ignore[union-attr]
    assert len(started) == 1
    today = period_start(Period.DAY, time.time())
    assert (await ledger.usage(conn, MEMBER, GUILD, today)) == ledger.Usage(0, 0.0)  # refunded
    # The clean job pays its own half of the call; the blank one's half is charged to no one.
    assert (await ledger.usage(conn, OTHER, GUILD, today)) == ledger.Usage(1, 5.0)


class HeldFailureNotices(RecordingSink):
    """Posts a failed job's notice only once ``release`` is set (Discord slow to take it,
    rate-limited, or answering 5xx that are tried again)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        super().__init__(conn)
        self.release = asyncio.Event()

    async def deliver(self, job: FinishedJob) -> int | None:
        if not job.succeeded:
            await self.release.wait()
        return await super().deliver(job)


async def test_a_blank_job_s_notice_held_holds_back_no_partner_s_picture(
    conn: aiosqlite.Connection, engine: Engine, tmp_path: Path
) -> None:
    """The blank job's failure is recorded with its partners' results and delivered with
    them, each in its lane: one member's notice never holds another's picture (R_B2 F2)."""
    queue = JobQueue(conn, [DeviceWorker("cpu", lambda _: engine)], tmp_path / "images")
    sink = HeldFailureNotices(conn)
    queue.set_sink(sink)
    await queue.start()
    try:
        busy_id = await queue.submit(Submission("imagine", BUSY, 9))
        blank_id = await queue.submit(
            Submission("imagine", request("a cat hugeemb"), MEMBER, GUILD)
        )
        clean_id = await queue.submit(Submission("imagine", request("a cat"), OTHER, GUILD))
        # While the blank job's notice is held: with it posted inside the batch's recording,
        # the clean picture waited for it.
        await sink.wait_for(2)
        assert {job.job_id for job in sink.delivered} == {busy_id, clean_id}
        sink.release.set()
        await sink.wait_for(3)
    finally:
        sink.release.set()
        await queue.stop()
    blank = sink.delivered[2]
    assert (blank.job_id, blank.succeeded) == (blank_id, False)
    assert blank.error is not None and blank.error.startswith("a picture came out blank")
