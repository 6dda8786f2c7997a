from __future__ import annotations

import dataclasses
import inspect
import itertools
from typing import Any

import numpy as np
import pytest
import torch

from inference.engine import Engine
from inference.infotext import parse_infotext, sampler_and_schedule
from inference.samplers import (
    BASE_SAMPLERS,
    SAMPLERS,
    SIGMA_SCHEDULES,
    calls_per_step,
    canonical_sampler_name,
    make_scheduler,
    scheduler_spec,
)
from inference.tiny import SD_SCHEDULER_CONFIG
from inference.types import RenderInputError, RenderRequest
from tests.inference.conftest import PixelReader
from tests.inference.test_batching import BATCH_TOLERANCE

WEB_UI_NAMES = [
    "Euler a",
    "Euler",
    "LMS",
    "Heun",
    "DPM2",
    "DPM2 a",
    "DPM++ 2S a",
    "DPM++ 2M",
    "DPM++ SDE",
    "DPM++ 2M SDE",
    "DDIM",
    "UniPC",
    "LCM",
    "DPM++ 2M Karras",
    "DPM++ 2M SDE Karras",
    "DPM2 a Karras",
    "LMS Karras",
    "DPM++ SDE Karras",
    "DPM++ 2M SDE Exponential",
]


def test_web_ui_names_are_offered() -> None:
    assert set(WEB_UI_NAMES) <= set(SAMPLERS)
    # Named variants are the web UI's old names; Euler a takes its schedule as a schedule type.
    assert "Euler a Karras" not in SAMPLERS


@pytest.mark.parametrize("name", list(BASE_SAMPLERS))
def test_flags_exist_on_the_scheduler(name: str) -> None:
    spec = BASE_SAMPLERS[name]
    accepted = inspect.signature(spec.scheduler_type().__init__).parameters
    assert set(spec.flags) <= set(accepted)
    takes_sigma_flags = set(SIGMA_SCHEDULES.values()) <= set(accepted)
    # LCM runs on the scheduler its schedule types use (uniform by default); they still go
    # that way, which refuses SGM Uniform, rather than as flags of a diffusers scheduler.
    assert spec.sigma_schedules == takes_sigma_flags or (
        spec.scheduler_class == spec.sigma_schedules_by and takes_sigma_flags
    )


@pytest.mark.parametrize("schedule", ["Automatic", "Karras", "SGM Uniform"])
def test_calls_per_step_is_the_scheduler_s_order(schedule: str) -> None:
    """The bot plans a prompt over ``calls_per_step`` (no diffusers); the engine's scheduler
    makes ``order`` calls a step: the same for every sampler and schedule it may take."""
    for name in BASE_SAMPLERS:
        try:
            scheduler: Any = make_scheduler(name, SD_SCHEDULER_CONFIG, schedule)
        except RenderInputError:  # a schedule this sampler cannot take
            continue
        assert calls_per_step(name, schedule) == scheduler.order, name


def test_variant_sets_its_sigma_flag_and_plain_name_clears_it() -> None:
    karras_config = {**SD_SCHEDULER_CONFIG, "use_karras_sigmas": True}
    karras: Any = make_scheduler("DPM++ 2M Karras", SD_SCHEDULER_CONFIG)
    plain: Any = make_scheduler("DPM++ 2M", karras_config)
    exponential: Any = make_scheduler("DPM++ 2M SDE Exponential", karras_config)
    assert karras.config.use_karras_sigmas
    assert type(plain).__name__ == "KDiffusionMultistepScheduler"  # k-diffusion's uniform
    assert not plain.config.use_karras_sigmas
    assert plain.config.algorithm_type == "dpmsolver++"
    assert exponential.config.use_exponential_sigmas
    assert not exponential.config.use_karras_sigmas


def test_names_forgive_case_and_spacing() -> None:
    assert canonical_sampler_name("  dpm++ 2m   KARRAS ") == "DPM++ 2M Karras"


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(RenderInputError) as error:
        canonical_sampler_name("Euler c")
    message = str(error.value)
    assert message.startswith("unknown sampler 'Euler c'; choose one of: ")
    assert all(name in message for name in WEB_UI_NAMES)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_renders_on_the_tiny_model(engine: Engine, name: str) -> None:
    request = RenderRequest("a cat", seed=5, steps=2, width=64, height=64, sampler=name)
    [image] = engine.render(request)
    # The infotext names the very scheduler that rendered (as the web UI's Sampler + Schedule type).
    named = sampler_and_schedule(parse_infotext(image.infotext)[2])
    assert named is not None and scheduler_spec(*named) == SAMPLERS[name]


def test_dpm_sde_noise_follows_each_picture_s_seed(engine: Engine, pixels: PixelReader) -> None:
    """The Brownian tree is seeded per picture: the same seed gives the same picture, alone or
    as the second of a batch, and another seed another picture."""
    request = RenderRequest("a cat", seed=5, steps=4, width=64, height=64, sampler="DPM++ SDE")
    first, again = engine.render(request)[0], engine.render(request)[0]
    assert first.png == again.png
    second_alone = engine.render(dataclasses.replace(request, seed=6))[0]
    pair = engine.render(dataclasses.replace(request, count=2))
    assert np.abs(pixels(pair[0].png) - pixels(first.png)).max() <= BATCH_TOLERANCE
    assert np.abs(pixels(pair[1].png) - pixels(second_alone.png)).max() <= BATCH_TOLERANCE
    assert np.abs(pixels(first.png) - pixels(second_alone.png)).mean() > 10


def _denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The ideal denoiser for data drawn from N(0, 1): a stand-in model with a known answer."""
    return x / (1 + sigma**2)


def test_dpm_2s_ancestral_follows_k_diffusion_s_algorithm() -> None:
    """Driven the way a diffusers pipeline drives it, the scheduler takes the same path as
    k-diffusion's sample_dpmpp_2s_ancestral written out here, noise draw for noise draw."""
    steps, shape = 8, (2, 4, 3, 3)
    scheduler: Any = make_scheduler("DPM++ 2S a", SD_SCHEDULER_CONFIG)
    scheduler.set_timesteps(steps)
    start = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    sampled = start * scheduler.init_noise_sigma
    generator = torch.Generator().manual_seed(2)
    for timestep in scheduler.timesteps:
        first_call = scheduler.state_in_first_order
        index = scheduler.step_index or 0 if first_call else scheduler.step_index - 1
        sigma = scheduler.sigmas[index] if first_call else scheduler.sigmas_interpol[index]
        model_input = scheduler.scale_model_input(sampled, timestep)
        x = model_input * (sigma**2 + 1) ** 0.5
        epsilon = (x - _denoiser(x, sigma)) / sigma
        sampled = scheduler.step(epsilon, timestep, sampled, generator=generator).prev_sample

    sigmas = scheduler.sigmas[0::2]  # the per-step schedule, ending at 0
    reference = start * scheduler.init_noise_sigma
    reference_noise = torch.Generator().manual_seed(2)
    for sigma, sigma_next in itertools.pairwise(sigmas):
        denoised = _denoiser(reference, sigma)
        sigma_up = (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
        sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
        if sigma_down == 0:
            reference = denoised
            continue
        t, t_next = -sigma.log(), -sigma_down.log()
        h = t_next - t
        s = t + h / 2
        x_2 = (s.neg().exp() / t.neg().exp()) * reference - torch.expm1(-h / 2) * denoised
        denoised_2 = _denoiser(x_2, s.neg().exp())
        reference = (t_next.neg().exp() / t.neg().exp()) * reference - torch.expm1(-h) * denoised_2
        reference = reference + torch.randn(shape, generator=reference_noise) * sigma_up
    assert torch.allclose(sampled, reference, atol=1e-4)
    assert scheduler.order == 2 and len(scheduler.timesteps) == 2 * steps - 1
