"""Least privilege on the broker: the bot believes only what a worker given the job sent."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import re
import time
from pathlib import Path

import aiosqlite
import nats as nats_client
import pytest
from PIL import Image

from bot.jobs.broker.client import RemoteRenderFailed
from bot.jobs.broker.wire import (
    IMAGES_BUCKET,
    JOBS_STREAM,
    TAG_HEADER,
    ImageRef,
    JobMessage,
    Outcome,
    ResultMessage,
    encode_progress,
    job_subject,
    progress_subject,
    result_subject,
    tag,
)
from bot.jobs.queue import Submission
from bot.policy.quota import Period, period_start
from db import jobs as journal
from db import quotas as ledger
from inference.types import RenderedImage, RenderInputError, RenderRequest, StepProgress
from tests.conftest import ErrorLogs
from tests.distributed.transports import NatsTransport
from tests.support.engines import InstantEngine
from tests.support.sinks import started_queue

FORGED_PNG = b"\x89PNG forged"


def png_of_size(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


GENUINE_PNG = png_of_size(8, 8)


async def published_job(js: nats_client.js.JetStreamContext) -> JobMessage:
    """The job message a worker would be given (the one waiting in the stream)."""
    async with asyncio.timeout(5):
        while True:
            try:
                stored = await js.get_last_msg(JOBS_STREAM, job_subject(None))
                return JobMessage.decode(stored.data or b"")
            except nats_client.js.errors.NotFoundError:
                await asyncio.sleep(0.05)


async def test_results_and_previews_not_tagged_with_the_jobs_secret_are_dropped(
    nats: NatsTransport, caplog: pytest.LogCaptureFixture
) -> None:
    client = await nats.client()
    steps: list[StepProgress] = []
    render = asyncio.create_task(
        client.render("job-x", RenderRequest("a cat", seed=4), steps.append, None)
    )
    # No worker runs: whoever publishes here holds the broker's credentials but not the job.
    forger = await nats_client.connect(nats.server.url)
    js = forger.jetstream()
    job = await published_job(js)
    forged = ResultMessage(
        "job-x", Outcome.DONE, "forger", 1, (ImageRef(4, "forged", 8, 8, png=FORGED_PNG),)
    ).encode()
    preview = encode_progress(StepProgress(1, 5, 0.1, FORGED_PNG))
    given_another_job = client.job_secret("job-y")  # a worker given job-y knows this one
    with caplog.at_level(logging.WARNING, logger="bot.jobs.broker.client"):
        await forger.publish(progress_subject("job-x"), preview)
        await js.publish(result_subject("job-x"), forged)  # no tag: also an older worker's
        await js.publish(
            result_subject("job-x"), forged, headers={TAG_HEADER: tag(given_another_job, forged)}
        )
        await asyncio.sleep(1.0)  # past three rechecks of the stored (forged) result
        assert not render.done() and steps == []
        dropped = [r for r in caplog.records if "without a valid tag dropped" in r.getMessage()]
        assert len(dropped) == 1 and "a cat" not in caplog.text
        # The worker that was given the job answers with the message's secret: believed.
        await forger.publish(
            progress_subject("job-x"), preview, headers={TAG_HEADER: tag(job.secret, preview)}
        )
        genuine = ResultMessage(
            "job-x", Outcome.DONE, "worker", 1, (ImageRef(4, "genuine", 8, 8, png=GENUINE_PNG),)
        ).encode()
        await js.publish(
            result_subject("job-x"), genuine, headers={TAG_HEADER: tag(job.secret, genuine)}
        )
        async with asyncio.timeout(5):
            (image,) = await render
    await forger.close()
    assert image.png == GENUINE_PNG and len(steps) == 1


async def test_a_stored_picture_swapped_after_the_result_is_refused(nats: NatsTransport) -> None:
    client = await nats.client()
    render = asyncio.create_task(client.render("job-z", RenderRequest("a cat"), None, None))
    worker = await nats_client.connect(nats.server.url)
    js = worker.jetstream()
    job = await published_job(js)
    bucket = await js.object_store(IMAGES_BUCKET)
    digest = hashlib.sha256(b"the rendered picture").hexdigest()
    # Another holder of the bucket overwrites the picture the result names.
    await bucket.put("job-z/0.png", b"another picture")
    result = ResultMessage(
        "job-z",
        Outcome.DONE,
        "worker",
        1,
        (ImageRef(1, "info", 8, 8, object_name="job-z/0.png", sha256=digest),),
    ).encode()
    await js.publish(result_subject("job-z"), result, headers={TAG_HEADER: tag(job.secret, result)})
    with pytest.raises(RemoteRenderFailed, match="not the picture the worker's result names"):
        async with asyncio.timeout(5):
            await render
    await worker.close()


async def test_a_stored_input_picture_swapped_before_the_worker_reads_it_is_refused(
    nats: NatsTransport, tmp_path: Path
) -> None:
    client = await nats.client()
    upload = tmp_path / "noise.png"  # too large to ride in the job message: stored
    Image.frombytes("RGB", (512, 512), os.urandom(512 * 512 * 3)).save(upload)
    vary = RenderRequest("a cat", mode="img2img", init_image=str(upload))
    render = asyncio.create_task(client.render("job-in", vary, None, None))
    intruder = await nats_client.connect(nats.server.url)
    job = await published_job(intruder.jetstream())
    (picture,) = job.inputs
    assert picture.object_name == "job-in/input-init_image"
    bucket = await intruder.jetstream().object_store(IMAGES_BUCKET)
    await bucket.put(picture.object_name, b"another picture")
    await intruder.close()
    engine = InstantEngine()
    nats.start_worker(engine)
    with pytest.raises(RenderInputError, match="is not the one the bot stored"):
        async with asyncio.timeout(10):
            await render
    assert engine.rendered == []


def with_header_size(png: bytes, width: int, height: int) -> bytes:
    """``png`` whose header claims another size (the pixels a decoder would allocate)."""
    return png[:16] + width.to_bytes(4, "big") + height.to_bytes(4, "big") + png[24:]


@pytest.mark.parametrize(
    ("request_", "png", "claimed", "refusal"),
    [
        # A 30,000 x 30,000 picture (2.7 GB decoded) for a 64x64 job: a compromised worker's.
        (
            RenderRequest("a cat", seed=1, width=64, height=64),
            with_header_size(GENUINE_PNG, 30_000, 30_000),
            (30_000, 30_000),
            "is 30000x30000, larger than this job makes (64x64)",
        ),
        # Twice the hires fix's size; a job naming no size is judged by the engine's largest.
        (
            RenderRequest("a cat", seed=1, width=64, height=64, options={"hires_scale": 2}),
            png_of_size(256, 128),
            (256, 128),
            "larger than this job makes (128x128)",
        ),
        (
            RenderRequest("a cat", seed=1),
            with_header_size(GENUINE_PNG, 2048, 2056),
            (2048, 2056),
            "larger than this job makes (2048x2048)",
        ),
        # A header that is not the size the result names, or no PNG at all.
        (
            RenderRequest("a cat", seed=1),
            with_header_size(GENUINE_PNG, 20_000, 8),
            (8, 8),
            "is not the 8x8 PNG its result says",
        ),
        (RenderRequest("a cat", seed=1), b"GIF89a", (8, 8), "is not the 8x8 PNG"),
    ],
    ids=["huge", "past-hires", "past-engine-largest", "header-not-claimed", "not-png"],
)
async def test_a_workers_picture_larger_than_the_job_asked_for_is_refused_unread(
    nats: NatsTransport,
    caplog: pytest.LogCaptureFixture,
    request_: RenderRequest,
    png: bytes,
    claimed: tuple[int, int],
    refusal: str,
) -> None:
    client = await nats.client()
    render = asyncio.create_task(client.render("job-big", request_, None, None))
    worker = await nats_client.connect(nats.server.url)
    js = worker.jetstream()
    job = await published_job(js)
    # Tagged with the job's secret: the worker given the job sent it, so only its size is wrong.
    result = ResultMessage(
        "job-big", Outcome.DONE, "worker-7", 1, (ImageRef(1, "info", *claimed, png=png),)
    ).encode()
    with caplog.at_level(logging.ERROR, logger="bot.jobs.broker.client"):
        await js.publish(
            result_subject("job-big"), result, headers={TAG_HEADER: tag(job.secret, result)}
        )
        with pytest.raises(RemoteRenderFailed, match=re.escape(refusal)):
            async with asyncio.timeout(5):
                await render
    await worker.close()
    (logged,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert logged.startswith("job job-big: refused a picture from worker worker-7: it ")
    assert refusal in logged


async def test_a_workers_picture_of_the_size_the_job_asked_for_is_taken(
    nats: NatsTransport,
) -> None:
    client = await nats.client()
    asked = RenderRequest("a cat", seed=1, width=64, height=32, options={"hires_scale": 2})
    render = asyncio.create_task(client.render("job-fit", asked, None, None))
    worker = await nats_client.connect(nats.server.url)
    js = worker.jetstream()
    job = await published_job(js)
    picture = png_of_size(128, 64)
    result = ResultMessage(
        "job-fit", Outcome.DONE, "worker", 1, (ImageRef(1, "info", 128, 64, png=picture),)
    ).encode()
    await js.publish(
        result_subject("job-fit"), result, headers={TAG_HEADER: tag(job.secret, result)}
    )
    async with asyncio.timeout(5):
        (image,) = await render
    await worker.close()
    assert (image.png, image.width, image.height) == (picture, 128, 64)


@pytest.mark.parametrize("returned", [1, 3], ids=["fewer", "more"])
async def test_a_workers_result_with_another_number_of_pictures_is_refused_unread(
    nats: NatsTransport, caplog: pytest.LogCaptureFixture, returned: int
) -> None:
    client = await nats.client()
    render = asyncio.create_task(
        client.render("job-count", RenderRequest("a cat", seed=1, count=2), None, None)
    )
    worker = await nats_client.connect(nats.server.url)
    js = worker.jetstream()
    job = await published_job(js)
    # Tagged with the job's secret, each picture the size asked for: only the count is wrong.
    # The PNG bytes are not a picture: decoding one would fail otherwise than with the count.
    pictures = tuple(ImageRef(1 + i, "info", 8, 8, png=FORGED_PNG) for i in range(returned))
    result = ResultMessage("job-count", Outcome.DONE, "worker-7", 1, pictures).encode()
    with caplog.at_level(logging.ERROR, logger="bot.jobs.broker.client"):
        await js.publish(
            result_subject("job-count"), result, headers={TAG_HEADER: tag(job.secret, result)}
        )
        with pytest.raises(
            RemoteRenderFailed,
            match=rf"^the worker returned {returned} picture{'s' * (returned != 1)}; this job",
        ):
            async with asyncio.timeout(5):
                await render
    await worker.close()
    (logged,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert logged == (
        f"job job-count: refused the result of worker worker-7: {returned} pictures, "
        "the job makes 2"
    )


class OneTooManyEngine(InstantEngine):
    """A buggy or compromised worker's engine: one picture more than asked for."""

    @staticmethod
    def _pictures(request: RenderRequest) -> list[RenderedImage]:
        asked = InstantEngine._pictures(request)
        return [*asked, asked[0]]


async def test_a_job_given_too_many_pictures_fails_refunded_with_none_stored(
    conn: aiosqlite.Connection, tmp_path: Path, nats: NatsTransport, error_logs: ErrorLogs
) -> None:
    error_logs.expect(r"refused the result of worker .*: 3 pictures, the job makes 2")
    client = await nats.client()
    nats.start_worker(OneTooManyEngine())
    queue, sink = await started_queue(conn, client.slots(), tmp_path / "images")
    job_id = await queue.submit(
        Submission("imagine", RenderRequest("a cat", seed=1, count=2), user_id=7, guild_id=5)
    )
    await sink.wait_for(1)
    await queue.stop()
    (finished,) = sink.delivered
    assert not finished.succeeded and finished.images == ()
    assert finished.error is not None and "returned 3 pictures; this job makes 2" in finished.error
    record = await journal.get_job(conn, job_id)
    assert record is not None and record.status is journal.JobStatus.FAILED
    assert not (tmp_path / "images" / job_id).exists()
    usage = await ledger.usage(conn, 7, 5, period_start(Period.DAY, time.time()))
    assert usage.images == 0
