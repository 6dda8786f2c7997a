"""A worker far from the broker (a TCP proxy adds 60 ms each way): each job renders once.

Before: every fetch (50 ms) gave up before its job arrived; the job waited in the
subscription's buffer, unheartbeaten while the device rendered another, lapsed, rendered on
a near worker, then on the far one too. Renders are counted, not timed."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable

import pytest
from nats.aio.msg import Msg

from bot.jobs.broker import worker
from bot.jobs.broker.client import BrokerClient
from bot.jobs.broker.worker import WorkerConfig, serve
from inference.types import RenderRequest
from tests.distributed.transports import NatsTransport
from tests.support.engines import InstantEngine

ONE_WAY_DELAY_S = 0.06


async def _forward_late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``ONE_WAY_DELAY_S`` after it was read."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await chunks.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        while data := await reader.read(65536):
            chunks.put_nowait((loop.time() + ONE_WAY_DELAY_S, data))
        await asyncio.sleep(2 * ONE_WAY_DELAY_S)
    finally:
        sender.cancel()
        writer.close()


@contextlib.asynccontextmanager
async def far_address(port: int) -> AsyncIterator[int]:
    """A local port that reaches the broker's ``port`` ``ONE_WAY_DELAY_S`` later each way."""

    async def handle(client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        broker_in, broker_out = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(
            _forward_late(client_in, broker_out),
            _forward_late(broker_in, client_out),
            return_exceptions=True,
        )

    proxy = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield proxy.sockets[0].getsockname()[1]
    finally:
        proxy.close()


async def _render_two_models_far_and_near(nats: NatsTransport) -> Counter[int]:
    """Jobs of two models: a far worker takes one and renders it while the other waits; a
    near worker joins. The seeds rendered, counted over both workers."""
    # Heartbeats every second: a stall of the shared event loop under 2 s does not lapse one.
    client = await nats.client(slots=4, ack_wait_s=3.0)
    # The near one renders longer: a stale copy on the far worker would end first.
    far_engine, near_engine = InstantEngine(seconds=4.0), InstantEngine(seconds=8.0)
    stop = asyncio.Event()
    async with far_address(nats.server.port) as port:
        config = WorkerConfig(f"nats://127.0.0.1:{port}", ("gpu-0",), idle_poll_s=0.1)
        far = asyncio.create_task(serve(config, lambda _: far_engine, stop))
        try:
            await asyncio.sleep(1.0)  # connected through the proxy
            jobs = [
                client.render(
                    f"far-{seed}", RenderRequest("a lake", steps=2, seed=seed, model=m), None, None
                )
                for seed, m in enumerate(["model-a", "model-b"])
            ]
            rendering = asyncio.gather(*jobs)
            await asyncio.sleep(0.6)  # the far worker has taken one of them
            nats.start_worker(near_engine)
            async with asyncio.timeout(30):
                results = await rendering
            assert [image.seed for (image,) in results] == [0, 1]
            await asyncio.sleep(1.5)  # a stale copy would have rendered by now
        finally:
            stop.set()
            await far
    assert far_engine.rendered, "the far worker rendered nothing: its path went untested"
    return Counter(request.seed for request in far_engine.rendered + near_engine.rendered)


async def test_a_worker_far_from_the_broker_renders_no_job_twice(nats: NatsTransport) -> None:
    assert await _render_two_models_far_and_near(nats) == Counter({0: 1, 1: 1})


async def test_jobs_that_arrive_after_their_fetch_gave_up_are_taken_or_handed_back(
    nats: NatsTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The round trip grew since it was measured: each fetch gives up before its job comes.
    The idle loop takes a late job; the one that comes while it renders goes back at once
    (not kept to lapse), and no job uses up its deliveries."""

    async def measured_near(_: object) -> float:
        return 0.0

    monkeypatch.setattr(worker._Hub, "round_trip_s", measured_near)
    assert await _render_two_models_far_and_near(nats) == Counter({0: 1, 1: 1})


@contextlib.asynccontextmanager
async def _far_worker(
    nats: NatsTransport, engine: InstantEngine, devices: tuple[str, ...] = ("gpu-0",)
) -> AsyncIterator[None]:
    """A worker serving ``devices`` through ``far_address``, connected when entered."""
    stop = asyncio.Event()
    async with far_address(nats.server.port) as port:
        config = WorkerConfig(f"nats://127.0.0.1:{port}", devices, idle_poll_s=0.1)
        task = asyncio.create_task(serve(config, lambda _: engine, stop))
        try:
            await asyncio.sleep(0.5)  # connected through the proxy
            yield
        finally:
            stop.set()
            await task


def _render(client: BrokerClient, job_id: str, seed: int, model: str) -> Awaitable[object]:
    return client.render(
        job_id, RenderRequest("a lake", steps=2, seed=seed, model=model), None, None
    )


async def test_a_round_trip_grown_since_measured_is_measured_again_at_the_first_late_job(
    nats: NatsTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The link slows down inside the 10 s between measures: jobs of model a, then one of
    model b, wait. Before: each fetch gave up early; each cycle took a late job of a and handed
    the late b back, using up its deliveries until it failed with no worker lost."""
    monkeypatch.setattr(sys.modules[__name__], "ONE_WAY_DELAY_S", 0.002)
    client = await nats.client(slots=16, ack_wait_s=10.0)
    engine = InstantEngine(seconds=0.2)
    async with _far_worker(nats, engine):
        await _render(client, "measured", 99, "model-a")  # the round trip measured: 4 ms
        monkeypatch.setattr(sys.modules[__name__], "ONE_WAY_DELAY_S", 0.06)
        jobs = [_render(client, f"a{seed}", seed, "model-a") for seed in range(8)]
        async with asyncio.timeout(60):
            await asyncio.gather(*jobs, _render(client, "b", 100, "model-b"))
    assert sorted(request.seed for request in engine.rendered) == [*range(8), 99, 100]


async def test_a_late_job_goes_to_an_idle_device_of_the_same_worker_not_back(
    nats: NatsTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every fetch gives up before its job comes (the round trip measured near): a job that
    comes late to a device already rendering goes to the idle one, not back to the broker
    (which would use up one of its deliveries)."""

    async def measured_near(_: object) -> float:
        return 0.0

    naks: list[str] = []

    async def nak(msg: Msg, *_: object, **__: object) -> None:
        naks.append(msg.subject)

    monkeypatch.setattr(worker._Hub, "round_trip_s", measured_near)
    monkeypatch.setattr(Msg, "nak", nak)
    client = await nats.client(slots=4, ack_wait_s=10.0)
    engine = InstantEngine(seconds=1.0)
    async with _far_worker(nats, engine, ("gpu-0", "gpu-1")):
        async with asyncio.timeout(30):
            await asyncio.gather(*(_render(client, m, s, m) for s, m in enumerate("ab")))
    assert sorted(request.seed for request in engine.rendered) == [0, 1]
    assert naks == []
