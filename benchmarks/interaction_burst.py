"""The fake Discord's side of ``benchmarks/interactions.py``: members, the burst of ``/imagine``
commands and what the fake saw of the answers. Imports the fake and nothing of the bot, so it
can run in a process of its own (``python benchmarks/interaction_burst.py``, driven by
``interactions.py`` over its stdin and stdout, one JSON object a line) and leave the bot's
process only what a bot does against the real Discord.

Both clocks of an acknowledgement are the fake's: INTERACTION_CREATE sent, defer received.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fake_discord import FakeDiscord, InteractionHandle
from tests.support.pictures import has_picture

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


def has_result(handle: InteractionHandle) -> bool:
    """Whether the interaction's own response carries its picture."""
    original = handle.original
    return original is not None and not original.deleted and has_picture(original)


def result_messages(handle: InteractionHandle) -> int:
    """How many messages carrying a picture answered this interaction (must be exactly 1)."""
    return int(has_result(handle)) + sum(1 for message in handle.followups if has_picture(message))


@dataclasses.dataclass
class BurstOutcome:
    """What the fake saw of one burst (plain data: it crosses the process boundary as JSON)."""

    ack_seconds: list[float]
    result_seconds: list[float]
    results_per_interaction: list[int]
    violations: list[str]
    wall_seconds: float


def add_members(fake: FakeDiscord, members: int) -> list[int]:
    member_ids = [FIRST_MEMBER_ID + index for index in range(members)]
    for member_id in member_ids:
        fake.add_member(member_id, f"member-{member_id}", roles=(fake.member_role_id,))
    return member_ids


async def fire_burst(
    fake: FakeDiscord, member_ids: Sequence[int], requests: int, on_all_acked: Callable[[], None]
) -> BurstOutcome:
    """Fire ``requests`` /imagine commands at once, round-robin over ``member_ids``; call
    ``on_all_acked`` when the watcher first sees every one acknowledged."""
    started = time.perf_counter()
    handles = await asyncio.gather(
        *(
            fake.invoke_command(
                "imagine",
                {"prompt": f"load test {index}", "seed": index, **PROMPT_OPTIONS},
                user=member_ids[index % len(member_ids)],
            )
            for index in range(requests)
        )
    )
    result_seconds = await watch_results(handles, started, on_all_acked)
    wall = time.perf_counter() - started
    await asyncio.sleep(DUPLICATE_WATCH_S)
    return BurstOutcome(
        ack_seconds=[h.ack_latency for h in handles if h.ack_latency is not None],
        result_seconds=result_seconds,
        results_per_interaction=[result_messages(handle) for handle in handles],
        violations=list(fake.violations),
        wall_seconds=wall,
    )


async def watch_results(
    handles: Sequence[InteractionHandle], started: float, on_all_acked: Callable[[], None]
) -> list[float]:
    """Seconds from the burst to each result, polled by one watcher: a waiter per interaction
    (``wait_for_original``) is woken by every change of the fake, and 200 of them spent more
    of the event loop than the bot itself when they shared it."""
    waiting = set(range(len(handles)))
    seconds: list[float] = []
    all_acked = False
    deadline = started + RESULT_TIMEOUT_S
    while waiting and time.perf_counter() < deadline:
        await asyncio.sleep(RESULT_POLL_S)
        if not all_acked and all(h.ack_latency is not None for h in handles):
            all_acked = True
            on_all_acked()
        arrived = {index for index in waiting if has_result(handles[index])}
        seconds.extend(time.perf_counter() - started for _ in arrived)
        waiting -= arrived
    return seconds


def send(message: dict[str, object]) -> None:
    print(json.dumps(message), flush=True)


def cpu_seconds_of(pid: int) -> float:
    """A process's CPU time so far (user + system, all its threads; Linux, in clock ticks of
    10 ms): the bot's, read from here when the fake sees its last acknowledgement, since the
    bot's own loop would hear of it only after the work queued behind it."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    user_ticks, system_ticks = int(fields[11]), int(fields[12])
    return (user_ticks + system_ticks) / os.sysconf("SC_CLK_TCK")


async def serve(requests: int, members: int) -> None:
    """The fake in its own process, started by the bot's: announce where it listens, fire
    the burst on ``go``, report, and stay up until ``stop`` (after the bot has closed its
    gateway connection)."""
    loop = asyncio.get_running_loop()
    async with FakeDiscord() as fake:
        member_ids = add_members(fake, members)
        send(
            {
                "token": fake.token,
                "api_base": fake.api_base,
                "gateway_url": fake.gateway_url,
                "guild_id": fake.guild_id,
            }
        )
        # One thread blocked on stdin, woken twice: the commands of the bot's process.
        command = await loop.run_in_executor(None, sys.stdin.readline)
        if command.strip() != "go":
            raise SystemExit(f"expected 'go' on stdin, got {command!r}")
        # What start-up allocated is not collected in the middle of the burst (the fake's
        # pauses would count as the bot's latency).
        gc.collect()
        gc.freeze()
        bot_pid = os.getppid()
        cpu_started = time.process_time(), cpu_seconds_of(bot_pid)
        cpu_to_last_ack: list[tuple[float, float]] = []

        def all_acked() -> None:
            fake_cpu, bot_cpu = time.process_time(), cpu_seconds_of(bot_pid)
            cpu_to_last_ack.append((fake_cpu - cpu_started[0], bot_cpu - cpu_started[1]))

        outcome = await fire_burst(fake, member_ids, requests, all_acked)
        fake_cpu, bot_cpu = cpu_to_last_ack[0] if cpu_to_last_ack else (None, None)
        send(
            {
                "outcome": dataclasses.asdict(outcome),
                "fake_cpu_s_to_last_ack": fake_cpu,
                "bot_cpu_s_to_last_ack": bot_cpu,
            }
        )
        await loop.run_in_executor(None, sys.stdin.readline)  # "stop", or end of file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--members", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.requests, args.members))


if __name__ == "__main__":
    main()
