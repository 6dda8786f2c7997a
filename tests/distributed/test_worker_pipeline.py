"""``easel worker`` renders the next job while the last one's result is stored and published:
at most one job finishing at a time, results in the order rendered."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from inference.types import ProgressCallback, RenderedImage, RenderRequest
from tests.distributed.transports import NatsTransport
from tests.support.engines import InstantEngine

RENDER_S = 0.2
ENCODE_S = 1.5


@dataclass
class TimedInstantEngine(InstantEngine):
    """Records when each render started and ended, by seed."""

    started: dict[int, float] = field(default_factory=dict)
    ended: dict[int, float] = field(default_factory=dict)

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]:
        self.started[requests[0].seed] = time.perf_counter()
        try:
            return super().render_batch(requests, progress, cancel)
        finally:
            self.ended[requests[0].seed] = time.perf_counter()


async def test_the_next_job_renders_while_the_last_result_is_stored(nats: NatsTransport) -> None:
    engine = TimedInstantEngine(seconds=RENDER_S, encode_seconds=ENCODE_S)
    nats.start_worker(engine)
    client = await nats.client(slots=3)
    arrived: dict[int, float] = {}

    async def render(seed: int) -> None:
        request = RenderRequest("a cat", seed=seed, steps=2)
        (image,) = await client.render(f"job-{seed}", request, None, None)
        assert image.seed == seed
        arrived[seed] = time.perf_counter()

    tasks = []
    for seed in (1, 2, 3):
        tasks.append(asyncio.create_task(render(seed)))
        await asyncio.sleep(0.05)  # published in this order
    async with asyncio.timeout(20):
        await asyncio.gather(*tasks)

    first, second, third = sorted(engine.started, key=engine.started.__getitem__)
    # The second job rendered while the first one's PNG was still encoding...
    assert engine.started[second] - engine.ended[first] < ENCODE_S / 2
    assert engine.started[second] < arrived[first]
    # ...but the third waited for the first to be published: one job finishing at a time.
    assert engine.started[third] - engine.ended[first] >= ENCODE_S * 0.9
    # Results come in the order the jobs were rendered.
    assert sorted(arrived, key=arrived.__getitem__) == [first, second, third]
