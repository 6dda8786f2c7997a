"""Picture inputs travel with the job: a worker renders img2img, inpaint, ControlNet and upscale
jobs without seeing the bot's files, and never opens a file that a message names."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import nats as nats_client
import numpy as np
import pytest
from PIL import Image, ImageDraw

from bot.jobs.broker.client import BrokerClient, BrokerConfig
from bot.jobs.broker.wire import (
    INLINE_IMAGES_MAX_BYTES,
    RESULTS_STREAM,
    Outcome,
    ResultMessage,
    headers_for_job,
    job_subject,
    result_subject,
)
from inference.types import RenderedImage, RenderRequest
from tests.distributed.nats_server import NatsServer, python_process, read_until
from tests.distributed.test_broker_images import stored_object_names
from tests.distributed.transports import NatsTransport
from tests.support.engines import InstantEngine

# The bot's data folder, relative as EASEL_DATA_DIR's default is: the worker runs elsewhere.
BOT_INPUTS = Path("data") / "inputs"
# Random RGB barely compresses: a PNG of this side is over the inline budget, so it goes
# through the object store.
NOISE_SIDE = 512


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


@pytest.fixture
async def remote_worker(
    nats_server: NatsServer, tiny_models_dir: Path, tmp_path: Path
) -> AsyncIterator[None]:
    """A worker process with the tiny models, in a folder of its own (not the bot's)."""
    (tmp_path / "worker").mkdir()
    worker = await python_process(
        "-m",
        "tests.distributed.worker_main",
        nats_server.url,
        "--models",
        str(tiny_models_dir),
        cwd=tmp_path / "worker",
    )
    try:
        await read_until(worker, "serving", timeout_s=120)
        yield
    finally:
        worker.terminate()
        await worker.wait()


@pytest.fixture
def bot_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bot's working folder, with a member's upload and a mask in ``data/inputs``."""
    (tmp_path / "bot" / BOT_INPUTS).mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "bot")
    init = Image.new("RGB", (96, 80), (30, 120, 200))
    ImageDraw.Draw(init).ellipse((10, 10, 60, 70), fill=(250, 200, 20))
    init.save(BOT_INPUTS / "upload.png")
    mask = Image.new("L", (96, 80), 0)
    ImageDraw.Draw(mask).rectangle((40, 24, 63, 47), fill=255)
    mask.save(BOT_INPUTS / "mask.png")
    noise = Image.frombytes("RGB", (NOISE_SIDE, NOISE_SIDE), os.urandom(NOISE_SIDE**2 * 3))
    noise.save(BOT_INPUTS / "large.png")
    return BOT_INPUTS


async def test_pictures_travel_with_the_job_to_a_worker_that_cannot_see_the_bot_s_files(
    nats_server: NatsServer, remote_worker: None, bot_inputs: Path, tiny_models_dir: Path
) -> None:
    from inference.engine import Engine

    vary = RenderRequest(
        "a cat",
        seed=4,
        steps=3,
        width=64,
        height=64,
        model="tiny",
        mode="img2img",
        init_image=str(bot_inputs / "upload.png"),
        denoising_strength=0.5,
    )
    inpaint = dataclasses.replace(vary, mode="inpaint", mask_image=str(bot_inputs / "mask.png"))
    control_unit = {"module": "canny", "image": str(bot_inputs / "upload.png"), "weight": 1.0}
    controlled = dataclasses.replace(
        vary, mode="txt2img", init_image=None, options={"controlnet": [control_unit]}
    )
    upscale = RenderRequest(
        "",
        mode="upscale",
        init_image=str(bot_inputs / "large.png"),
        options={"upscale_factor": 2, "upscaler": "Lanczos"},
    )
    assert (bot_inputs / "large.png").stat().st_size > INLINE_IMAGES_MAX_BYTES
    client = await BrokerClient.open(BrokerConfig(nats_server.url))
    try:
        remote: dict[str, list[RenderedImage]] = {}
        for job_id, request in (
            ("job-vary", vary),
            ("job-inpaint", inpaint),
            ("job-control", controlled),
        ):
            remote[job_id] = await client.render(job_id, request, None, None)
        remote["job-upscale"] = await client.render("job-upscale", upscale, None, None)
    finally:
        await client.close()
    local = Engine(tiny_models_dir)
    for job_id, request in (
        ("job-vary", vary),
        ("job-inpaint", inpaint),
        ("job-control", controlled),
        ("job-upscale", upscale),
    ):
        [expected] = await asyncio.to_thread(local.render, request)
        [image] = remote[job_id]
        assert np.array_equal(pixels(image.png), pixels(expected.png)), job_id
    assert (remote["job-upscale"][0].width, remote["job-upscale"][0].height) == (1024, 1024)
    # The large input went through the object store, and was removed once the job was done.
    (left,) = await stored_object_names(nats_server.url)
    assert left.startswith("job-upscale/1-") and left.endswith("-0.png")  # the result's picture


async def stored_result(url: str, job_id: str, timeout_s: float = 10.0) -> ResultMessage:
    """The result a worker stored for ``job_id`` (polled: a forged job has no bot waiting)."""
    observer = await nats_client.connect(url)
    js = observer.jetstream()
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    stored = await js.get_last_msg(RESULTS_STREAM, result_subject(job_id))
                except nats_client.js.errors.NotFoundError:
                    await asyncio.sleep(0.05)
                    continue
                return ResultMessage.decode(stored.data or b"")
    finally:
        await observer.close()


async def test_a_worker_never_opens_a_file_a_message_names(
    nats: NatsTransport, tmp_path: Path
) -> None:
    engine = InstantEngine()
    nats.start_worker(engine)
    client = await nats.client()
    await client.render("job-first", RenderRequest("a cat", seed=1), None, None)
    bot_file = tmp_path / "bot-upload.png"
    Image.new("RGB", (64, 64), "white").save(bot_file)
    forger = await nats_client.connect(nats.server.url)
    js = forger.jetstream()
    forged = {
        "forged-passwd": RenderRequest("a cat", mode="img2img", init_image="/etc/passwd"),
        "forged-bot-file": RenderRequest(
            "a cat", mode="inpaint", init_image=str(bot_file), mask_image=str(bot_file)
        ),
        "forged-control": RenderRequest(
            "a cat", options={"controlnet": [{"module": "none", "image": "/etc/passwd"}]}
        ),
        "forged-image-prompt": RenderRequest(
            "a cat", options={"ipadapter": {"images": [str(bot_file), "/etc/passwd"]}}
        ),
    }
    for job_id, request in forged.items():
        # As any publisher on the broker could send it, in the shape the bot's messages have.
        body = json.dumps({"job_id": job_id, "request": request.to_json()}).encode()
        await js.publish(job_subject(None), body, headers=headers_for_job(job_id))
    # Not a job at all: dropped, and the worker serves on.
    await js.publish(job_subject(None), b"not a job", headers=headers_for_job("garbage"))
    await forger.close()
    for job_id in forged:
        result = await stored_result(nats.server.url, job_id)
        assert result.outcome is Outcome.INVALID
        assert result.error is not None and "never opens a path a message names" in result.error
    (after,) = await client.render("job-after", RenderRequest("a dog", seed=2), None, None)
    assert after.seed == 2
    assert [request.prompt for request in engine.rendered] == ["a cat", "a dog"]
