"""``easel worker`` renders the next job while the last one's result is stored and published:
at most one job finishing at a time, results in the order rendered."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace

from inference.types import ProgressCallback, RenderedImage, RenderRequest
from tests.distributed.transports import NatsTransport
from tests.support.engines import InstantEngine

RENDER_S = 0.2
# Time enough for a worker that wrongly takes the third job while the first is finishing to
# start it (a loaded machine can only make the check miss that, never fail a right worker).
THIRD_TAKEN_WITHIN_S = 1.0
HANG_S = 30.0  # bounds a hang only


@dataclass
class FirstEncodeHeldEngine(InstantEngine):
    """The first render's PNG stays "encoding" until ``finish_first_encode``, whatever the
    machine's speed; records the seeds in the order their renders started and ended."""

    started: list[int] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)
    second_ended: threading.Event = field(default_factory=threading.Event)
    _held: list[tuple[Future[bytes], bytes]] = field(default_factory=list)

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]:
        self.started.append(requests[0].seed)
        rendered = super().render_batch(requests, progress, cancel)
        if not self.ended:
            rendered = [[self._encoding_held(image) for image in images] for images in rendered]
        self.ended.append(requests[0].seed)
        if len(self.ended) == 2:
            self.second_ended.set()
        return rendered

    def _encoding_held(self, image: RenderedImage) -> RenderedImage:
        encoded: Future[bytes] = Future()
        self._held.append((encoded, image.png))
        return replace(image, encoded=encoded)

    def finish_first_encode(self) -> None:
        for encoded, png in self._held:
            if not encoded.done():
                encoded.set_result(png)


async def test_the_next_job_renders_while_the_last_result_is_stored(nats: NatsTransport) -> None:
    engine = FirstEncodeHeldEngine(seconds=RENDER_S)
    nats.start_worker(engine)
    client = await nats.client(slots=3)
    arrived: list[int] = []

    async def render(seed: int) -> None:
        request = RenderRequest("a cat", seed=seed, steps=2)
        (image,) = await client.render(f"job-{seed}", request, None, None)
        assert image.seed == seed
        arrived.append(seed)

    tasks = [asyncio.create_task(render(seed)) for seed in (1, 2, 3)]
    try:
        # The second job rendered while the first one's PNG was still encoding...
        assert await asyncio.to_thread(engine.second_ended.wait, HANG_S), "it waited for the PNG"
        # ...but the third waits for the first to be published: one job finishing at a time.
        await asyncio.sleep(THIRD_TAKEN_WITHIN_S)
        assert len(engine.started) == 2 and arrived == []
    finally:
        engine.finish_first_encode()
    async with asyncio.timeout(HANG_S):
        await asyncio.gather(*tasks)
    assert len(engine.started) == 3
    # Results come in the order the jobs were rendered.
    assert arrived == engine.started
