"""A sampling step adds no work that would make a CUDA host wait for the device.

Easel's guidance stand-in (inference/guidance.ScheduledUNet) picks the UNet's rows per step.
It used to index them with a Python list: torch makes a host tensor of the list and copies it
to the device, and on CUDA that blocking copy waits for every kernel already queued, so the
host could not run ahead of the device at any step. These tests count, on the CPU, what a
step does beyond a plain diffusers step: they compare renders of 3 and 5 steps.
"""

from __future__ import annotations

import collections
from typing import Any

from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from inference.engine import Engine
from inference.types import RenderRequest


class StepWork(TorchFunctionMode):
    """Lists used as tensor indexes, and aten operators, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.list_indexes = 0
        self.operators = OperatorNames()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if getattr(func, "__name__", "") == "__getitem__":
            parts = args[1] if isinstance(args[1], tuple) else (args[1],)
            self.list_indexes += any(isinstance(part, list) for part in parts)
        return func(*args, **(kwargs or {}))


class OperatorNames(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def work_of(engine: Engine, prompt: str, steps: int) -> StepWork:
    work = StepWork()
    with work, work.operators:
        engine.render(RenderRequest(prompt, width=64, height=64, steps=steps, seed=3))
    return work


def one_step(engine: Engine, prompt: str) -> tuple[int, collections.Counter[str]]:
    """List indexes and operators that one more step adds to a render."""
    short, long = work_of(engine, prompt, 2), work_of(engine, prompt, 3)
    operators = long.operators.counts
    operators.subtract(short.operators.counts)
    return long.list_indexes - short.list_indexes, operators


def test_a_step_builds_no_index_on_the_host_and_copies_no_rows_in_order(engine: Engine) -> None:
    engine.render(RenderRequest("a red cat", width=64, height=64, steps=1))  # loads the model
    list_indexes, operators = one_step(engine, "a red cat")
    assert list_indexes == 0
    # No index tensor from the host, no gather of rows already in order, no re-stacking of
    # the output rows.
    for name in ("lift_fresh", "index", "stack"):
        assert operators[name] == 0, name
    # AND evaluates the picture's row twice, so rows are gathered (by slices) and combined.
    list_indexes, operators = one_step(engine, "a red cat AND a blue dog:0.6")
    assert list_indexes == 0
    assert operators["lift_fresh"] == 0 and operators["index"] == 0
    assert operators["stack"] == 1  # the combined output: the composed path ran
