"""Throughput of one batched pipeline call against the same requests rendered one by one.

    python benchmarks/batching.py [--models-dir DIR --model NAME] [--size 64] [--steps 4]

Without --models-dir a tiny random-weight model is written to a temporary folder. Prints one
JSON object; compare ratios from the same run, not absolute times across machines.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.engine import Engine
from inference.tiny import write_tiny_model
from inference.types import RenderRequest

PROMPTS = ("a red fox in snow", "a lighthouse at dusk", "a bowl of ramen", "a city in rain")


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path)
    parser.add_argument("--model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        models_dir = arguments.models_dir
        if models_dir is None:
            models_dir = Path(scratch)
            write_tiny_model(models_dir / "tiny")
        engine = Engine(models_dir, device=arguments.device, default_model=arguments.model)
        base = RenderRequest("", width=arguments.size, height=arguments.size, steps=arguments.steps)
        requests = [
            dataclasses.replace(base, prompt=prompt, seed=index)
            for index, prompt in enumerate(PROMPTS)
        ]
        engine.render_batch(requests)  # warm-up: model load, kernels, allocator
        sequential = min(
            timed(lambda: [engine.render(request) for request in requests])
            for _ in range(arguments.repeats)
        )
        batched = min(
            timed(lambda: engine.render_batch(requests)) for _ in range(arguments.repeats)
        )
    print(
        json.dumps(
            {
                "device": arguments.device,
                "model": arguments.model or "tiny",
                "size": arguments.size,
                "steps": arguments.steps,
                "requests": len(requests),
                "sequential_s": round(sequential, 4),
                "batched_s": round(batched, 4),
                "throughput_ratio": round(sequential / batched, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
