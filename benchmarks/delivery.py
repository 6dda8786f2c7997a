"""What a member waits for after the device is done: render end to the result posted.

    python benchmarks/delivery.py [--size 512] [--steps 2] [--upload-ms 250] [--runs 3]

A tiny random-weight model (written to a temporary folder) renders through the real JobQueue
(journal, quota, PNG files) on one DeviceWorker. The sink does what the bot's delivery does
before its upload, ``cogs.results.posting.result_png`` (a grid composed when the job has
several pictures) on a worker thread, then waits ``--upload-ms`` for the upload to Discord
(on loopback the fake answers in ~10 ms; Discord takes longer for a file). Prints JSON:

- ``grid_ms``: one 2x2 grid, from the render call's return to the delivery's end (the
  pictures' PNGs, the grid's composition, files, journal, the simulated upload).
- ``single_ms``: the same for a one-picture job.
- ``batch_ms``: four members' one-picture jobs rendered in one batch: each job's wait from
  the batch's render end to its own delivery's end (sorted: the last member's is the last).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.job_queue import Arrivals
from benchmarks.timing import TimedEngine
from bot.jobs.queue import JobQueue, Submission
from bot.jobs.scheduler import SchedulerConfig
from db.database import connect
from inference.engine import Engine
from inference.tiny import write_tiny_model
from inference.types import RenderRequest
from inference.worker import DeviceWorker


async def measure(scratch: Path, size: int, steps: int, upload_s: float, runs: int) -> dict:
    write_tiny_model(scratch / "models" / "tiny")
    engine = TimedEngine(Engine(scratch / "models"))
    conn = await connect(scratch / "easel.sqlite3")
    queue = JobQueue(
        conn,
        [DeviceWorker("cpu", lambda _: engine)],
        scratch / "images",
        scheduler_config=SchedulerConfig(max_batch=4),
    )
    sink = Arrivals(posting=True, upload_s=upload_s)
    queue.set_sink(sink)
    await queue.start()
    members = iter(range(1, 10_000))  # a member each: nobody runs out of quota

    async def after_render(requests: list[RenderRequest]) -> list[float]:
        """Each job's ms from the end of its render call to its delivery's end. Several jobs
        arrive while another renders, so they wait for the device together: one batch."""
        calls = len(engine.renders.intervals)
        ahead = [] if len(requests) == 1 else [request(0)]
        ids = [
            await queue.submit(Submission("imagine", job, user_id=next(members)))
            for job in ahead + requests
        ]
        await sink.wait_for(ids)
        delivered = [sink.finished[job_id] for job_id in ids[len(ahead) :]]
        render_end = engine.renders.intervals[-1][1]
        if len(engine.renders.intervals) != calls + len(ahead) + 1:
            raise RuntimeError(f"{len(requests)} jobs took more than one render call")
        return [round((at - render_end) * 1000, 1) for at in delivered]

    def request(seed: int, count: int = 1) -> RenderRequest:
        return RenderRequest(
            "a lighthouse", seed=seed, steps=steps, width=size, height=size, count=count
        )

    await after_render([request(0)])  # warm-up: model load, first PNGs, threads
    await after_render([request(0, count=4)])
    grid, single, batch = [], [], []
    for run in range(runs):
        [grid_ms] = await after_render([request(run, count=4)])
        [single_ms] = await after_render([request(run)])
        grid.append(grid_ms)
        single.append(single_ms)
        batch.append(sorted(await after_render([request(run + n) for n in range(4)])))
    await queue.stop()
    await conn.close()
    return {
        "benchmark": "delivery",
        "size": size,
        "steps": steps,
        "upload_ms": round(upload_s * 1000),
        "grid_ms": statistics.median(grid),
        "single_ms": statistics.median(single),
        "batch_ms": [statistics.median(job[n] for job in batch) for n in range(4)],
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--upload-ms", type=float, default=250.0)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        report = asyncio.run(
            measure(
                Path(scratch),
                arguments.size,
                arguments.steps,
                arguments.upload_ms / 1000,
                arguments.runs,
            )
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
