"""The CPU time each sampling step costs outside the UNet: Easel's engine against a plain
diffusers pipeline, both with the UNet replaced by a stub that returns at once.

On a GPU a step is the UNet's kernels plus this CPU work (scheduler, guidance, callbacks);
whatever of it is not overlapped with the kernels is lost device time, and at batch 1 on a
fast card the loop is bound by it. A stub UNet makes that cost measurable on any CPU.

    python benchmarks/step_overhead.py [--steps 50] [--runs 5] [--sampler "Euler a" ...]

Prints JSON: milliseconds per step (median of ``--runs``, first to last step end) for each
sampler, and Easel's extra cost per step over plain diffusers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel, UNet2DConditionOutput

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sides import PROMPT, easel_and_plain, use_sampler
from inference.engine import Engine
from inference.tiny import write_tiny_model
from inference.types import RenderRequest, StepProgress


@contextmanager
def stub_unet() -> Iterator[None]:
    """Every UNet returns its input scaled: no network work, the same tensor traffic."""
    original = UNet2DConditionModel.forward

    def forward(self: Any, sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        output = sample[:, : self.config.out_channels] * 0.5
        return (
            UNet2DConditionOutput(sample=output) if kwargs.get("return_dict", True) else (output,)
        )

    UNet2DConditionModel.forward = forward
    try:
        yield
    finally:
        UNet2DConditionModel.forward = original


def per_step_ms(step_ends: list[float]) -> float:
    return 1000 * (step_ends[-1] - step_ends[0]) / (len(step_ends) - 1)


def easel_ms(engine: Engine, sampler: str, steps: int) -> float:
    step_ends: list[float] = []

    def progress(_step: StepProgress) -> None:
        step_ends.append(time.perf_counter())

    request = RenderRequest(PROMPT, width=64, height=64, steps=steps, seed=1, sampler=sampler)
    engine.render(request, progress)
    return per_step_ms(step_ends)


def plain_ms(pipeline: Any, sampler: str, steps: int) -> float:
    step_ends: list[float] = []

    def step_end(_pipe: Any, _index: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        step_ends.append(time.perf_counter())
        return tensors

    use_sampler(pipeline, sampler)
    pipeline(
        PROMPT,
        num_inference_steps=steps,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(1),
        callback_on_step_end=step_end,
    )
    return per_step_ms(step_ends)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--sampler", nargs="+", default=["Euler a", "DPM++ 2M Karras", "DPM++ SDE Karras"]
    )
    arguments = parser.parse_args()
    torch.set_num_threads(1)  # the stub's arithmetic is tiny; threads only add noise
    report: dict[str, Any] = {"benchmark": "step_overhead", "steps": arguments.steps}
    with tempfile.TemporaryDirectory() as scratch, stub_unet():
        folder = write_tiny_model(Path(scratch) / "tiny")
        engine, pipeline = easel_and_plain(Path(scratch), folder, "cpu", torch.float32)
        samplers: dict[str, Any] = {}
        for sampler in arguments.sampler:
            easel_ms(engine, sampler, 3)  # warm-up: load, first calls
            plain_ms(pipeline, sampler, 3)
            easel = statistics.median(
                easel_ms(engine, sampler, arguments.steps) for _ in range(arguments.runs)
            )
            plain = statistics.median(
                plain_ms(pipeline, sampler, arguments.steps) for _ in range(arguments.runs)
            )
            samplers[sampler] = {
                "plain_ms_per_step": round(plain, 3),
                "easel_ms_per_step": round(easel, 3),
                "easel_extra_ms_per_step": round(easel - plain, 3),
            }
        report["samplers"] = samplers
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
