"""Where a sampling step's time goes: Easel's engine against a plain diffusers pipeline, under
``torch.profiler``, on the same weights.

Each side renders the same request twice, with ``--steps`` and with ``--steps + --extra``
sampling steps; the difference over ``--extra`` is one step's share, without prompt encoding,
VAE decode or PNG encoding. Per side it reports the host time per step, the aten operators and
device kernels per step, the device time per step, and the operators and kernels whose count
or time differs most between the two sides, which is what explains a gap in steps per second.

    python benchmarks/step_profile.py --device cuda --family sd15      # full-size, random weights
    python benchmarks/step_profile.py --device cpu                     # tiny model (smoke run)

Prints JSON.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sides import PROMPT, easel_and_plain
from benchmarks.timing import synchronize
from inference.tiny import write_tiny_model
from inference.types import RenderRequest

SAMPLER = "Euler a"
TOP = 12


def profiled(render: Callable[[int], None], steps: int, device: str) -> dict[str, Any]:
    """One render of ``steps`` steps: wall time, operator and kernel counts and times."""
    activities = [ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    synchronize(device)
    started = time.perf_counter()
    with profile(activities=activities) as trace:
        render(steps)
        synchronize(device)
    wall = time.perf_counter() - started
    operators: collections.Counter[str] = collections.Counter()
    kernels: collections.Counter[str] = collections.Counter()
    kernel_us: collections.Counter[str] = collections.Counter()
    for event in trace.events():
        if event.device_type.name == "CUDA":
            kernels[event.name] += 1
            kernel_us[event.name] += event.device_time
        elif event.name.startswith("aten::"):
            operators[event.name] += 1
    return {"wall": wall, "operators": operators, "kernels": kernels, "kernel_us": kernel_us}


def per_step(render: Callable[[int], None], steps: int, extra: int, device: str) -> dict[str, Any]:
    """One step's share: the difference between a render of ``steps + extra`` and ``steps``."""
    render(2)  # warm-up: load, first kernels
    short, long = profiled(render, steps, device), profiled(render, steps + extra, device)

    def difference(key: str) -> collections.Counter[str]:
        return collections.Counter(
            {name: (long[key][name] - short[key][name]) / extra for name in long[key]}
        )

    kernel_us = difference("kernel_us")
    return {
        "wall_ms": 1000 * (long["wall"] - short["wall"]) / extra,
        "operators": difference("operators"),
        "kernels": difference("kernels"),
        "kernel_us": kernel_us,
        "device_ms": sum(kernel_us.values()) / 1000,
    }


def summary(step: dict[str, Any]) -> dict[str, Any]:
    return {
        "wall_ms_per_step": round(step["wall_ms"], 3),
        "device_ms_per_step": round(step["device_ms"], 3),
        "operators_per_step": round(sum(step["operators"].values()), 1),
        "kernels_per_step": round(sum(step["kernels"].values()), 1),
    }


def largest_differences(easel: collections.Counter[str], plain: collections.Counter[str]) -> Any:
    """The names whose per-step figure differs most, Easel minus plain."""
    names = set(easel) | set(plain)
    gaps = {name: easel[name] - plain[name] for name in names}
    ranked = sorted(gaps.items(), key=lambda item: abs(item[1]), reverse=True)
    return [[name[:120], round(gap, 2)] for name, gap in ranked[:TOP] if gap]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--family", choices=["sd15", "sdxl"], help="full-size random weights")
    parser.add_argument("--size", type=int, help="square side (default: native, tiny: 64)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--extra", type=int, default=10)
    arguments = parser.parse_args()
    device = arguments.device
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    with tempfile.TemporaryDirectory() as scratch:
        models_dir = Path(scratch) / "models"
        if arguments.family is None:
            folder = write_tiny_model(models_dir / "tiny")
            size = arguments.size or 64
        else:
            from benchmarks.gpu import NATIVE_SIZES, write_model

            folder, _ = write_model(models_dir, arguments.family, device, dtype, tiny=False)
            size = arguments.size or NATIVE_SIZES[arguments.family]
        engine, pipeline = easel_and_plain(models_dir, folder, device, dtype, SAMPLER)

        def easel(steps: int) -> None:
            request = RenderRequest(
                PROMPT, width=size, height=size, steps=steps, seed=1, sampler=SAMPLER
            )
            engine.render(request)

        def plain(steps: int) -> None:
            pipeline(
                PROMPT,
                num_inference_steps=steps,
                width=size,
                height=size,
                generator=torch.Generator().manual_seed(1),
            )

        sides = {
            "plain": per_step(plain, arguments.steps, arguments.extra, device),
            "easel": per_step(easel, arguments.steps, arguments.extra, device),
        }
    report = {
        "benchmark": "step_profile",
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "model": arguments.family or "tiny",
        "size": size,
        "sampler": SAMPLER,
        **{name: summary(step) for name, step in sides.items()},
        "operators_easel_minus_plain": largest_differences(
            sides["easel"]["operators"], sides["plain"]["operators"]
        ),
        "kernels_easel_minus_plain": largest_differences(
            sides["easel"]["kernels"], sides["plain"]["kernels"]
        ),
        "kernel_us_easel_minus_plain": largest_differences(
            sides["easel"]["kernel_us"], sides["plain"]["kernel_us"]
        ),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
