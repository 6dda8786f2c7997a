"""What a deep queue costs the event loop in the fair scheduler: each /imagine (a submit, then
``eta`` + ``position`` of the new job, as ``JobQueue.state`` for its reply), each cancel (then
a position), and a dashboard poll after a change (``snapshot`` of the first
``bot.web.dashboard.QUEUE_SHOWN`` jobs), against a snapshot of the whole queue.

    python benchmarks/deep_queue.py [--depths 5000:2000 20000:5000] [--tries 7]

Each depth is QUEUED:MEMBERS (jobs spread at random over the members, one class, one device).
Best of ``--tries`` per figure, in milliseconds. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.jobs.scheduler import FairScheduler, PriorityClass, QueuedJob, SchedulerConfig
from bot.web.dashboard import QUEUE_SHOWN


def _job(job_id: str, member: int, at: float) -> QueuedJob:
    return QueuedJob(job_id, member, 1, ("model",), PriorityClass.STANDARD, at)


def measure(queued: int, members: int, tries: int) -> dict[str, float | int]:
    gc.collect()  # an earlier depth's schedulers (cycles through their kept walks) go first
    rng = random.Random(1)
    scheduler = FairScheduler(SchedulerConfig(max_batch=1), devices=["cuda:0"])
    for index in range(queued):
        scheduler.submit(_job(f"j{index}", rng.randrange(members), float(index)))
    now = queued + 1.0
    best: dict[str, float] = {}

    def timed(name: str, call: Callable[[], object]) -> None:
        start = time.perf_counter()
        call()
        best[name] = min(best.get(name, float("inf")), (time.perf_counter() - start) * 1000)

    for attempt in range(tries):
        now += 0.5
        new = _job(f"n{attempt}", rng.randrange(members), now)

        def imagine(new: QueuedJob = new, now: float = now) -> None:
            scheduler.submit(new)
            scheduler.eta(new.job_id, now)
            scheduler.position(new.job_id, now)

        def cancel(new: QueuedJob = new, now: float = now, attempt: int = attempt) -> None:
            scheduler.cancel(f"j{queued // 2 + attempt}")
            scheduler.position(new.job_id, now)

        timed("submit_and_state_ms", imagine)
        timed("cancel_and_state_ms", cancel)
        scheduler.cancel(f"j{queued // 3 + attempt}")  # a change: the poll walks anew
        timed("dashboard_snapshot_ms", lambda now=now: scheduler.snapshot(now, QUEUE_SHOWN))
        timed("whole_snapshot_ms", lambda now=now: scheduler.snapshot(now))
    for _ in range(tries):
        burst = _submitted_at_once(queued, members, rng)
        aged = burst.config.aging_seconds
        timed("aging_burst_ms", lambda burst=burst, aged=aged: burst.snapshot(aged, QUEUE_SHOWN))
    return {
        "queued": queued,
        "members": members,
        "positions_counted": scheduler.config.positions_counted,
        **{name: round(ms, 3) for name, ms in best.items()},
    }


def _submitted_at_once(queued: int, members: int, rng: random.Random) -> FairScheduler:
    scheduler = FairScheduler(SchedulerConfig(max_batch=1), devices=["cuda:0"])
    for index in range(queued):
        scheduler.submit(_job(f"a{index}", rng.randrange(members), 0.0))
    scheduler.snapshot(0.0, QUEUE_SHOWN)
    return scheduler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depths", nargs="+", default=["5000:2000", "20000:5000"])
    parser.add_argument("--tries", type=int, default=7)
    arguments = parser.parse_args()
    depths = [tuple(int(part) for part in depth.split(":")) for depth in arguments.depths]
    report = [measure(queued, members, arguments.tries) for queued, members in depths]
    print(json.dumps({"depths": report}, indent=2))


if __name__ == "__main__":
    main()
