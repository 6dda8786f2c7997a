"""How busy the device stays under a backlog: does it ever wait for CPU work?

    python benchmarks/device_busy.py [--jobs 20] [--size 256] [--steps 4] [--device cpu]

A tiny random-weight model (written to a temporary folder) renders a backlog of ``--jobs``
small jobs, all submitted at once, through the real JobQueue (journal, fair scheduler,
batches, PNG files, delivery) on one DeviceWorker. Prints one JSON object:

- ``device_idle_fraction``: the share of the span (first render start to last render end)
  in which the device did no denoising work (noise, prompt encoding, UNet, VAE decode):
  the time it waited for PNG encoding, storing, delivery and the queue. Goal <= 0.05.
- ``device_thread_idle_fraction``: the share of that span in which the device thread was
  not inside a render call at all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.jobs.queue import FinishedJob, JobQueue, Submission
from bot.jobs.scheduler import SchedulerConfig
from db.database import connect
from inference.engine import Engine
from inference.passes.denoise import Denoiser
from inference.tiny import write_tiny_model
from inference.types import ProgressCallback, RenderedImage, RenderRequest
from inference.worker import DeviceWorker

PROMPTS = ("a red fox in snow", "a lighthouse at dusk", "a bowl of ramen", "a city in rain")


class BusyClock:
    """Intervals spent in some work, from several call sites (one thread at a time each)."""

    def __init__(self) -> None:
        self.intervals: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    @contextmanager
    def timing(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.intervals.append((started, time.perf_counter()))

    def busy_s(self) -> float:
        return sum(end - start for start, end in self.intervals)


@dataclass(frozen=True)
class TimedDenoiser(Denoiser):
    """The engine's pipeline calls, timed."""

    clock: BusyClock = field(default_factory=BusyClock)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.clock.timing():
            return super().__call__(*args, **kwargs)


class TimedEngine(Engine):
    """The engine, timing its render calls (device thread) and its denoising (device work)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.renders = BusyClock()
        self.denoising = BusyClock()
        timed = TimedDenoiser(**vars(self.tools.denoise), clock=self.denoising)
        self.tools = replace(self.tools, denoise=timed)

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]:
        with self.renders.timing():
            return super().render_batch(requests, progress, cancel)

    def render(
        self,
        request: RenderRequest,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[RenderedImage]:
        # Never nested here: render_batch calls render only for modes other than txt2img.
        with self.renders.timing():
            return super().render(request, progress, cancel)


class Deliveries:
    def __init__(self) -> None:
        self.count = 0
        self.arrived = asyncio.Event()

    async def deliver(self, job: FinishedJob) -> int | None:
        if not job.succeeded:
            raise RuntimeError(f"benchmark job {job.job_id} failed: {job.error}")
        self.count += 1
        self.arrived.set()
        return None

    async def wait_for(self, count: int) -> None:
        while self.count < count:
            self.arrived.clear()
            await self.arrived.wait()


async def measure(
    scratch: Path, jobs: int, size: int, steps: int, device: str, max_batch: int
) -> dict[str, object]:
    write_tiny_model(scratch / "models" / "tiny")
    engine = TimedEngine(scratch / "models", device=device)
    conn = await connect(scratch / "easel.sqlite3")
    queue = JobQueue(
        conn,
        [DeviceWorker(device, lambda _: engine)],
        scratch / "images",
        scheduler_config=SchedulerConfig(max_batch=max_batch),
    )
    deliveries = Deliveries()
    queue.set_sink(deliveries)
    await queue.start()

    def request(index: int) -> RenderRequest:
        prompt = PROMPTS[index % len(PROMPTS)]
        return RenderRequest(prompt, seed=index, steps=steps, width=size, height=size)

    # Warm-up (model load, first kernels), then a clean slate for the backlog.
    await queue.submit(Submission("imagine", request(0), user_id=0))
    await deliveries.wait_for(1)
    engine.renders.intervals.clear()
    engine.denoising.intervals.clear()
    # Members under the daily quota each; all queued before the first render starts.
    for index in range(jobs):
        await queue.submit(Submission("imagine", request(index), user_id=1 + index))
    await deliveries.wait_for(1 + jobs)
    await queue.stop()
    await conn.close()
    renders = engine.renders.intervals
    span = max(end for _, end in renders) - min(start for start, _ in renders)
    return {
        "device_idle_fraction": round(1 - engine.denoising.busy_s() / span, 4),
        "device_thread_idle_fraction": round(1 - engine.renders.busy_s() / span, 4),
        "span_s": round(span, 3),
        "render_calls": len(renders),
        "jobs": jobs,
        "size": size,
        "steps": steps,
        "max_batch": max_batch,
        "device": device,
        "python": sys.version.split()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        report = asyncio.run(
            measure(
                Path(scratch),
                arguments.jobs,
                arguments.size,
                arguments.steps,
                arguments.device,
                arguments.max_batch,
            )
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
