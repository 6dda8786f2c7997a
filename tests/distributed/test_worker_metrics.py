"""`easel worker`'s metrics server: a job rendered through the broker moves its counters."""

from __future__ import annotations

import asyncio
import socket

from bot.jobs.broker.worker import WorkerConfig, serve
from inference.types import RenderRequest
from tests.distributed.transports import NatsTransport
from tests.support.engines import InstantEngine
from tests.support.metrics import fetch, moved, scrape, value


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_worker_serves_metrics_about_the_jobs_it_renders(nats: NatsTransport) -> None:
    port = free_port()
    config = WorkerConfig(
        nats.server.url, ("gpu-7",), idle_poll_s=0.1, metrics_endpoint=("127.0.0.1", port)
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(serve(config, lambda _: InstantEngine(seconds=0.2), stop))
    try:
        client = await nats.client()
        async with asyncio.timeout(10):
            while True:  # the server is up once the worker has connected
                try:
                    before = await scrape(port)
                    break
                except OSError:
                    await asyncio.sleep(0.05)
        assert await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
        await client.render("job-metrics", RenderRequest("a cat", steps=5, model="m"), None, None)
        after = await scrape(port)
    finally:
        stop.set()
        await worker

    assert moved(before, after, "easel_worker_jobs_total", outcome="done") == 1
    labels = {"model": "m", "device": "gpu-7"}
    assert moved(before, after, "easel_render_seconds_count", **labels) == 1
    assert moved(before, after, "easel_render_seconds_sum", **labels) >= 0.2
    assert 0 < value(after, "easel_render_iterations_per_second", **labels) <= 5 / 0.2
