"""A pass from a picture (img2img, the hires fix) does the work of the steps it runs: the
ancestral noise drawn ahead is that of the steps run, not of the whole (stretched) schedule,
and the sampler's scheduler is built once a pass."""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import inference.noise as noise_module
import inference.passes.denoise as denoise_module
from inference.engine import Engine
from inference.noise import StepNoise
from inference.types import RenderRequest

EULER_A = RenderRequest("a cat", seed=5, steps=6, width=64, height=64, sampler="Euler a")
HIRES = dataclasses.replace(
    EULER_A, options={"hires_scale": 1.5, "hires_denoising": 0.5, "hires_upscaler": "Latent"}
)


def test_a_pass_from_a_picture_draws_only_the_step_noise_it_runs(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Euler a: 6 first-pass steps, then the hires pass's 6 on a 12-step schedule and an
    img2img at 0.5 running 4 of 6. Before, the whole schedule's noise was drawn (12 and 6),
    about 1/denoising too much. The pictures stay those of step-wise drawing."""
    made: list[StepNoise] = []

    class Recorded(StepNoise):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    init = tmp_path / "init.png"
    Image.fromarray(np.full((64, 64, 3), 90, dtype=np.uint8)).save(init)
    img2img = dataclasses.replace(
        EULER_A, mode="img2img", init_image=str(init), denoising_strength=0.5
    )
    monkeypatch.setattr(noise_module, "StepNoise", Recorded)
    ahead = [engine.render(request)[0].png for request in (HIRES, img2img)]
    assert [noise.draws for noise in made] == [6, 6, 4]
    assert not any(noise._pending for noise in made)  # every draw made was used
    monkeypatch.setattr(denoise_module, "step_noise_drawn_ahead", lambda *_: nullcontext())
    assert ahead == [engine.render(request)[0].png for request in (HIRES, img2img)]


def test_the_hires_pass_builds_its_sampler_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hires pass reads the longest schedule off the scheduler it then samples with
    (before: one built to read its config, another for the pass)."""
    built: list[str] = []
    make = denoise_module.make_scheduler

    def make_scheduler(name: str, *args: Any, **kwargs: Any) -> Any:
        built.append(name)
        return make(name, *args, **kwargs)

    monkeypatch.setattr(denoise_module, "make_scheduler", make_scheduler)
    engine.render(HIRES)
    assert built == ["Euler a", "Euler a"]  # the first pass's, the hires pass's
