"""Least privilege on the broker: the bot believes only what a worker given the job sent."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path

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
from inference.types import RenderInputError, RenderRequest, StepProgress
from tests.distributed.transports import NatsTransport
from tests.support.engines import InstantEngine

FORGED_PNG = b"\x89PNG forged"


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
            "job-x", Outcome.DONE, "worker", 1, (ImageRef(4, "genuine", 8, 8, png=b"PNG"),)
        ).encode()
        await js.publish(
            result_subject("job-x"), genuine, headers={TAG_HEADER: tag(job.secret, genuine)}
        )
        async with asyncio.timeout(5):
            (image,) = await render
    await forger.close()
    assert image.png == b"PNG" and len(steps) == 1


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
