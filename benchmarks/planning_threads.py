"""How long a cheap prompt waits for a planning thread while four members' costly prompts
hold the threads their servers may (``bot.policy.prompt_safety.PromptPlanner``, real prompt
language, default budget), as JSON.

Run: ``python benchmarks/planning_threads.py [--delays 0 0.5 1.5 2.6] [--one-server]``. Four
members each send a 4,000-character prompt that would plan for seconds (a distinct text per step
and per picture: 150 steps, 4 pictures; now refused by the cap on chunks over its steps as soon as
its count passes it), each in a server of their own, or with ``--one-server`` all four in one
server (a raid: it holds at most ``SERVER_THREADS`` threads, its other prompts wait their turn);
a fifth member's short prompt is sent ``delay_s`` after them, from another server. Reported per
delay: how the cheap prompt was answered (planned, or refused and why), after how long, and how
long after the costly prompts were sent the planning threads were all free again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.policy.prompt_safety import PLAN_THREADS, PromptPlanner
from bot.user_errors import UserError
from inference.types import RenderRequest

DELAYS_S = (0.0, 0.5, 1.5, 2.6)


def costly(tag: str) -> RenderRequest:
    """Schedules at many step numbers and ``{a|b}`` choices in the prompt and the negative:
    a distinct text per step and per picture, the prompt language's most work for the
    length. ``tag`` makes every word new, so no cache of an earlier plan helps."""
    parts: list[str] = []
    index = 0
    while len(" ".join(parts)) < 3_900:
        parts.append(f"[w{tag}{index}:v{index}:{index % 149 + 1}] {{x{index}|y{index}}}")
        index += 1
    text = " ".join(parts)[:3_990]
    text = text[: text.rfind("]") + 1]
    return RenderRequest(text, negative_prompt=text, seed=1, steps=150, count=4)


CHEAP = RenderRequest("a lighthouse at dusk, oil painting", seed=1, steps=30)


async def outcome(
    planner: PromptPlanner, request: RenderRequest, member: int, guild_id: int
) -> str:
    try:
        await planner.check(request, (), member, guild_id=guild_id)
    except UserError as refused:
        return f"refused: {refused}"
    return "planned"


async def threads_free(planner: PromptPlanner, started: float) -> float:
    """Seconds from ``started`` until a no-op runs on every planning thread at once."""
    threads = planner._threads  # the measurement looks inside: no public view of its threads
    gate = threading.Barrier(PLAN_THREADS + 1)
    for _ in range(PLAN_THREADS):
        threads.submit(gate.wait, 120)
    await asyncio.to_thread(gate.wait, 120)
    return time.perf_counter() - started


async def one_round(delay_s: float, one_server: bool) -> dict[str, object]:
    planner = PromptPlanner(None)
    await planner.warm_up()
    started = time.perf_counter()
    costly_plans = [
        asyncio.create_task(
            outcome(planner, costly(f"{delay_s}m{member}q"), member, 0 if one_server else member)
        )
        for member in range(PLAN_THREADS)
    ]
    await asyncio.sleep(delay_s)
    sent = time.perf_counter()
    cheap = await outcome(planner, CHEAP, 99, 99)
    waited = time.perf_counter() - sent
    refusals = await asyncio.gather(*costly_plans)
    free_after = await threads_free(planner, started)
    return {
        "costly_servers": 1 if one_server else PLAN_THREADS,
        "cheap_sent_after_s": delay_s,
        # The loop competes with four planning threads for the GIL: later than asked.
        "cheap_really_sent_after_s": round(sent - started, 2),
        "cheap_answer": cheap[:60],
        "cheap_waited_s": round(waited, 2),
        "costly_answers": sorted({answer[:40] for answer in refusals}),
        "threads_all_free_after_s": round(free_after, 2),
    }


async def main(delays_s: list[float], one_server: bool) -> None:
    rounds = [await one_round(delay, one_server) for delay in delays_s]
    print(json.dumps(rounds, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--delays",
        type=float,
        nargs="+",
        default=list(DELAYS_S),
        metavar="S",
        help="seconds after the costly prompts that the cheap one is sent, one round each",
    )
    parser.add_argument(
        "--one-server",
        action="store_true",
        help="the four costly prompts' members in one server (else each in a server of its own)",
    )
    arguments = parser.parse_args()
    asyncio.run(main(arguments.delays, arguments.one_server))
