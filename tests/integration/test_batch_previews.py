"""Members batched together (other servers, a private job) see only their own pictures in the
live previews, with the real engine on a tiny model: a txt2img batch's one pipeline call, and
an img2img batch rendered one request at a time."""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path

import aiosqlite
from PIL import Image

from bot.jobs.queue import Submission
from db import jobs as journal
from inference.engine import Engine
from inference.types import RenderRequest, StepProgress
from inference.worker import DeviceWorker
from tests.support.sinks import started_queue

# Renders alone first (another size), so the two jobs after it wait and batch together.
BUSY = Submission("imagine", RenderRequest("busy", seed=9, steps=2, width=96, height=96), 9)


async def previews_of_a_batch(
    conn: aiosqlite.Connection,
    models_dir: Path,
    images_dir: Path,
    private_job: RenderRequest,
    public_job: RenderRequest,
) -> list[set[tuple[int, int]]]:
    """The sizes of the previews each of the two jobs received: the first a private job of
    server 111, the second a public one of server 222."""
    worker = DeviceWorker("cpu", lambda device: Engine(models_dir, device, preview_interval_s=0))
    queue, sink = await started_queue(conn, [worker], images_dir)
    previews: dict[str, set[tuple[int, int]]] = defaultdict(set)

    def on_progress(job_id: str, step: StepProgress) -> None:
        if step.preview is not None:
            with Image.open(io.BytesIO(step.preview)) as preview:
                previews[job_id].add(preview.size)

    queue.set_progress_listener(on_progress)
    try:
        await queue.submit(BUSY)
        ids = [
            await queue.submit(Submission("imagine", private_job, 1, 111, private=True)),
            await queue.submit(Submission("imagine", public_job, 2, 222)),
        ]
        await sink.wait_for(3)
    finally:
        await queue.stop()
    assert all(job.succeeded for job in sink.delivered)
    started = {(await journal.get_job(conn, job_id)).started_at for job_id in ids}  # type: ignore[union-attr]
    assert len(started) == 1  # rendered as one batch
    return [previews[job_id] for job_id in ids]


async def test_a_txt2img_batchs_previews_show_each_job_its_own_pictures(
    conn: aiosqlite.Connection, tiny_models_dir: Path, tmp_path: Path
) -> None:
    def request(prompt: str, seed: int) -> RenderRequest:
        return RenderRequest(prompt, seed=seed, steps=3, width=64, height=64, count=2)

    private, public = await previews_of_a_batch(
        conn, tiny_models_dir, tmp_path / "images", request("a cat", 1), request("a dog", 2)
    )
    # Each job's own two pictures side by side; the batch's four made a 2x2 grid (256x256).
    assert private == public == {(256, 128)}


async def test_an_img2img_batchs_previews_show_each_job_its_own_picture(
    conn: aiosqlite.Connection, tiny_models_dir: Path, tmp_path: Path
) -> None:
    def request(prompt: str, size: tuple[int, int]) -> RenderRequest:
        # Sized by its own picture: jobs of differently sized pictures share a batch.
        init = tmp_path / "inputs" / f"{prompt}.png"  # where the bot keeps uploads
        init.parent.mkdir(exist_ok=True)
        Image.new("RGB", size, "gray").save(init)
        return RenderRequest(prompt, seed=1, steps=4, mode="img2img", init_image=str(init))

    private, public = await previews_of_a_batch(
        conn,
        tiny_models_dir,
        tmp_path / "images",
        request("a cat", (64, 64)),
        request("a dog", (64, 128)),
    )
    assert private == {(256, 256)}
    assert public == {(128, 256)}
