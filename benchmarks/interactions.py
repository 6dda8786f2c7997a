"""Discord interaction load: many members running ``/imagine`` at once against a zero-time engine.

Easel is built by its composition root and connected to the wire-level fake Discord; the
engine renders instantly (``InstantEngine``), so what is measured is the bot itself: gateway
dispatch → discord.py → cog → journal → fair queue → worker thread → PNG stored → webhook
edit. Every interaction must be acknowledged (goal: p99 <= 300 ms) and get exactly one result.

By default the fake Discord runs in a process of its own (``benchmarks/interaction_burst.py``,
on loopback): its gateway and HTTP handling, which the real Discord does on its own machines,
then takes no CPU from the bot, and ``cpu_s_to_last_ack`` is the bot's process alone.
``--fake in-process`` runs fake, harness and bot on one event loop, as before the sixth stop.
Acknowledgements are timed by the fake either way (INTERACTION_CREATE sent, defer received).
The bot runs on the event loop ``easel run`` picks (``bot.event_loop``: uvloop's where it is
installed); the fake's own process keeps asyncio's.
Prints JSON; with ``--bursts N``, N bursts one after the other in one process (each with a new
bot, database and fake), to tell what only a fresh process's first burst pays for.

``--sqlite-delay-ms MS`` makes every SQL statement of the bot's database wait MS ms on the
database's thread first, as a slow disk (network storage, a busy SD card) would.

    python benchmarks/interactions.py [--requests 200] [--members 50] [--bursts 1]
        [--fake process|in-process] [--sqlite-delay-ms 0]
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord.utils

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.interaction_burst import BurstOutcome, add_members, fire_burst, percentile
from bot import event_loop
from bot.app import build
from bot.jobs import retention
from bot.policy.quota import DEFAULT_LIMITS
from inference.worker import RenderEngine
from tests.e2e.conftest import easel_settings
from tests.fake_discord import FakeDiscord
from tests.fake_discord.fixtures import running_bot
from tests.support.engines import InstantEngine

ACK_P99_GOAL_MS = 300.0
FAKE_MODES = ("process", "in-process")
FAKE_SCRIPT = Path(__file__).resolve().with_name("interaction_burst.py")


def latency_summary(seconds: Sequence[float]) -> dict[str, float | None]:
    if not seconds:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "p50_ms": round(percentile(seconds, 0.50) * 1000, 1),
        "p99_ms": round(percentile(seconds, 0.99) * 1000, 1),
        "max_ms": round(max(seconds) * 1000, 1),
    }


@dataclass(frozen=True)
class FakeAddress:
    """Where a fake Discord in another process listens: what ``easel_settings`` and
    ``running_bot`` read of a ``FakeDiscord``."""

    token: str
    api_base: str
    gateway_url: str
    guild_id: int


@dataclass
class LoadResult:
    requests: int
    members: int
    fake: str  # one of FAKE_MODES
    outcome: BurstOutcome
    # CPU time from the burst to the last acknowledgement, beside the machine's load: wall
    # time alone varies with what else runs. The bot's process: with the fake in its own
    # process, the bot alone; in process, bot, fake and harness together.
    cpu_seconds_to_last_ack: float | None
    # The fake's own process's (None when it shares the bot's).
    fake_cpu_seconds_to_last_ack: float | None
    load_average: float

    def report(self) -> dict[str, Any]:
        outcome = self.outcome
        exactly_one = sum(1 for count in outcome.results_per_interaction if count == 1)
        ack = latency_summary(outcome.ack_seconds)
        ack_p99 = ack["p99_ms"]
        return {
            "benchmark": "interactions",
            "requests": self.requests,
            "members": self.members,
            "fake_discord": self.fake,
            "acknowledged": len(outcome.ack_seconds),
            "time_to_ack": ack,
            "time_to_result": latency_summary(outcome.result_seconds),
            "results_arrived": exactly_one,
            "lost": sum(1 for count in outcome.results_per_interaction if count == 0),
            "duplicated": sum(1 for count in outcome.results_per_interaction if count > 1),
            "protocol_violations": len(outcome.violations),
            "violation_details": outcome.violations[:10],
            "wall_s": round(outcome.wall_seconds, 3),
            "cpu_s_to_last_ack": rounded(self.cpu_seconds_to_last_ack),
            "cpu_counted": "bot process" if self.fake == "process" else "bot, fake and harness",
            "fake_cpu_s_to_last_ack": rounded(self.fake_cpu_seconds_to_last_ack),
            "load_average_1m": self.load_average,
            # discord.py's JSON parser: orjson where installed (a dependency since session 24).
            "discord_json": "orjson" if discord.utils.HAS_ORJSON else "json",
            "ack_p99_goal_ms": ACK_P99_GOAL_MS,
            "ack_goal_met": ack_p99 is not None and ack_p99 <= ACK_P99_GOAL_MS,
        }


def rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def instant_engine(_device: str) -> RenderEngine:
    return InstantEngine()


@contextmanager
def slowed_database(delay_ms: float) -> Iterator[list[int]]:
    """Every statement of the journal connections the bot opens meanwhile waits ``delay_ms``
    on the database's thread before it runs (sqlite3's trace callback runs there); yields the
    count of statements slowed. Nothing is changed for 0."""
    slowed = [0]
    opening = retention.connect
    if not delay_ms:
        yield slowed
        return

    def wait(_statement: str) -> None:
        slowed[0] += 1
        time.sleep(delay_ms / 1000)

    async def connect(path: Path, **options: Any) -> Any:
        conn = await opening(path, **options)
        await conn.set_trace_callback(wait)
        return conn

    retention.connect = connect  # type: ignore[assignment]
    try:
        yield slowed
    finally:
        retention.connect = opening


async def run_load(
    requests: int, members: int, data_dir: Path, fake: str = "process"
) -> LoadResult:
    """Fire ``requests`` /imagine commands at once, round-robin over ``members`` members,
    with the fake Discord in its own process or in this one (``fake``, one of FAKE_MODES)."""
    if fake == "process":
        return await run_load_against_fake_process(requests, members, data_dir)
    return await run_load_in_process(requests, members, data_dir)


async def run_load_in_process(requests: int, members: int, data_dir: Path) -> LoadResult:
    async with FakeDiscord() as fake:
        member_ids = add_members(fake, members)
        # The engine never loads a model, so an empty models folder will do.
        bot = build(easel_settings(fake, data_dir, data_dir / "models"), instant_engine)
        async with running_bot(fake, bot):
            load_average = os.getloadavg()[0]
            cpu_started = time.process_time()
            cpu_at_last_ack: list[float] = []
            outcome = await fire_burst(
                fake,
                member_ids,
                requests,
                lambda: cpu_at_last_ack.append(time.process_time() - cpu_started),
            )
            return LoadResult(
                requests=requests,
                members=members,
                fake="in-process",
                outcome=outcome,
                cpu_seconds_to_last_ack=cpu_at_last_ack[0] if cpu_at_last_ack else None,
                fake_cpu_seconds_to_last_ack=None,
                load_average=load_average,
            )


async def run_load_against_fake_process(requests: int, members: int, data_dir: Path) -> LoadResult:
    """The bot here, the fake in ``interaction_burst.py``'s process: it says where it
    listens, fires on ``go`` and sends what it saw (this process's CPU time included, read
    when it saw the last acknowledgement); ``stop`` after the bot has logged out."""
    fake_process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(FAKE_SCRIPT),
        f"--requests={requests}",
        f"--members={members}",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert fake_process.stdin is not None and fake_process.stdout is not None
    commands, replies = fake_process.stdin, fake_process.stdout

    async def reply() -> dict[str, Any]:
        line = await replies.readline()
        if not line:
            raise RuntimeError("the fake Discord's process ended early (its stderr says why)")
        message: dict[str, Any] = json.loads(line)
        return message

    try:
        address = FakeAddress(**await reply())
        bot = build(easel_settings(address, data_dir, data_dir / "models"), instant_engine)  # type: ignore[arg-type]
        async with running_bot(address, bot):  # type: ignore[arg-type]
            load_average = os.getloadavg()[0]
            commands.write(b"go\n")
            await commands.drain()
            done = await reply()
        commands.write(b"stop\n")
        await commands.drain()
    finally:
        commands.close()  # its end of file stops the fake if "stop" was not sent
        await fake_process.wait()
    if fake_process.returncode != 0:
        raise RuntimeError(f"the fake Discord's process failed ({fake_process.returncode})")
    return LoadResult(
        requests=requests,
        members=members,
        fake="process",
        outcome=BurstOutcome(**done["outcome"]),
        cpu_seconds_to_last_ack=done["bot_cpu_s_to_last_ack"],
        fake_cpu_seconds_to_last_ack=done["fake_cpu_s_to_last_ack"],
        load_average=load_average,
    )


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
    parser.add_argument(
        "--sqlite-delay-ms",
        type=float,
        default=0.0,
        help="wait this long before each SQL statement of the bot's database (a slow disk)",
    )
    parser.add_argument(
        "--fake",
        choices=FAKE_MODES,
        default="process",
        help="the fake Discord in its own process (the default: the bot's CPU is its own) or "
        "on the bot's event loop",
    )
    args = parser.parse_args()
    check_arguments(args.requests, args.members)
    if args.bursts < 1:
        raise SystemExit(f"--bursts must be at least 1, got {args.bursts}")
    if not 0 <= args.sqlite_delay_ms <= 1000:
        raise SystemExit(f"--sqlite-delay-ms must be in 0..1000, got {args.sqlite_delay_ms}")
    reports = []
    for _ in range(args.bursts):
        with tempfile.TemporaryDirectory() as scratch, slowed_database(args.sqlite_delay_ms):
            result = event_loop.run(run_load(args.requests, args.members, Path(scratch), args.fake))
        reports.append({**result.report(), "sqlite_delay_ms": args.sqlite_delay_ms})
    print(json.dumps(reports[0] if args.bursts == 1 else reports, indent=2))


if __name__ == "__main__":
    main()
