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

import pytest
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from inference import guidance
from inference.engine import Engine
from inference.guidance import ScheduledConditioning
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


def work_of(engine: Engine, prompt: str, steps: int, **options: Any) -> StepWork:
    work = StepWork()
    with work, work.operators:
        engine.render(RenderRequest(prompt, width=64, height=64, steps=steps, seed=3, **options))
    return work


def one_step(engine: Engine, prompt: str, **options: Any) -> tuple[int, collections.Counter[str]]:
    """List indexes and operators that one more step adds to a render."""
    short, long = work_of(engine, prompt, 2, **options), work_of(engine, prompt, 3, **options)
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


@pytest.mark.parametrize("sampler", ["Euler", "Euler a"])
def test_a_grid_step_runs_the_very_operators_of_a_single_picture_step(
    engine: Engine, sampler: str
) -> None:
    """With CFG the UNet's input is every negative row, then every positive row: a grid's
    rows are evaluated in that order and are their own output, with nothing gathered or
    stacked (they were interleaved, which sliced and concatenated every per-row input and
    stacked the output at each step). Euler a's step noise, one draw per picture's
    generator, is drawn for all steps at once: a step takes a view of it (each step drew
    from each picture's generator and concatenated the draws)."""
    engine.render(RenderRequest("a red cat", width=64, height=64, steps=1))  # loads the model
    _, single = one_step(engine, "a red cat", sampler=sampler)
    _, grid = one_step(engine, "a red cat", sampler=sampler, count=4)
    grid.subtract(single)
    assert {name: count for name, count in grid.items() if count} == {}


def test_the_rows_are_planned_and_stacked_again_only_when_a_schedule_changes(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prompt editing switches once over 6 steps: two plans of the rows, not one per step.
    With pad_conds the padded copies were made anew at every step, and so were the stacked
    text states."""
    planned = collections.Counter[str]()
    at_step, stack = ScheduledConditioning.at_step, guidance._stack

    def counting_at_step(self: ScheduledConditioning, step_index: int) -> Any:
        planned["at_step"] += 1
        return at_step(self, step_index)

    def counting_stack(conditionings: Any) -> Any:
        planned["stack"] += 1
        return stack(conditionings)

    monkeypatch.setattr(ScheduledConditioning, "at_step", counting_at_step)
    monkeypatch.setattr(guidance, "_stack", counting_stack)
    request = RenderRequest(
        "a [red:blue:0.5] cat" + ", in a garden" * 30,  # two chunks: the negative is padded
        negative_prompt="blurry",
        width=64,
        height=64,
        steps=6,
        count=2,
        options={"pad_conds": True},
    )
    engine.render(request)
    # Per plan: each picture's negative and its prompt; one stack of the plan's rows.
    assert planned == {"at_step": 2 * 2 * 2, "stack": 2}
