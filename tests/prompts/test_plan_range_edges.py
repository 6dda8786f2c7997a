"""Edges of ``build_plan``'s ranges that a mutation audit found no test pinned. Refusals are
asserted by type (their wording is the user-facing texts' own tests' concern)."""

from __future__ import annotations

import pytest

from inference.limits import MAX_SEED, MAX_STEPS
from inference.prompts import PromptError, build_plan


@pytest.mark.parametrize("steps", [1, MAX_STEPS])
def test_the_first_and_last_step_counts_allowed_are_planned(steps: int) -> None:
    plan = build_plan("a [cat:dog:0.5]", seed=1, steps=steps)
    assert plan.steps == steps


@pytest.mark.parametrize("steps", [0, MAX_STEPS + 1])
def test_one_step_count_past_either_end_is_refused(steps: int) -> None:
    with pytest.raises(PromptError):
        build_plan("a cat", seed=1, steps=steps)


@pytest.mark.parametrize("seed", [-2, MAX_SEED + 1])
def test_a_seed_past_either_end_is_refused_in_the_one_seed_sentence(seed: int) -> None:
    # The words every other refusal of a member's seed uses (SEED_ACCEPTS).
    with pytest.raises(PromptError) as refused:
        build_plan("a cat", seed=seed)
    assert str(refused.value) == (
        f"seed must be a whole number between 0 and {MAX_SEED}, or -1 for a random seed, got {seed}"
    )


@pytest.mark.parametrize("prompt", ["a cat --seed 4294967297", "a cat"])
def test_a_seed_past_32_bits_plans_as_given(prompt: str) -> None:
    seed = None if "--seed" in prompt else 2**32 + 1
    assert build_plan(prompt, seed=seed).seed == 2**32 + 1
