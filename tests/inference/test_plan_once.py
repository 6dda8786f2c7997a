"""A render plans each picture's prompt once for the steps it runs: the pass that runs the
request's steps takes the plan ``image_jobs`` made (on the preparing thread, when the batch was
prepared ahead) instead of planning it again on the device thread."""

from __future__ import annotations

import dataclasses

import pytest

import inference.passes.jobs as jobs_module
from inference.engine import Engine
from inference.prompts import PromptPlan
from inference.types import RenderRequest

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
