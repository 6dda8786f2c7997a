"""A worker's broker user (deploy/nats-server.conf) floods the results stream with made-up
results: the oldest go (discard old at its byte cap), the bot's markers and CANCELLED results
included, but the bot's decisions stay where no worker may publish, so a settled job handed out
again is not rendered again, and a cancelled one still stops. Before: the marker went, and the
redelivered job rendered a second time."""

from __future__ import annotations

import asyncio
import secrets
import threading

import nats as nats_client
import pytest

from bot.jobs.broker import wire, worker
from bot.jobs.broker.client import BrokerClient, BrokerConfig
from bot.jobs.broker.wire import JOBS_STREAM, JobMessage, consumer_name, settled_subject
from bot.jobs.broker.worker import WorkerConfig, serve, worker_inbox_prefix
from bot.jobs.queue import RenderStoppedAfter
from inference.types import RenderRequest, StepProgress
from tests.distributed.nats_server import NatsServer
from tests.distributed.test_broker_copies import (
    noise_bytes,
    publish_as_worker,
    wait_until_acknowledged,
)
from tests.distributed.test_broker_images import NoisyEngine
from tests.distributed.test_broker_permissions import PASSWORDS
from tests.distributed.test_broker_permissions import server as deployed_server
from tests.support.engines import InstantEngine

# nats-server started with deploy/nats-server.conf and its users' passwords.
server = deployed_server

# The results stream's cap, scaled down from 256 MiB so that a few hundred KiB flood it.
FLOOD_CAP = 256 * 1024


async def test_made_up_results_push_out_no_decision_of_the_bot(
    server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "RESULTS_MAX_BYTES", FLOOD_CAP)
    bot_url = server.url_for("bot", PASSWORDS["EASEL_NATS_BOT_PASSWORD"])
    client = await BrokerClient.open(BrokerConfig(bot_url, ack_wait_s=1.0))
    # A worker takes the job, stores its result and dies before it acknowledges (the bot's
    # user plays it: it may pull and watch the jobs' subjects, which a worker's may not).
    crashed = await nats_client.connect(bot_url)
    published = asyncio.Event()

    async def on_job(_: nats_client.aio.msg.Msg) -> None:
        published.set()

    await crashed.subscribe("easel.jobs.>", cb=on_job)
    render = asyncio.create_task(client.render("flooded", RenderRequest("a cat"), None, None))
    async with asyncio.timeout(5):
        await published.wait()
    js = crashed.jetstream()
    taken = await js.pull_subscribe_bind(consumer=consumer_name(None), stream=JOBS_STREAM)
    (message,) = await taken.fetch(1, timeout=10)
    await publish_as_worker(js, JobMessage.decode(message.data), noise_bytes())
    await crashed.close()
    await render
    await client.settle("flooded", "done")
    await _flood(server, "flooded")

    # JetStream hands the job out again after its ack wait: the worker finds the decision.
    engine = NoisyEngine()
    worker_1_url = server.url_for("worker-1", PASSWORDS["EASEL_NATS_WORKER_1_PASSWORD"])
    stop = asyncio.Event()
    worker = asyncio.create_task(
        serve(WorkerConfig(worker_1_url, ("gpu-0",), idle_poll_s=0.1), lambda _: engine, stop)
    )
    try:
        await wait_until_acknowledged(bot_url)
    finally:
        stop.set()
        await worker
    assert engine.rendered == []
    observer = await nats_client.connect(bot_url)
    results = await observer.jetstream().stream_info(
        wire.RESULTS_STREAM, subjects_filter="easel.results.*"
    )
    assert "easel.results.flooded" not in (results.state.subjects or {})  # the flood took it
    await observer.close()
    await client.close()


async def test_a_cancel_whose_result_the_flood_took_still_stops_the_render(
    server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker hears no cancel (the core message lost) and its heartbeat looks for the bot's
    word only after the flood took the CANCELLED result: the decision the cancel recorded
    stops the render."""
    monkeypatch.setattr(wire, "RESULTS_MAX_BYTES", FLOOD_CAP)
    bot_url = server.url_for("bot", PASSWORDS["EASEL_NATS_BOT_PASSWORD"])
    client = await BrokerClient.open(BrokerConfig(bot_url, ack_wait_s=3.0))

    async def lost(*_: object) -> None:
        pass

    flooded = asyncio.Event()
    checks = 0
    has_result = worker._Hub.has_result

    async def after_the_flood(hub: worker._Hub, job_id: str) -> bool:
        nonlocal checks
        checks += 1
        if checks > 1:  # the first is before the render; the heartbeats' wait
            await flooded.wait()
        return await has_result(hub, job_id)

    monkeypatch.setattr(worker._Hub, "_on_cancel", lost)
    monkeypatch.setattr(worker._Hub, "has_result", after_the_flood)
    engine = InstantEngine(seconds=30.0)  # stopped at its next step (0.75 s) once cancelled
    worker_1_url = server.url_for("worker-1", PASSWORDS["EASEL_NATS_WORKER_1_PASSWORD"])
    stop = asyncio.Event()
    serving = asyncio.create_task(
        serve(WorkerConfig(worker_1_url, ("gpu-0",), idle_poll_s=0.1), lambda _: engine, stop)
    )
    started, cancel = asyncio.Event(), threading.Event()

    def progress(_: StepProgress) -> None:
        started.set()

    try:
        request = RenderRequest("a cat", steps=40)
        render = asyncio.create_task(client.render("cancelled", request, progress, cancel))
        async with asyncio.timeout(10):
            await started.wait()
        cancel.set()
        with pytest.raises(RenderStoppedAfter):
            await render
        await _flood(server, "cancelled")
        flooded.set()
    finally:
        stop.set()
        await serving  # once the render ends: stopped, or after its 30 s
    assert engine.rendered == []
    await client.close()


async def _flood(server: NatsServer, job_id: str) -> None:
    """Push the results stream's oldest out as worker 2, and try to record a decision on
    ``job_id``, which the server refuses (the bot's alone)."""
    errors: list[str] = []

    async def on_error(error: Exception) -> None:
        errors.append(str(error).lower())

    worker_2_url = server.url_for("worker-2", PASSWORDS["EASEL_NATS_WORKER_2_PASSWORD"])
    flooder = await nats_client.connect(
        worker_2_url, error_cb=on_error, inbox_prefix=worker_inbox_prefix(worker_2_url)
    )
    for _ in range(2 * FLOOD_CAP // 1024):
        await flooder.publish(f"easel.results.{secrets.token_hex(8)}", b"x" * 1024)
    await flooder.publish(settled_subject(job_id), b"")
    await flooder.flush()
    await asyncio.sleep(0.2)
    await flooder.close()
    assert f'publish to "easel.settled.{job_id}"' in " ".join(errors)
