"""What Easel adds on top of a raw pipeline call, measured in one process.

raw: ``Engine.render`` on the tiny model. easel: the same request as ``/imagine`` through the
wire-level fake Discord → discord.py → cog → journal → fair queue → worker thread → engine →
PNG stored → webhook edit with the file, timed from the interaction's dispatch to the edited
message arriving at the fake. Prints JSON.

    python benchmarks/overhead.py [--runs 20] [--steps 10] [--size 64]
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
from inference.engine import Engine
from inference.tiny import write_tiny_model
from inference.types import RenderRequest
from tests.e2e.conftest import easel_settings
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.fake_discord.fixtures import running_bot


def has_picture(message: StoredMessage) -> bool:
    return bool(message.attachments)


def raw_times(models_dir: Path, request: RenderRequest, runs: int) -> list[float]:
    engine = Engine(models_dir, device="cpu")
    engine.render(request)  # load and warm up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        engine.render(request)
        times.append(time.perf_counter() - started)
    return times


async def easel_times(
    models_dir: Path, data_dir: Path, request: RenderRequest, runs: int
) -> list[float]:
    options = {
        "prompt": request.prompt,
        "seed": request.seed,
        "steps": request.steps,
        "size": f"{request.width}x{request.height}",
    }
    times = []
    async with FakeDiscord() as fake:
        bot = build(easel_settings(fake, data_dir, models_dir))
        async with running_bot(fake, bot):
            for attempt in range(runs + 1):
                started = time.perf_counter()
                handle = await fake.invoke_command("imagine", options)
                await handle.wait_for_original(has_picture, timeout=120)
                if attempt:  # the first one loads the model
                    times.append(time.perf_counter() - started)
        if fake.violations:
            raise SystemExit(f"protocol violations: {fake.violations}")
    return times


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
    args = parser.parse_args()
    request = RenderRequest(
        "a (red:1.2) cat", seed=1, steps=args.steps, width=args.size, height=args.size
    )
    with tempfile.TemporaryDirectory() as scratch:
        models_dir = Path(scratch) / "models"
        write_tiny_model(models_dir / "tiny")
        raw = raw_times(models_dir, request, args.runs)
        easel = asyncio.run(easel_times(models_dir, Path(scratch) / "data", request, args.runs))
    raw_median = statistics.median(raw)
    easel_median = statistics.median(easel)
    print(
        json.dumps(
            {
                "benchmark": "overhead",
                "runs": args.runs,
                "request": {"steps": args.steps, "size": f"{args.size}x{args.size}"},
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
