"""How busy the device stays under a backlog: does it ever wait for CPU work?

    python benchmarks/device_busy.py [--jobs 20] [--size 256] [--steps 4] [--device cpu]
                                     [--long-prompts]

A tiny random-weight model (written to a temporary folder) renders a backlog of ``--jobs``
small jobs, all submitted at once, through the real JobQueue (journal, fair scheduler,
batches, PNG files, delivery) on one DeviceWorker. Prints one JSON object:

- ``device_idle_fraction``: the share of the span (first render start to last render end)
  in which the device did no denoising work (noise, prompt encoding, UNet, VAE decode):
  the time it waited for PNG encoding, storing, delivery and the queue. Goal <= 0.05.
- ``device_thread_idle_fraction``: the share of that span in which the device thread was
  not inside a render call at all.
- ``outside_denoising_ms_per_job``: the device thread's time inside render calls but outside
  the pipeline calls (request checks, prompt expansion, handing PNGs to the pool), per job.

``--long-prompts`` gives every job a long web UI prompt (alternatives, schedules, weights:
``benchmarks/prompts.py``'s) whose expansion is CPU work inside the render call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.prompts import PROMPT as LONG_PROMPT
from benchmarks.timing import TimedEngine
from bot.jobs.queue import FinishedJob, JobQueue, Submission
from bot.jobs.scheduler import SchedulerConfig
from db.database import connect
from inference.engine import Engine
from inference.tiny import write_tiny_model
from inference.types import RenderRequest
from inference.worker import DeviceWorker

PROMPTS = ("a red fox in snow", "a lighthouse at dusk", "a bowl of ramen", "a city in rain")


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
    scratch: Path,
    jobs: int,
    size: int,
    steps: int,
    device: str,
    max_batch: int,
    long_prompts: bool = False,
) -> dict[str, object]:
    write_tiny_model(scratch / "models" / "tiny")
    engine = TimedEngine(Engine(scratch / "models", device=device))
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
        if long_prompts:
            prompt = f"{prompt}, {LONG_PROMPT}"
        return RenderRequest(prompt, seed=index, steps=steps, width=size, height=size)

    # Warm-up (model load, first kernels), then a clean slate for the backlog.
    await queue.submit(Submission("imagine", request(0), user_id=0))
    await deliveries.wait_for(1)
    engine.clear()
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
        "outside_denoising_ms_per_job": round(
            1000 * (engine.renders.busy_s() - engine.denoising.busy_s()) / jobs, 2
        ),
        "span_s": round(span, 3),
        "render_calls": len(renders),
        "jobs": jobs,
        "size": size,
        "steps": steps,
        "max_batch": max_batch,
        "long_prompts": long_prompts,
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
    parser.add_argument("--long-prompts", action="store_true")
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
                arguments.long_prompts,
            )
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
