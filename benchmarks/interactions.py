"""Discord interaction load: many members running ``/imagine`` at once against a zero-time engine.

Easel is built by its composition root and connected to the wire-level fake Discord; the
engine renders instantly (``InstantEngine``), so what is measured is the bot itself: gateway
dispatch → discord.py → cog → journal → fair queue → worker thread → PNG stored → webhook
edit. Every interaction must be acknowledged (goal: p99 <= 300 ms) and get exactly one result.
Prints JSON; with ``--bursts N``, N bursts one after the other in one process (each with a new
bot, database and fake), to tell what only a fresh process's first burst pays for.

    python benchmarks/interactions.py [--requests 200] [--members 50] [--bursts 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.app import build
from bot.policy.quota import DEFAULT_LIMITS
from inference.worker import RenderEngine
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import has_picture
from tests.fake_discord import FakeDiscord, InteractionHandle
from tests.fake_discord.fixtures import running_bot
from tests.support.engines import InstantEngine

ACK_P99_GOAL_MS = 300.0
# Members get ids far above the fake's own users (owner, default member).
FIRST_MEMBER_ID = 500_000
RESULT_TIMEOUT_S = 120.0
# After the last result: how long to keep watching for a duplicate result message.
DUPLICATE_WATCH_S = 0.5
# How often the watcher looks for results: the resolution of time_to_result.
RESULT_POLL_S = 0.01
PROMPT_OPTIONS = {"steps": 2, "size": "64x64"}


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float | None]:
    if not seconds:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "p50_ms": round(percentile(seconds, 0.50) * 1000, 1),
        "p99_ms": round(percentile(seconds, 0.99) * 1000, 1),
        "max_ms": round(max(seconds) * 1000, 1),
    }


def has_result(handle: InteractionHandle) -> bool:
    """Whether the interaction's own response carries its picture."""
    original = handle.original
    return original is not None and not original.deleted and has_picture(original)


def result_messages(handle: InteractionHandle) -> int:
    """How many messages carrying a picture answered this interaction (must be exactly 1)."""
    return int(has_result(handle)) + sum(1 for message in handle.followups if has_picture(message))


@dataclass
class LoadResult:
    requests: int
    members: int
    ack_seconds: list[float]
    result_seconds: list[float]
    results_per_interaction: list[int]
    violations: list[str]
    wall_seconds: float
    # This process's CPU time from the burst to the last acknowledgement (bot, fake and harness
    # share it), beside the machine's load: wall time alone varies with what else runs.
    cpu_seconds_to_last_ack: float | None
    load_average: float

    def report(self) -> dict[str, Any]:
        exactly_one = sum(1 for count in self.results_per_interaction if count == 1)
        ack = latency_summary(self.ack_seconds)
        ack_p99 = ack["p99_ms"]
        return {
            "benchmark": "interactions",
            "requests": self.requests,
            "members": self.members,
            "acknowledged": len(self.ack_seconds),
            "time_to_ack": ack,
            "time_to_result": latency_summary(self.result_seconds),
            "results_arrived": exactly_one,
            "lost": sum(1 for count in self.results_per_interaction if count == 0),
            "duplicated": sum(1 for count in self.results_per_interaction if count > 1),
            "protocol_violations": len(self.violations),
            "violation_details": self.violations[:10],
            "wall_s": round(self.wall_seconds, 3),
            "cpu_s_to_last_ack": None
            if self.cpu_seconds_to_last_ack is None
            else round(self.cpu_seconds_to_last_ack, 3),
            "load_average_1m": self.load_average,
            "ack_p99_goal_ms": ACK_P99_GOAL_MS,
            "ack_goal_met": ack_p99 is not None and ack_p99 <= ACK_P99_GOAL_MS,
        }


async def run_load(requests: int, members: int, data_dir: Path) -> LoadResult:
    """Fire ``requests`` /imagine commands at once, round-robin over ``members`` members."""

    def instant_engine(_device: str) -> RenderEngine:
        return InstantEngine()

    async with FakeDiscord() as fake:
        member_ids = [FIRST_MEMBER_ID + index for index in range(members)]
        for member_id in member_ids:
            fake.add_member(member_id, f"member-{member_id}", roles=(fake.member_role_id,))
        # The engine never loads a model, so an empty models folder will do.
        bot = build(easel_settings(fake, data_dir, data_dir / "models"), instant_engine)
        async with running_bot(fake, bot):
            load_average = os.getloadavg()[0]
            started, cpu_started = time.perf_counter(), time.process_time()
            handles = await asyncio.gather(
                *(
                    fake.invoke_command(
                        "imagine",
                        {"prompt": f"load test {index}", "seed": index, **PROMPT_OPTIONS},
                        user=member_ids[index % members],
                    )
                    for index in range(requests)
                )
            )
            result_seconds, cpu_at_last_ack = await watch_results(handles, started)
            wall = time.perf_counter() - started
            await asyncio.sleep(DUPLICATE_WATCH_S)
            return LoadResult(
                requests=requests,
                members=members,
                ack_seconds=[h.ack_latency for h in handles if h.ack_latency is not None],
                result_seconds=result_seconds,
                results_per_interaction=[result_messages(handle) for handle in handles],
                violations=list(fake.violations),
                wall_seconds=wall,
                cpu_seconds_to_last_ack=None
                if cpu_at_last_ack is None
                else cpu_at_last_ack - cpu_started,
                load_average=load_average,
            )


async def watch_results(
    handles: Sequence[InteractionHandle], started: float
) -> tuple[list[float], float | None]:
    """Seconds from the burst to each result, and this process's CPU time when the last
    acknowledgement was seen (None: not all were), polled by one watcher: a waiter per
    interaction (``wait_for_original``) is woken by every change of the fake, and 200 of them
    spent more of the event loop the bot runs on than the bot itself."""
    waiting = set(range(len(handles)))
    seconds: list[float] = []
    cpu_at_last_ack = None
    deadline = started + RESULT_TIMEOUT_S
    while waiting and time.perf_counter() < deadline:
        await asyncio.sleep(RESULT_POLL_S)
        if cpu_at_last_ack is None and all(h.ack_latency is not None for h in handles):
            cpu_at_last_ack = time.process_time()
        arrived = {index for index in waiting if has_result(handles[index])}
        seconds.extend(time.perf_counter() - started for _ in arrived)
        waiting -= arrived
    return seconds, cpu_at_last_ack


def check_arguments(requests: int, members: int) -> None:
    if requests < 1:
        raise SystemExit(f"--requests must be at least 1, got {requests}")
    if not 1 <= members <= requests:
        raise SystemExit(f"--members must be in 1..{requests} (the request count), got {members}")
    daily = DEFAULT_LIMITS.images_per_day
    per_member = math.ceil(requests / members)
    if daily is not None and per_member > daily:
        raise SystemExit(
            f"{per_member} requests per member exceed the default quota of {daily} images a "
            f"day; use at least {math.ceil(requests / daily)} members"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--bursts", type=int, default=1)
    args = parser.parse_args()
    check_arguments(args.requests, args.members)
    if args.bursts < 1:
        raise SystemExit(f"--bursts must be at least 1, got {args.bursts}")
    reports = []
    for _ in range(args.bursts):
        with tempfile.TemporaryDirectory() as scratch:
            result = asyncio.run(run_load(args.requests, args.members, Path(scratch)))
        reports.append(result.report())
    print(json.dumps(reports[0] if args.bursts == 1 else reports, indent=2))


if __name__ == "__main__":
    main()
