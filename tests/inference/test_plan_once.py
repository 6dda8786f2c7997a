"""A render plans each picture's prompt once for the steps it runs: the pass that runs the
request's steps takes the plan ``image_jobs`` made (on the preparing thread, when the batch was
prepared ahead) instead of planning it again on the device thread."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import inference.passes.jobs as jobs_module
from inference.engine import Engine
from inference.infotext import parse_infotext
from inference.limits import MAX_SEED
from inference.prompts import PromptPlan
from inference.types import RenderRequest
from tests.inference.test_batching import BATCH_TOLERANCE

# Wildcard-free, but with alternation and a schedule: planning is tokenizing each segment.
PROMPT = "a [cat|fox] in a [forest:city:0.5], (detailed:1.2)"


@pytest.fixture
def planned_steps(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """The steps of every prompt plan the engine's jobs make."""
    steps: list[int | None] = []
    build_plan = jobs_module.build_plan

    def counted(*args: object, **kwargs: object) -> PromptPlan:
        steps.append(kwargs.get("steps"))  # type: ignore[arg-type]
        return build_plan(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jobs_module, "build_plan", counted)
    return steps


def test_each_picture_s_prompt_is_planned_once(
    engine: Engine, planned_steps: list[int | None]
) -> None:
    engine.render(RenderRequest(PROMPT, seed=4, steps=3, width=64, height=64, count=2))
    assert planned_steps == [3, 3]


def test_a_second_order_sampler_s_plan_is_made_once_over_its_calls(
    engine: Engine, planned_steps: list[int | None]
) -> None:
    # Heun makes 2 model calls a step: image_jobs plans over them, as the pass reads them
    # (before, the pass planned each picture again on the device thread).
    engine.render(RenderRequest(PROMPT, seed=4, steps=3, width=64, height=64, sampler="Heun"))
    assert planned_steps == [3]


def test_a_pass_of_other_steps_plans_again(engine: Engine, planned_steps: list[int | None]) -> None:
    hires = {"hires_scale": 1.5, "hires_steps": 2}
    engine.render(RenderRequest(PROMPT, seed=4, steps=3, width=64, height=64, options=hires))
    # The first pass's plan, then the hires pass's own over the steps it runs (fewer).
    first, hires_pass = planned_steps
    assert first == 3 and hires_pass is not None and hires_pass < 3


def test_a_copy_with_another_prompt_or_seed_plans_its_own() -> None:
    """A faces pass copies the job with its own prompt, an upscale tile with its own seed:
    neither may take the picture's plan (at the same steps it would match on steps alone)."""
    [job] = jobs_module.image_jobs(
        RenderRequest("a {red|blue} fox", seed=3, steps=10), None, [], []
    )
    assert job.plan(10, None) is job.planned[0]  # type: ignore[index]
    face = dataclasses.replace(job, prompt="a detailed face", template=None)
    assert face.plan(10, None).prompt == "a detailed face"
    tiles = [dataclasses.replace(job, seed=seed) for seed in range(3, 9)]
    assert {tile.plan(10, None).prompt for tile in tiles} == {"a red fox", "a blue fox"}


def test_a_batch_at_the_top_seed_wraps_to_seed_0(engine: Engine) -> None:
    """``--seed 9223372036854775807 --count 2`` (the journal's largest integer): the second
    picture is seed 0's, as ``--repeat`` wraps; the variation seed wraps alike (a varied
    batch keeps its seed: ``picture_seeds``)."""
    top = RenderRequest("a fox", seed=MAX_SEED, steps=2, width=64, height=64, count=2)
    jobs = jobs_module.image_jobs(
        dataclasses.replace(top, variation_seed=MAX_SEED, variation_strength=0.5), None, [], []
    )
    assert [(job.seed, job.variation_seed) for job in jobs] == [
        (MAX_SEED, MAX_SEED),
        (MAX_SEED, 0),
    ]
    second = engine.render(top)[1]
    assert second.seed == 0 and parse_infotext(second.infotext)[2]["Seed"] == 0
    alone = engine.render(dataclasses.replace(top, seed=0, count=1))[0]
    # The same picture (a batch rounds as ``BATCH_TOLERANCE`` allows: oneDNN's AVX-512 kernels
    # do, for batches of 2 and 1).
    assert second.picture is not None and alone.picture is not None
    difference = np.abs(np.asarray(second.picture, np.int16) - np.asarray(alone.picture, np.int16))
    assert difference.max() <= BATCH_TOLERANCE
