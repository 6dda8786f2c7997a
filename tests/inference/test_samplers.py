from __future__ import annotations

import inspect
from typing import Any

import diffusers
import pytest

from inference.engine import Engine
from inference.infotext import parse_infotext
from inference.samplers import (
    BASE_SAMPLERS,
    SAMPLERS,
    SIGMA_SCHEDULES,
    canonical_sampler_name,
    make_scheduler,
)
from inference.tiny import SD_SCHEDULER_CONFIG
from inference.types import RenderInputError, RenderRequest

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
    assert "Euler a Karras" not in SAMPLERS  # the ancestral Euler scheduler has no sigma choice


@pytest.mark.parametrize("name", list(BASE_SAMPLERS))
def test_flags_exist_on_the_scheduler(name: str) -> None:
    spec = BASE_SAMPLERS[name]
    accepted = inspect.signature(getattr(diffusers, spec.scheduler_class).__init__).parameters
    assert set(spec.flags) <= set(accepted)
    assert spec.sigma_schedules == (set(SIGMA_SCHEDULES.values()) <= set(accepted))


def test_variant_sets_its_sigma_flag_and_plain_name_clears_it() -> None:
    karras_config = {**SD_SCHEDULER_CONFIG, "use_karras_sigmas": True}
    karras: Any = make_scheduler("DPM++ 2M Karras", SD_SCHEDULER_CONFIG)
    plain: Any = make_scheduler("DPM++ 2M", karras_config)
    exponential: Any = make_scheduler("DPM++ 2M SDE Exponential", karras_config)
    assert karras.config.use_karras_sigmas
    assert type(plain).__name__ == "DPMSolverMultistepScheduler"
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
    assert parse_infotext(image.infotext)[2]["Sampler"] == name
