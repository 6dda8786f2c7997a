"""The shipped broker config (deploy/nats-server.conf): a bot user and a user per worker that
can render together, a worker able to do nothing else of note, nor to hear another's jobs."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import nats as nats_client
import pytest
from PIL import Image

from bot.jobs.broker.client import BrokerClient, BrokerConfig
from bot.jobs.broker.wire import RESULTS_STREAM, job_subject, result_subject
from bot.jobs.broker.worker import WORKER_INBOX_PREFIX, WorkerConfig, serve, worker_inbox_prefix
from inference.types import RenderRequest, StepProgress
from tests.distributed.nats_server import REPO_ROOT, NatsServer
from tests.distributed.test_broker_images import NoisyEngine

PASSWORDS = {
    "EASEL_NATS_BOT_PASSWORD": "bot-pass",
    "EASEL_NATS_WORKER_1_PASSWORD": "worker-1-pass",
    "EASEL_NATS_WORKER_2_PASSWORD": "worker-2-pass",
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    started = NatsServer(
        tmp_path / "jetstream",
        config_file=REPO_ROOT / "deploy" / "nats-server.conf",
        environment=PASSWORDS,
    )
    started.start()
    yield started
    started.stop()


async def test_the_bot_and_worker_users_render_and_the_worker_can_do_nothing_more(
    server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    worker_url = server.url_for("worker-1", PASSWORDS["EASEL_NATS_WORKER_1_PASSWORD"])
    errors: list[str] = []

    async def on_error(error: Exception) -> None:
        errors.append(str(error).lower())

    # Another worker's user tries to hear the jobs worker-1 pulls (and their secrets).
    other_url = server.url_for("worker-2", PASSWORDS["EASEL_NATS_WORKER_2_PASSWORD"])
    spy = await nats_client.connect(other_url, error_cb=on_error)
    overheard: list[bytes] = []

    async def overhear(msg: nats_client.aio.msg.Msg) -> None:
        overheard.append(msg.data)

    await spy.subscribe(worker_inbox_prefix(worker_url) + ".>", cb=overhear)
    await spy.subscribe(WORKER_INBOX_PREFIX + ".>", cb=overhear)
    await spy.flush()
    stop = asyncio.Event()
    # Started before any bot: it waits for the streams, which it may not make itself.
    config = WorkerConfig(worker_url, ("gpu-0",), idle_poll_s=0.1)
    worker = asyncio.create_task(serve(config, lambda _: NoisyEngine(), stop))
    # An input and a result too large to ride in messages: both go through the bucket.
    upload = tmp_path / "noise.png"
    Image.frombytes("RGB", (512, 512), os.urandom(512 * 512 * 3)).save(upload)
    vary = RenderRequest("a cat", seed=2, steps=3, mode="img2img", init_image=str(upload))
    steps: list[StepProgress] = []
    bot_url = server.url_for("bot", PASSWORDS["EASEL_NATS_BOT_PASSWORD"])
    client = await BrokerClient.open(BrokerConfig(bot_url))
    try:
        async with asyncio.timeout(20):
            (image,) = await client.render("job-perm", vary, steps.append, None)
    finally:
        stop.set()
        await worker
    assert image.seed == 2 and image.png.startswith(b"\x89PNG") and len(steps) == 3
    await spy.close()
    assert overheard == []
    # Its heartbeat (the models it has) reached the broker: no right refused.
    assert not [r for r in caplog.records if "refuses this worker's" in r.getMessage()]

    intruder = await nats_client.connect(
        worker_url, error_cb=on_error, inbox_prefix=worker_inbox_prefix(worker_url)
    )
    js = intruder.jetstream(timeout=0.5)
    with pytest.raises(nats_client.errors.Error):
        await js.publish(job_subject(None), b'{"job_id": "forged"}', timeout=0.5)
    with pytest.raises(nats_client.errors.Error):  # no reading of stored results
        await js.get_last_msg(RESULTS_STREAM, result_subject("job-perm"))
    await intruder.subscribe("easel.results.*")  # nor listening to them
    await intruder.subscribe("easel.jobs.>")  # nor to the jobs themselves
    await intruder.flush()
    await asyncio.sleep(0.2)
    await intruder.close()
    denied = " ".join(errors)
    assert 'publish to "easel.jobs.default"' in denied
    assert 'publish to "$js.api.stream.msg.get.easel_results"' in denied
    assert 'subscription to "easel.results.*"' in denied
    assert 'subscription to "easel.jobs.>"' in denied
    assert 'subscription to "_inbox_easel_worker-1.>"' in denied
    assert 'subscription to "_inbox_easel_worker.>"' in denied
    await client.close()


@pytest.mark.parametrize(
    ("url", "prefix"),
    [
        ("nats://worker-1:secret@broker:4222", "_INBOX_easel_worker-1"),
        ("tls://gpu_box:secret@broker:4222", "_INBOX_easel_gpu_box"),
        # A token is a password: it never becomes a subject name.
        ("nats://s3cr3t-token@broker:4222", WORKER_INBOX_PREFIX),
        ("nats://127.0.0.1:4222", WORKER_INBOX_PREFIX),
    ],
)
def test_a_worker_s_reply_prefix_is_its_broker_user_s(url: str, prefix: str) -> None:
    assert worker_inbox_prefix(url) == prefix


@pytest.mark.parametrize("user", ["worker.1", "worker*", "w%3E"])
def test_a_user_name_that_is_not_one_subject_token_is_refused_at_start(user: str) -> None:
    with pytest.raises(ValueError, match="user name becomes the worker's reply prefix"):
        WorkerConfig(f"nats://{user}:secret@broker:4222", ("gpu-0",))
