"""The device never waits for CPU work: a render hands its pictures back before their PNGs
are encoded, and a slot starts its next batch while the last one is stored and delivered."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from pathlib import Path

import aiosqlite
import pytest
from PIL import Image

import inference.passes.output as output_module
from bot.jobs.queue import FinishedJob, JobQueue, Submission
from inference.engine import Engine
from inference.infotext import infotext_from_png, png_with_infotext
from inference.types import RenderedImage, RenderRequest, StepProgress
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine

# Far longer than either render takes; the old code waited out the encoder or the delivery.
NEVER_S = 30


async def test_a_render_returns_before_its_png_is_encoded_and_off_the_device_thread(
    tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoding = threading.Event()
    release = threading.Event()
    encoder_threads: list[str] = []

    def slow_png(image: Image.Image, infotext: str) -> bytes:
        encoder_threads.append(threading.current_thread().name)
        encoding.set()
        release.wait(2 * NEVER_S)
        return png_with_infotext(image, infotext)

    monkeypatch.setattr(output_module, "png_with_infotext", slow_png)
    worker = DeviceWorker("cpu", lambda device: Engine(tiny_models_dir, device))
    request = RenderRequest("a cat", seed=3, steps=2, width=64, height=64)
    try:
        async with asyncio.timeout(NEVER_S):  # the old engine encoded on the device thread
            [image] = await worker.render(request)
        assert await asyncio.to_thread(encoding.wait, NEVER_S)
        assert not release.is_set()  # the encoder is still holding the PNG back
    finally:
        release.set()
        await asyncio.to_thread(worker.close)
    png = await asyncio.to_thread(lambda: image.png)
    assert infotext_from_png(png) == image.infotext
    assert encoder_threads and not any(name.startswith("easel-cpu") for name in encoder_threads)


async def test_awaiting_a_png_still_encoding_leaves_the_event_loop_free() -> None:
    encoded: Future[bytes] = Future()
    image = RenderedImage(encoded, 1, "infotext", 8, 8)
    threading.Timer(0.5, encoded.set_result, [b"png"]).start()  # an encoder finishing late
    waiting = asyncio.ensure_future(image.png_ready())
    await asyncio.sleep(0.05)  # the loop runs on meanwhile
    assert not waiting.done()
    assert await asyncio.wait_for(waiting, NEVER_S) == b"png" == image.png


class HeldSink:
    """Holds every delivery until released, recording what arrives."""

    def __init__(self) -> None:
        self.delivered: list[FinishedJob] = []
        self.release = asyncio.Event()
        self.all_arrived = asyncio.Event()

    async def deliver(self, job: FinishedJob) -> int | None:
        await self.release.wait()
        self.delivered.append(job)
        if len(self.delivered) == 2:
            self.all_arrived.set()
        return None


async def test_a_slot_renders_the_next_job_while_the_last_one_is_delivered(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    engine = InstantEngine()
    queue = JobQueue(conn, [DeviceWorker("cpu", lambda _: engine)], tmp_path / "images")
    sink = HeldSink()
    queue.set_sink(sink)
    rendering: set[str] = set()
    second_rendering = asyncio.Event()

    def on_step(job_id: str, _step: StepProgress) -> None:
        rendering.add(job_id)
        if len(rendering) == 2:
            second_rendering.set()

    queue.set_progress_listener(on_step)
    await queue.start()
    try:
        for user_id, seed in ((1, 10), (2, 20)):  # two members: never batched together
            request = RenderRequest(f"job {seed}", seed=seed, steps=1, width=64, height=64)
            await queue.submit(Submission("imagine", request, user_id=user_id))
            await asyncio.sleep(0.5)  # past the batch window: two separate renders
        # The old queue delivered the first job before it rendered the second.
        await asyncio.wait_for(second_rendering.wait(), NEVER_S)
        assert sink.delivered == []
        sink.release.set()
        await asyncio.wait_for(sink.all_arrived.wait(), NEVER_S)
    finally:
        sink.release.set()
        await queue.stop()
    assert [job.request.seed for job in sink.delivered] == [10, 20]
    assert all(job.succeeded for job in sink.delivered)
