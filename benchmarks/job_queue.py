"""The job queue's own cost, in-process and over NATS, its scaling, and what fair share buys.

    python benchmarks/job_queue.py [--jobs 200] [--render-s 0.2]

Starts a nats-server on loopback (JetStream in a temporary folder). Prints one JSON object;
compare ratios from the same run, not absolute times across machines.

- overhead: submit → delivered latency per job with a zero-time engine (journal, quota,
  scheduler, PNG files, delivery), in-process and through the broker (worker in this process).
- scaling: jobs per second with N worker devices rendering ``--render-s`` each (8 jobs a device),
  over N=1.
- fairness: one heavy user queues 50 jobs, then 5 light users one each (1 s per job, one
  device, simulated clock): the light users' worst wait with the fair scheduler and with FIFO.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.jobs.broker.client import BrokerClient, BrokerConfig
from bot.jobs.broker.worker import WorkerConfig, serve
from bot.jobs.queue import FinishedJob, JobQueue, RenderSlot, Submission
from bot.jobs.scheduler import FairScheduler, PriorityClass, QueuedJob, SchedulerConfig
from cogs.results.posting import result_png
from db.database import connect
from inference.types import RenderRequest
from inference.worker import DeviceWorker
from tests.distributed.nats_server import NatsServer
from tests.support.engines import InstantEngine

REQUEST = RenderRequest("a cat", steps=1, width=64, height=64)


class Arrivals:
    """When each job was delivered. With ``posting``, a delivery first does what the bot's
    does before its upload (``result_png``: the picture it posts, a grid composed when the
    job has several) and then waits ``upload_s``, as an upload to Discord would."""

    def __init__(self, posting: bool = False, upload_s: float = 0.0) -> None:
        self.posting, self.upload_s = posting, upload_s
        self.finished: dict[str, float] = {}
        self.arrived = asyncio.Event()

    async def deliver(self, job: FinishedJob) -> int | None:
        if not job.succeeded:
            raise RuntimeError(f"benchmark job {job.job_id} failed: {job.error}")
        if self.posting:
            png = await asyncio.to_thread(result_png, job)
            assert png.startswith(b"\x89PNG")
            await asyncio.sleep(self.upload_s)
        self.finished[job.job_id] = time.perf_counter()
        self.arrived.set()
        return None

    async def wait_for(self, job_ids: Sequence[str]) -> None:
        while not all(job_id in self.finished for job_id in job_ids):
            self.arrived.clear()
            await self.arrived.wait()


class Bench:
    """A JobQueue on a fresh database, with local or remote slots."""

    def __init__(self, scratch: Path, server: NatsServer | None) -> None:
        self._scratch = scratch
        self._server = server
        self.first_submit = self.last_delivery = 0.0

    async def run(
        self, devices: int, render_s: float, jobs: int, one_at_a_time: bool
    ) -> list[float]:
        """Latencies (submit → delivered) of ``jobs`` jobs; with ``one_at_a_time`` each job is
        submitted after the previous one was delivered, otherwise all at once."""
        folder = Path(tempfile.mkdtemp(dir=self._scratch))
        conn = await connect(folder / "easel.sqlite3")
        engine = InstantEngine(seconds=render_s)
        stop = asyncio.Event()
        worker: asyncio.Task[None] | None = None
        client: BrokerClient | None = None
        slots: Sequence[RenderSlot]
        if self._server is None:
            slots = [DeviceWorker(f"cpu-{n}", lambda _: engine) for n in range(devices)]
        else:
            client = await BrokerClient.open(BrokerConfig(self._server.url, slots=devices))
            slots = client.slots()
            names = tuple(f"gpu-{n}" for n in range(devices))
            config = WorkerConfig(self._server.url, names, idle_poll_s=1.0)
            worker = asyncio.create_task(serve(config, lambda _: engine, stop))
        queue = JobQueue(
            conn, slots, folder / "images", scheduler_config=SchedulerConfig(max_batch=1)
        )
        arrivals = Arrivals()
        queue.set_sink(arrivals)
        await queue.start()
        submitted: dict[str, float] = {}
        for index in range(jobs):
            submitted_at = time.perf_counter()
            job_id = await queue.submit(Submission("imagine", REQUEST, user_id=index))
            submitted[job_id] = submitted_at
            if one_at_a_time:
                await arrivals.wait_for([job_id])
        await arrivals.wait_for(list(submitted))
        self.first_submit = min(submitted.values())
        self.last_delivery = max(arrivals.finished.values())
        await queue.stop()
        await conn.close()
        stop.set()
        if worker is not None:
            await worker
        if client is not None:
            await client.close()
        return [arrivals.finished[job_id] - at for job_id, at in submitted.items()]


def percentile(values: list[float], fraction: float) -> float:
    return sorted(values)[min(len(values) - 1, int(fraction * len(values)))]


async def overhead(bench: Bench, jobs: int) -> dict[str, float]:
    await bench.run(1, 0.0, 5, one_at_a_time=True)  # warm-up: imports, first PNG, connections
    latencies = await bench.run(1, 0.0, jobs, one_at_a_time=True)
    return {
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 2),
    }


async def throughput(bench: Bench, devices: int, render_s: float) -> float:
    """Jobs per second from the first submit to the last delivery (set-up not counted)."""
    jobs = 8 * devices
    await bench.run(devices, render_s, jobs, one_at_a_time=False)
    return jobs / (bench.last_delivery - bench.first_submit)


def light_users_worst_wait(fair: bool) -> float:
    """Seconds the slowest light user waits (simulated: 1 s per job, one device)."""
    heavy = [
        QueuedJob(f"heavy-{n}", 1, None, ("m",), PriorityClass.STANDARD, 0.0) for n in range(50)
    ]
    light = [
        QueuedJob(f"light-{n}", 100 + n, None, ("m",), PriorityClass.STANDARD, 0.001)
        for n in range(5)
    ]
    now, waits = 0.0, []
    if fair:
        scheduler = FairScheduler(SchedulerConfig(max_batch=1), devices=["gpu"])
        for job in heavy + light:
            scheduler.submit(job)
        while batch := scheduler.next_batch("gpu", now):
            (job,) = batch
            if job.user_id >= 100:
                waits.append(now - job.submitted_at)
            now += 1.0
            scheduler.finish(job.job_id)
    else:
        fifo = deque(heavy + light)
        while fifo:
            job = fifo.popleft()
            if job.user_id >= 100:
                waits.append(now - job.submitted_at)
            now += 1.0
    return round(max(waits), 3)


async def main(arguments: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        server = NatsServer(scratch / "jetstream")
        server.start()
        try:
            local, remote = Bench(scratch, None), Bench(scratch, server)
            in_process = await overhead(local, arguments.jobs)
            broker = await overhead(remote, arguments.jobs)
            scaling: dict[str, object] = {}
            one = await throughput(remote, 1, arguments.render_s)
            for devices in (2, 4, 8):
                rate = await throughput(remote, devices, arguments.render_s)
                scaling[f"N={devices}"] = {
                    "jobs_per_s": round(rate, 2),
                    "speedup": round(rate / one, 2),
                    "efficiency": round(rate / one / devices, 3),  # goal >= 0.9
                }
        finally:
            server.stop()
    return {
        "overhead_in_process": in_process,  # goal p50 <= 20 ms
        "overhead_broker": broker,
        "broker_extra_p50_ms": round(broker["p50_ms"] - in_process["p50_ms"], 2),  # goal <= 5
        "throughput_1_worker_jobs_per_s": round(one, 2),
        "throughput_scaling": scaling,
        "light_users_worst_wait_s": {
            "fair": light_users_worst_wait(fair=True),
            "fifo": light_users_worst_wait(fair=False),
        },
        "render_s": arguments.render_s,
        "jobs": arguments.jobs,
        "python": sys.version.split()[0],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs per overhead measurement")
    parser.add_argument("--render-s", type=float, default=0.2, help="render time for scaling")
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
