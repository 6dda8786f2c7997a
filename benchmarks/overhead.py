"""What Easel adds on top of a raw pipeline call, measured in one process.

raw: ``Engine.render`` on the tiny model, on the bot's own device thread. easel: the same
request as ``/imagine`` through the wire-level fake Discord → discord.py → cog → journal →
fair queue → worker thread → engine → PNG stored → webhook edit with the file, timed from the
interaction's dispatch to the edited message arriving at the fake. Prints JSON.

    python benchmarks/overhead.py [--runs 20] [--steps 10] [--size 64] [--count 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.app import build
from inference.tiny import write_tiny_model
from inference.types import RenderRequest
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import has_picture
from tests.fake_discord import FakeDiscord
from tests.fake_discord.fixtures import running_bot


async def measure(
    models_dir: Path, data_dir: Path, request: RenderRequest, runs: int
) -> tuple[list[float], list[float]]:
    """Interleaved: the raw render on the bot's own device thread and engine, then the same
    request as /imagine, so both see the same thread, model and machine state."""
    options = {
        "prompt": request.prompt,
        "seed": request.seed,
        "steps": request.steps,
        "size": f"{request.width}x{request.height}",
        "count": request.count,
    }
    raw, easel = [], []
    async with FakeDiscord() as fake:
        bot = build(easel_settings(fake, data_dir, models_dir))
        async with running_bot(fake, bot):
            [device] = bot.queue.slots
            for attempt in range(runs + 1):  # the first round loads the model
                started = time.perf_counter()
                await device.render(request, job_id="raw")
                raw_s = time.perf_counter() - started
                started = time.perf_counter()
                handle = await fake.invoke_command("imagine", options)
                await handle.wait_for_original(has_picture, timeout=120)
                if attempt:
                    raw.append(raw_s)
                    easel.append(time.perf_counter() - started)
        if fake.violations:
            raise SystemExit(f"protocol violations: {fake.violations}")
    return raw, easel


def summary(times: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(times) * 1000, 2),
        "min_ms": round(min(times) * 1000, 2),
        "max_ms": round(max(times) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--count", type=int, default=1, help="pictures per request (a grid)")
    args = parser.parse_args()
    request = RenderRequest(
        "a (red:1.2) cat",
        seed=1,
        steps=args.steps,
        width=args.size,
        height=args.size,
        count=args.count,
    )
    with tempfile.TemporaryDirectory() as scratch:
        models_dir = Path(scratch) / "models"
        write_tiny_model(models_dir / "tiny")
        raw, easel = asyncio.run(measure(models_dir, Path(scratch) / "data", request, args.runs))
    raw_median = statistics.median(raw)
    easel_median = statistics.median(easel)
    print(
        json.dumps(
            {
                "benchmark": "overhead",
                "runs": args.runs,
                "request": {
                    "steps": args.steps,
                    "size": f"{args.size}x{args.size}",
                    "count": args.count,
                },
                "raw_pipeline": summary(raw),
                "through_easel": summary(easel),
                "overhead_ms": round((easel_median - raw_median) * 1000, 2),
                "ratio": round(easel_median / raw_median, 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
