"""`easel worker` with EASEL_WARM_START: each listed device warms its engine before the first
job it takes; the other devices stay lazy."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from bot.jobs.broker.worker import WorkerConfig, serve
from inference.types import RenderRequest
from tests.distributed.transports import NatsTransport
from tests.support.engines import InstantEngine


@dataclass
class WarmingEngine(InstantEngine):
    # At each warm-up: how many requests the engine had rendered before it.
    rendered_before_warm_up: list[int] = field(default_factory=list)
    warmed: threading.Event = field(default_factory=threading.Event)

    def warm_up(self, cancel: threading.Event, model: str | None = None) -> None:
        self.rendered_before_warm_up.append(len(self.rendered))
        self.warmed.set()


async def test_a_worker_warms_the_listed_devices_before_their_first_job(
    nats: NatsTransport,
) -> None:
    engines = {"gpu-0": WarmingEngine(), "gpu-1": WarmingEngine()}
    config = WorkerConfig(
        nats.server.url, ("gpu-0", "gpu-1"), idle_poll_s=0.1, warm_devices=frozenset({"gpu-0"})
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(serve(config, engines.__getitem__, stop))
    try:
        client = await nats.client()
        # Built and warmed without any job.
        assert await asyncio.to_thread(engines["gpu-0"].warmed.wait, 10)
        for job in ("one", "two"):
            await client.render(f"job-{job}", RenderRequest(job, steps=1), None, None)
    finally:
        stop.set()
        await worker
    # gpu-0 was warmed before any job; gpu-1 never.
    assert engines["gpu-0"].rendered_before_warm_up == [0]
    assert engines["gpu-1"].rendered_before_warm_up == []
    assert sorted(r.prompt for e in engines.values() for r in e.rendered) == ["one", "two"]
