"""The broker transport's own promises: model affinity, no double run, failure after 3 tries."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import nats as nats_client
import pytest
from nats.aio.msg import Msg
from nats.js.api import AckPolicy

from bot.jobs.broker.client import BrokerClient, RemoteRenderFailed
from bot.jobs.broker.wire import (
    ADVISORIES_STREAM,
    JOBS_STREAM,
    RESULTS_STREAM,
    TAG_HEADER,
    Outcome,
    ResultMessage,
    consumer_name,
    job_subject,
    result_subject,
    tag,
)
from inference.types import RenderCancelled, RenderedImage, RenderRequest, StepProgress
from tests.distributed.transports import NatsTransport
from tests.support.engines import HeldEngine, InstantEngine


def request(model: str | None, seed: int = 1) -> RenderRequest:
    return RenderRequest("a cat", seed=seed, steps=5, model=model)


async def render_started(
    client: BrokerClient, job_id: str, job: RenderRequest
) -> asyncio.Task[object]:
    """Start a render and return once the worker reports its first step."""
    started = asyncio.Event()

    def on_step(_: StepProgress) -> None:
        started.set()

    task = asyncio.create_task(client.render(job_id, job, on_step, None))
    async with asyncio.timeout(5):
        await started.wait()
    return task


async def test_a_worker_takes_jobs_for_its_loaded_model_first(nats: NatsTransport) -> None:
    client = await nats.client(slots=3)
    observer = await nats_client.connect(nats.server.url)
    js = observer.jetstream()

    async def jobs_waiting() -> int:
        return int((await js.stream_info(JOBS_STREAM)).state.messages)

    with HeldEngine() as engine:
        # A pull that gives up on the loaded model's consumer after its production wait (about
        # 75 ms) takes the other model's job: on a loaded machine the answer can come later.
        nats.start_worker(engine, fetch_timeout_s=2.0)
        first = asyncio.create_task(client.render("job-a1", request("alpha"), None, None))
        assert await asyncio.to_thread(engine.started.wait, 30)
        # While "alpha" renders (held: a loaded machine's publishes may take longer than any
        # render), an "aardvark" job is published before a second "alpha" job (and its consumer
        # sorts first by name, so only the preference can put "alpha" first).
        other_model = asyncio.create_task(client.render("job-b1", request("aardvark"), None, None))
        await stream_state_reached(jobs_waiting, 2, timeout_s=30)
        same_model = asyncio.create_task(client.render("job-a2", request("alpha", 2), None, None))
        await stream_state_reached(jobs_waiting, 3, timeout_s=30)
        engine.released.set()
        async with asyncio.timeout(30):
            await asyncio.gather(first, other_model, same_model)
    await observer.close()
    assert [job.model for job in engine.rendered] == ["alpha", "alpha", "aardvark"]


async def test_a_job_is_rendered_once_however_often_it_is_submitted(
    nats: NatsTransport,
) -> None:
    engine = InstantEngine(seconds=0.3)
    nats.start_worker(engine)
    client = await nats.client()
    first = await render_started(client, "job-once", request(None, seed=9))
    # A restarted bot publishes the same job again while the first copy is still rendering,
    # and once more after it finished: both times it gets the one result.
    restarted = await nats.client()
    (during,) = await restarted.render("job-once", request(None, seed=9), None, None)
    images = await first
    (after,) = await (await nats.client()).render("job-once", request(None, seed=9), None, None)
    assert images == [during] and during.png == after.png and during.seed == 9
    assert len(engine.rendered) == 1


async def render_lost_with_workers(
    nats: NatsTransport, client: BrokerClient, job_id: str, deliveries: int
) -> asyncio.Task[list[RenderedImage]]:
    """Start rendering ``job_id`` and hand its first ``deliveries`` deliveries to "workers"
    that die without a word (no ack, no heartbeat); returns the still-waiting render."""
    lost = await nats_client.connect(nats.server.url)
    published = asyncio.Event()

    async def on_job(_: Msg) -> None:
        published.set()

    await lost.subscribe("easel.jobs.>", cb=on_job)  # a job publish reaches core subscribers too
    job = asyncio.create_task(client.render(job_id, request(None), None, None))
    async with asyncio.timeout(5):
        await published.wait()
    puller = await lost.jetstream().pull_subscribe_bind(consumer_name(None), stream=JOBS_STREAM)
    for delivery in range(1, deliveries + 1):
        (message,) = await puller.fetch(1, timeout=5)
        assert message.metadata.num_delivered == delivery
    await lost.close()
    return job


async def test_a_job_lost_with_its_worker_three_times_is_reported_failed(
    nats: NatsTransport,
) -> None:
    client = await nats.client(ack_wait_s=0.2)
    # Three "workers" take the job and die without a word (no ack, no heartbeat).
    job = await render_lost_with_workers(nats, client, "job-doomed", deliveries=3)
    engine = InstantEngine()
    nats.start_worker(engine)
    with pytest.raises(RemoteRenderFailed, match="failed after 3 deliveries"):
        async with asyncio.timeout(10):
            await job
    assert engine.rendered == []


async def test_consumers_are_per_model_and_never_overlap(nats: NatsTransport) -> None:
    client = await nats.client()
    nats.start_worker(InstantEngine())
    await client.render("job-m1", request("alpha"), None, None)
    await client.render("job-m2", request("alpha/v2.safetensors"), None, None)
    observer = await nats_client.connect(nats.server.url)
    infos = await observer.jetstream().consumers_info(JOBS_STREAM)
    await observer.close()
    filters = {info.config.filter_subject for info in infos}
    assert len(filters) == 2 and all(f and f.startswith("easel.jobs.alpha") for f in filters)
    assert {info.config.ack_policy for info in infos} == {AckPolicy.EXPLICIT}
    assert {info.config.max_deliver for info in infos} == {4}  # 3 attempts + the one that reports


async def test_a_render_longer_than_the_ack_wait_is_not_redelivered(nats: NatsTransport) -> None:
    # A heartbeat each third of the ack wait: a wait of 0.3 s was missed once on a loaded CI
    # machine (a 0.3 s pause of the worker's loop), so the waits are twice that.
    client = await nats.client(ack_wait_s=0.6)
    engine = InstantEngine(seconds=2.4)  # four ack waits: only heartbeats keep the job
    nats.start_worker(engine, devices=("gpu-0", "gpu-1"))  # an idle device would take a redelivery
    first_steps: list[StepProgress] = []

    def on_step(step: StepProgress) -> None:
        if step.step == 1:  # a redelivered copy would start again at step 1, on the other device
            first_steps.append(step)

    await client.render("job-long", request(None), on_step, None)
    assert len(first_steps) == 1


async def test_a_job_whose_last_delivery_dies_too_is_reported_failed(
    nats: NatsTransport,
) -> None:
    client = await nats.client(ack_wait_s=0.2)
    # All four deliveries, the reporting one included, go to "workers" that die silently.
    job = await render_lost_with_workers(nats, client, "job-orphan", deliveries=4)
    engine = InstantEngine()
    nats.start_worker(engine)  # its next pull makes JetStream give up on the job
    with pytest.raises(RemoteRenderFailed, match="failed after 3 deliveries"):
        async with asyncio.timeout(10):
            await job
    assert engine.rendered == []
    # The failure is stored, so a restarted bot gets it too, and the stuck job is gone.
    with pytest.raises(RemoteRenderFailed, match="failed after 3 deliveries"):
        await (await nats.client()).render("job-orphan", request(None), None, None)
    observer = await nats_client.connect(nats.server.url)
    info = await observer.jetstream().stream_info(JOBS_STREAM)
    await observer.close()
    assert info.state.messages == 0 and engine.rendered == []


async def stream_state_reached(
    count: Callable[[], Awaitable[int]], wanted: int, timeout_s: float = 10.0
) -> None:
    """Poll a stream's message count (JetStream has no event for it) until it is ``wanted``."""
    async with asyncio.timeout(timeout_s):
        while await count() != wanted:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_a_notice_given_while_no_bot_listens_is_handled_when_one_comes_back(
    nats: NatsTransport,
) -> None:
    gone = await nats.client(ack_wait_s=0.2)
    job = await render_lost_with_workers(nats, gone, "job-unheard", deliveries=4)
    job.cancel()
    await gone.close()  # no bot connected from here on
    nats.start_worker(InstantEngine())  # its pulls make JetStream give up on the job...
    observer = await nats_client.connect(nats.server.url)
    js = observer.jetstream()

    async def notices_waiting() -> int:
        return int((await js.stream_info(ADVISORIES_STREAM)).state.messages)

    await stream_state_reached(lambda: notices_waiting(), 1)  # ...its notice waits, unheard
    # A bot started later (asking for the same job again, as a restarted bot does) handles
    # the stored notice: the job is reported failed instead of waiting forever.
    with pytest.raises(RemoteRenderFailed, match="failed after 3 deliveries"):
        async with asyncio.timeout(10):
            await (await nats.client()).render("job-unheard", request(None), None, None)
    await stream_state_reached(lambda: notices_waiting(), 0)  # acknowledged: gone
    assert (await js.stream_info(JOBS_STREAM)).state.messages == 0
    await observer.close()


async def test_a_cancel_whose_message_is_lost_still_stops_the_render(
    nats: NatsTransport, caplog: pytest.LogCaptureFixture
) -> None:
    """A bot cancels a running job by deleting its message, publishing a core cancel and
    storing a CANCELLED result; with the core message lost, the worker's heartbeat finds the
    stored result and stops the render (its own CANCELLED result then finds the bot's there
    and leaves it)."""
    caplog.set_level(logging.INFO, logger="bot.jobs.broker.worker")
    client = await nats.client(ack_wait_s=0.3)  # heartbeats every 0.1 s
    engine = InstantEngine(seconds=10.0)  # 2 s a step
    nats.start_worker(engine)
    job = await render_started(client, "job-quiet-cancel", request(None))
    observer = await nats_client.connect(nats.server.url)
    js = observer.jetstream()
    stored = await js.get_last_msg(JOBS_STREAM, job_subject(None))
    cancelled = ResultMessage("job-quiet-cancel", Outcome.CANCELLED, "easel-bot", 0).encode()
    secret = client.job_secret("job-quiet-cancel")
    # The result stored before the message goes (the bot's own cancel deletes first, but its
    # render stops waiting then): a recheck of this render between the two would find the
    # message gone with no result, and fail the job instead (on a loaded machine, it did).
    await js.publish(
        result_subject("job-quiet-cancel"), cancelled, headers={TAG_HEADER: tag(secret, cancelled)}
    )
    await js.delete_msg(JOBS_STREAM, stored.seq)
    with pytest.raises(RenderCancelled):
        await job
    async with asyncio.timeout(30):  # the step under way, then the check (bounds a hang)
        while "job-quiet-cancel: a result is stored already" not in caplog.text:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    last = await js.get_last_msg(RESULTS_STREAM, result_subject("job-quiet-cancel"))
    await observer.close()
    assert ResultMessage.decode(last.data or b"").worker == "easel-bot"
    assert engine.rendered == []
