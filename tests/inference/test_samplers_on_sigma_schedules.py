"""Euler a and LCM on the web UI 1.9 schedule types (Karras, Exponential, Polyexponential),
which diffusers' own ancestral Euler and LCM schedulers cannot take: the sigmas against their
published formulas (tests/parity/reference.py, checked against k-diffusion by hand), the steps
against k-diffusion's algorithms, and Euler a's plain schedule against diffusers' scheduler bit
for bit."""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from diffusers import EulerAncestralDiscreteScheduler, LCMScheduler

from inference import schedulers
from inference.passes.denoise import scheduler_for
from inference.samplers import BASE_SAMPLERS, SIGMA_SCHEDULES, make_scheduler, scheduler_spec
from inference.schedulers import EulerAncestralScheduler, LCMSigmasScheduler
from inference.tiny import SD_SCHEDULER_CONFIG
from inference.types import RenderInputError, RenderRequest
from tests.parity import reference

SCHEDULES = ["Karras", "Exponential", "Polyexponential"]
MODEL = reference.CompVisSigmas(SD_SCHEDULER_CONFIG["beta_start"], SD_SCHEDULER_CONFIG["beta_end"])


def _ideal_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The ideal denoiser for data drawn from N(0, 1), with some non-linearity added."""
    return x / (1 + sigma**2) + 0.1 * torch.tanh(x)


def _sample(scheduler: Any, start: torch.Tensor, seed: int) -> torch.Tensor:
    """Drive ``scheduler`` the way a diffusers pipeline does, on the ideal denoiser."""
    sampled = start * scheduler.init_noise_sigma
    generator = torch.Generator().manual_seed(seed)
    for timestep in scheduler.timesteps:
        sigma = scheduler.sigmas[scheduler.step_index or 0]
        x = scheduler.scale_model_input(sampled, timestep) * (sigma**2 + 1) ** 0.5
        epsilon = (x - _ideal_denoiser(x, sigma)) / sigma
        sampled = scheduler.step(epsilon, timestep, sampled, generator=generator).prev_sample
    return sampled


def test_every_sampler_without_a_sigma_choice_but_ddim_gets_one() -> None:
    """DDIM is left out on purpose: the web UI's DDIM keeps its own timesteps whatever the
    schedule type says."""
    by = {name: spec.sigma_schedules_by for name, spec in BASE_SAMPLERS.items()}
    assert {name for name, spec in BASE_SAMPLERS.items() if not spec.sigma_schedules} == {
        "Euler a",
        "LCM",
        "DDIM",
    }
    assert (by["Euler a"], by["LCM"], by["DDIM"]) == (
        EulerAncestralScheduler.__name__,
        LCMSigmasScheduler.__name__,
        None,
    )
    for name in ("Euler a", "LCM"):
        accepted = inspect.signature(getattr(schedulers, str(by[name])).__init__).parameters
        assert set(SIGMA_SCHEDULES.values()) <= set(accepted)
    # A schedule LCM cannot take is refused with the ones it can.
    with pytest.raises(RenderInputError, match=r"Uniform, Karras, Exponential, Polyexponential$"):
        scheduler_spec("LCM", "SGM Uniform")


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("steps", [6, 13])
def test_sigmas_are_the_web_ui_s(schedule: str, steps: int) -> None:
    scheduler: Any = make_scheduler("Euler a", SD_SCHEDULER_CONFIG, schedule)
    scheduler.set_timesteps(steps)
    assert type(scheduler) is EulerAncestralScheduler
    expected = reference.schedule(schedule, steps, MODEL)
    assert torch.allclose(scheduler.sigmas, expected, rtol=1e-4)


def test_a_model_s_own_sigma_flag_gives_way_to_the_schedule_type() -> None:
    exponential_model = {**SD_SCHEDULER_CONFIG, "use_exponential_sigmas": True}
    scheduler: Any = make_scheduler("Euler a", exponential_model, "Karras")
    assert scheduler.config.use_karras_sigmas and not scheduler.config.use_exponential_sigmas


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_steps_follow_k_diffusion_s_euler_ancestral(schedule: str) -> None:
    """Noise draw for noise draw the path of k-diffusion's sample_euler_ancestral (the
    reference's copy of its algorithm), on the same sigmas."""
    steps, shape = 8, (2, 4, 3, 3)
    scheduler: Any = make_scheduler("Euler a", SD_SCHEDULER_CONFIG, schedule)
    scheduler.set_timesteps(steps)
    start = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    sampled = _sample(scheduler, start, seed=2)

    class Noise:
        generator = torch.Generator().manual_seed(2)

        def next(self) -> torch.Tensor:
            return torch.randn(shape, generator=self.generator)

    sigmas = scheduler.sigmas
    expected = reference.euler_ancestral(_ideal_denoiser, start * sigmas[0], sigmas, noise=Noise())
    assert torch.allclose(sampled, expected, atol=1e-5)


@pytest.mark.parametrize("steps", [1, 6, 13])
def test_on_the_uniform_schedule_it_is_diffusers_own_bit_for_bit(steps: int) -> None:
    config = {**SD_SCHEDULER_CONFIG, "timestep_spacing": "linspace"}
    ours: Any = EulerAncestralScheduler.from_config(config)
    theirs: Any = EulerAncestralDiscreteScheduler.from_config(config)
    ours.set_timesteps(steps)
    theirs.set_timesteps(steps)
    start = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(_sample(ours, start, seed=3), _sample(theirs, start, seed=3))


LCM_SCHEDULES = ["Uniform", "Karras", "Exponential", "Polyexponential"]


@pytest.mark.parametrize("schedule", LCM_SCHEDULES)
@pytest.mark.parametrize("steps", [4, 13])
def test_lcm_sigmas_span_the_lcm_timesteps_and_each_reads_the_nearest(
    schedule: str, steps: int
) -> None:
    scheduler: Any = make_scheduler("LCM", SD_SCHEDULER_CONFIG, schedule)
    scheduler.set_timesteps(steps)
    assert type(scheduler) is LCMSigmasScheduler
    lcm = reference.LCMSigmas(MODEL)
    expected = (
        lcm.uniform(steps)
        if schedule == "Uniform"
        else reference.range_schedule(schedule, steps, lcm.sigma_min, lcm.sigma_max)
    )
    assert torch.allclose(scheduler.sigmas, expected, rtol=1e-4)
    assert scheduler.timesteps.tolist() == lcm.sigma_to_t(expected[:-1]).tolist()
    assert scheduler.timesteps[0] == 999 and scheduler.timesteps[-1] == 19


@pytest.mark.parametrize("steps", [5, 60])
def test_lcm_steps_follow_the_web_ui_s_sample_lcm(steps: int) -> None:
    """The boundary-scaled prediction, then the next sigma's fresh noise, draw for draw; from
    59 Karras steps the first two sigmas read the same LCM timestep (999), and the steps still
    start at the first."""
    shape = (1, 4, 3, 3)
    scheduler: Any = make_scheduler("LCM", SD_SCHEDULER_CONFIG, "Karras")
    scheduler.set_timesteps(steps)
    assert (scheduler.timesteps[0] == scheduler.timesteps[1]) == (steps == 60)
    start = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    sampled = _sample(scheduler, start, seed=2)

    lcm = reference.LCMSigmas(MODEL)

    def lcm_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        scaled = lcm.sigma_to_t(sigma) * 10.0
        c_skip, c_out = 0.25 / (scaled**2 + 0.25), scaled / (scaled**2 + 0.25) ** 0.5
        clean: torch.Tensor = c_out * _ideal_denoiser(x, sigma) + c_skip * x
        return clean

    class Noise:
        generator = torch.Generator().manual_seed(2)

        def next(self) -> torch.Tensor:
            return torch.randn(shape, generator=self.generator)

    sigmas = scheduler.sigmas
    expected = reference.lcm(lcm_denoiser, start * sigmas[0], sigmas, noise=Noise())
    assert torch.allclose(sampled, expected, atol=1e-5)


@pytest.mark.parametrize(
    ("model", "config", "schedule", "expected"),
    [
        ("tiny", SD_SCHEDULER_CONFIG, "Automatic", LCMSigmasScheduler),
        ("dreamshaper-LCM", SD_SCHEDULER_CONFIG, "Automatic", LCMScheduler),
        ("realcmix", SD_SCHEDULER_CONFIG, "Automatic", LCMSigmasScheduler),  # no word "lcm"
        (
            "my-model",
            {**SD_SCHEDULER_CONFIG, "_class_name": "LCMScheduler"},
            "Uniform",
            LCMScheduler,
        ),
        ("dreamshaper-LCM", SD_SCHEDULER_CONFIG, "Karras", LCMSigmasScheduler),
    ],
)
def test_plain_lcm_is_the_web_ui_s_but_an_lcm_model_s_own_is_diffusers(
    model: str, config: dict[str, Any], schedule: str, expected: type
) -> None:
    """Plain LCM walks the 50 LCM timesteps evenly, as the web UI's; a model distilled as an
    LCM (told as for its fast preset: name or scheduler) keeps its own, diffusers' LCM."""
    loaded: Any = SimpleNamespace(entry=SimpleNamespace(name=model), scheduler_config=config)
    request = RenderRequest("a cat", sampler="LCM", schedule_type=schedule)
    assert type(scheduler_for(request, loaded)) is expected
