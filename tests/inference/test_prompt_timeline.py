"""Which text of a prompt's edits each pass reads at each step, as the web UI: a pass from a
picture plans over the request's steps and counts from its own first step, the hires pass
goes on from the first pass's steps, and the refiner counts on from where the base stopped."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import inference.guidance as guidance_module
from inference.conditioning import PromptEncoder
from inference.engine import Engine
from inference.guidance import ImageConditioning, PromptGuidance, ScheduledConditioning
from inference.prompts import SubPromptPlan, build_plan
from inference.tiny import build_tiny_pipeline
from inference.types import RenderRequest

# 4 steps: "a cat" up to step 2, then "a dog".
EDIT = RenderRequest("[a cat:a dog:0.5]", seed=5, steps=4, width=64, height=64, sampler="Euler")


def texts_read(monkeypatch: pytest.MonkeyPatch) -> list[tuple[PromptGuidance, list[str]]]:
    """Per pipeline call (its guidance), the positive texts its steps read, each run once."""
    read: list[tuple[PromptGuidance, list[str]]] = []
    texts: dict[int, str] = {}
    scheduled, chosen = guidance_module._scheduled, PromptGuidance._chosen

    def scheduled_with_texts(sub: SubPromptPlan, encoder: PromptEncoder) -> ScheduledConditioning:
        result = scheduled(sub, encoder)
        for (_, encoding), entry in zip(result.schedule, sub.schedule, strict=True):
            texts[id(encoding)] = entry.text
        return result

    def chosen_recorded(self: PromptGuidance, image: ImageConditioning) -> Any:
        negative, positives = chosen(self, image)
        if not read or read[-1][0] is not self:
            read.append((self, []))
        seen, text = read[-1][1], texts[id(positives[0][1])]
        if not seen or seen[-1] != text:
            seen.append(text)
        return negative, positives

    monkeypatch.setattr(guidance_module, "_scheduled", scheduled_with_texts)
    monkeypatch.setattr(PromptGuidance, "_chosen", chosen_recorded)
    return read


def test_hires_and_img2img_read_the_edit_on_the_web_uis_timeline(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    read = texts_read(monkeypatch)
    engine.render(
        dataclasses.replace(EDIT, options={"hires_scale": 1.5, "hires_upscaler": "Latent"})
    )
    # The hires pass goes on from the first pass's 4 steps: "a dog" throughout (before, it
    # was planned over its own 4 steps and began with "a cat" again).
    assert [texts for _, texts in read] == [["a cat", "a dog"], ["a dog"]]
    read.clear()
    init = tmp_path / "init.png"
    Image.fromarray(np.full((64, 64, 3), 90, dtype=np.uint8)).save(init)
    engine.render(
        dataclasses.replace(EDIT, mode="img2img", init_image=str(init), denoising_strength=0.5)
    )
    # It runs the last 3 of the 4 steps, counted from its first: steps 0-2 of a plan over 4
    # (before, a plan over the 3 run, switching after its step 1).
    assert [texts for _, texts in read] == [["a cat"]]


def refiner_reads_cat(calls: int, order: int = 1, plan_calls: int = 1) -> list[bool]:
    """Whether each of a refiner's 3 calls reads "a cat" of ``[a cat:a dog:0.7]`` over 10
    steps, the sampling making ``calls`` model calls in all."""
    plan = build_plan("[a cat:a dog:0.7]", seed=1, steps=10, calls_per_step=plan_calls)
    guidance = PromptGuidance(
        PromptEncoder(build_tiny_pipeline("sd15")), lambda: [plan], finishes_schedule=True
    )
    scheduler = SimpleNamespace(order=order, timesteps=list(range(calls)))
    with torch.inference_mode():
        guidance.prepare(SimpleNamespace(num_timesteps=3, scheduler=scheduler))
    [image] = guidance.images
    cat = image.subprompts[0].schedule[0][1]
    read = []
    for iteration in range(3):
        guidance.iteration = iteration
        read.append(guidance._chosen(image)[1][0][1] is cat)
    return read


def test_the_refiner_counts_on_from_where_the_base_stopped() -> None:
    # "a cat" up to step 7; the refiner runs the last 3 of the 10 steps: 7, 8 and 9.
    assert refiner_reads_cat(10) == [True, False, False]


def test_ddim_s_calls_past_the_plan_read_its_first_text_as_the_web_ui() -> None:
    """The web UI's DDIM makes more calls than steps (150 steps: 166): the refiner starts
    at the base's real last call, and a call past the plan reads entry 0 of the schedule
    (``reconstruct_cond_batch``'s ``target_index = 0``). 12 calls over a plan of 10 steps: the
    refiner's 3 are calls 9 and 10 ("a dog", the last entry ends at step 10) and 11, past it.
    Before: calls 7 to 9 (10 - 3), and the last entry past the plan."""
    assert refiner_reads_cat(12) == [False, False, True]


def test_plans_of_another_order_than_the_scheduler_s_are_an_error() -> None:
    with pytest.raises(RuntimeError, match=r"planned for \[1\] model calls per step, .* 2$"):
        refiner_reads_cat(19, order=2)
    # Heun's 19 calls over a plan of 20: "a cat" up to call 14, the refiner's are 16 to 18.
    assert refiner_reads_cat(19, order=2, plan_calls=2) == [False, False, False]
