"""A picture that decodes to not-a-number values (an embedding whose finite numbers overflow the
text encoder) fails its own job, refunded and told why, through the queue and the real engine
on a tiny model; the member batched with it gets their picture."""

from __future__ import annotations

import time
from pathlib import Path

import aiosqlite
import torch
from safetensors.torch import save_file

from bot.jobs.queue import Submission
from bot.policy.quota import Period, period_start
from db import jobs as journal
from db import quotas as ledger
from inference.engine import Engine
from inference.tiny import TINY_TEXT_HIDDEN
from inference.types import RenderRequest
from inference.worker import DeviceWorker
from tests.support.sinks import started_queue

GUILD, MEMBER, OTHER = 5, 7, 8


def request(prompt: str) -> RenderRequest:
    return RenderRequest(prompt, seed=1, steps=2, width=64, height=64)


async def test_a_blank_picture_fails_its_job_alone_refunded_and_told_why(
    conn: aiosqlite.Connection, tiny_models_dir: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    (models / "embeddings").mkdir(parents=True)
    (models / "tiny").symlink_to(tiny_models_dir / "tiny", target_is_directory=True)
    overflowing = torch.full((1, TINY_TEXT_HIDDEN), 1e20)
    save_file({"emb_params": overflowing}, str(models / "embeddings" / "hugeemb.safetensors"))
    await ledger.set_limits(conn, ledger.LimitScope.GUILD, GUILD, GUILD, {"images_per_day": 3}, 0)
    worker = DeviceWorker("cpu", lambda device: Engine(models, device))
    queue, sink = await started_queue(conn, [worker], tmp_path / "images")
    try:
        # Renders alone first (another size), so the two jobs after it wait and batch together.
        busy = RenderRequest("busy", seed=9, steps=2, width=96, height=96)
        await queue.submit(Submission("imagine", busy, 9))
        blank_id = await queue.submit(
            Submission("imagine", request("a cat hugeemb"), MEMBER, GUILD)
        )
        clean_id = await queue.submit(Submission("imagine", request("a cat"), OTHER, GUILD))
        await sink.wait_for(3)
    finally:
        await queue.stop()
    ended = {job.job_id: job for job in sink.delivered}
    assert ended[clean_id].succeeded and len(ended[clean_id].images) == 1
    assert not ended[blank_id].succeeded
    assert ended[blank_id].error == (
        "a picture came out blank (not-a-number or infinite values): a LoRA or embedding it "
        f"uses may be broken (embedding hugeemb); try without them; reference {blank_id}"
    )
    # Batched: one start for both (the batch failed, then each rendered alone).
    started = {(await journal.get_job(conn, job_id)).started_at for job_id in (blank_id, clean_id)}  # type: ignore[union-attr]
    assert len(started) == 1
    today = period_start(Period.DAY, time.time())
    assert (await ledger.usage(conn, MEMBER, GUILD, today)).images == 0  # refunded
    assert (await ledger.usage(conn, OTHER, GUILD, today)).images == 1
