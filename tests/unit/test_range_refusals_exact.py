"""A value just past a range's end is told as given, never rounded: ``:g`` said "cfg scale must
be between 0 and 30, got 30" of 30.0000001, a refusal that contradicted itself (and "raise it
above 0" of a denoising strength of 1e-17)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bot.requests import RequestError, check_saved_values
from inference.control_units import control_units
from inference.flow_families import SD3
from inference.image_prompts import image_prompt
from inference.outpaint import OutpaintOptions
from inference.passes.flow import check_some_step_runs
from inference.presets import vary_strength
from inference.refiner import RefinerOptions
from inference.types import RenderInputError, RenderRequest
from inference.validation import validate_request

CANNY = {"module": "canny", "image": "a.png"}
REFINER = {"refiner": "r"}


@pytest.mark.parametrize(
    ("refuse", "told"),
    [
        (lambda: validate_request(RenderRequest("a", cfg_scale=30.0000001)), "got 30.0000001"),
        (lambda: vary_strength("1.0000001"), "got '1.0000001'"),
        (lambda: vary_strength("1e-400"), "got '1e-400'"),  # read as 0: told as typed
        (lambda: vary_strength(1.0000001), "got 1.0000001"),
        (lambda: check_saved_values(None, 30.0000001, None, None, None), "got 30.0000001"),
        (lambda: OutpaintOptions.from_options({"zoom_out": 4.0000001}), "got 4.0000001"),
        (lambda: control_units({"controlnet": [{**CANNY, "weight": 2.0000001}]}), "got 2.0000001"),
        (
            lambda: control_units(
                {"controlnet": [{**CANNY, "guidance_start": 0.5000001, "guidance_end": 0.5}]}
            ),
            "control start (0.5000001) must not be after control end (0.5)",
        ),
        (lambda: RefinerOptions.from_options(REFINER | {"refiner_switch": 1.0000001}), "1.0000001"),
        (
            lambda: image_prompt({"ipadapter": {"images": ["a.png"], "weight": 2.0000001}}),
            "2.0000001",
        ),
        (  # 20 - 2e-16 is 20: no step, though 1e-17 is above 0 (the old advice)
            lambda: check_some_step_runs(SD3, 20, 1e-17),
            "strength 1e-17 of 20 steps: raise it to at least 1/20",
        ),
    ],
)
def test_a_value_past_the_range_is_told_as_given(refuse: Callable[[], object], told: str) -> None:
    with pytest.raises((RenderInputError, RequestError)) as refused:
        refuse()
    assert str(refused.value).endswith(told)
