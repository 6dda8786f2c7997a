"""The pure side of ControlNet: units read from a request's options, the ControlNet files a
models folder holds, and what a controlled job is estimated to cost."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.jobs.accounting import estimated_cost
from inference.control_units import (
    CONTROL_TYPES,
    MAX_CONTROL_WEIGHT,
    ControlUnit,
    control_units,
    controlnet_files,
    with_control_units,
)
from inference.registry import ModelRegistry
from inference.types import RenderInputError, RenderRequest
from tests.support.checkpoint_files import stand_in_checkpoint

fractions = st.floats(0.0, 1.0)
units = st.builds(
    ControlUnit,
    module=st.sampled_from(CONTROL_TYPES),
    image=st.text(min_size=1, max_size=20),
    model=st.none() | st.text(min_size=1, max_size=20),
    weight=st.floats(0.0, MAX_CONTROL_WEIGHT),
    guidance_start=fractions,
    guidance_end=fractions,
).filter(lambda unit: unit.guidance_start <= unit.guidance_end)


@given(st.lists(units, min_size=1, max_size=3))
def test_units_survive_the_request_s_json(chosen: list[ControlUnit]) -> None:
    request = with_control_units(RenderRequest("a cat"), chosen)
    assert control_units(RenderRequest.from_json(request.to_json()).options) == chosen


@given(st.floats(allow_nan=False).filter(lambda w: not 0 <= w <= MAX_CONTROL_WEIGHT))
def test_a_weight_out_of_range_is_named_with_its_range(weight: float) -> None:
    unit = dataclasses.replace(ControlUnit("canny", "map.png"), weight=weight)
    with pytest.raises(RenderInputError, match=r"^control weight must be between 0 and 2, got"):
        with_control_units(RenderRequest("a cat"), [unit])


def test_more_units_than_allowed_are_refused() -> None:
    unit = {"module": "canny", "image": "map.png"}
    with pytest.raises(RenderInputError, match=r"^a request takes 1 to 3 ControlNet units$"):
        control_units({"controlnet": [unit] * 4})


def test_controlnet_files_are_the_web_ui_s_and_diffusers_folders(tmp_path: Path) -> None:
    folder = tmp_path / "ControlNet"
    for relative in (
        "control_v11p_sd15_canny.safetensors",
        "xl/diffusers_xl_depth.safetensors",
        "control_v11p_sd15_canny.config/config.json",  # a sidecar config, no model
        "annotators/depth/model.safetensors",  # a preprocessor's model
        "canny-sdxl/config.json",
        "canny-sdxl/diffusion_pytorch_model.safetensors",  # inside a diffusers folder
        "old_openpose.pth",  # a pickle: never listed
    ):
        stand_in_checkpoint(folder / relative)
    assert controlnet_files(ModelRegistry(tmp_path)) == {
        "canny-sdxl": folder / "canny-sdxl",
        "control_v11p_sd15_canny": folder / "control_v11p_sd15_canny.safetensors",
        "diffusers_xl_depth": folder / "xl" / "diffusers_xl_depth.safetensors",
    }


def test_the_annotators_folder_is_not_walked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An annotators cache holds thousands of files: listing them, then skipping, took 34 ms.
    for relative in ("canny.safetensors", "annotators/depth/blobs/model.safetensors"):
        stand_in_checkpoint(tmp_path / "ControlNet" / relative)
    read: list[Path] = []
    scandir = os.scandir

    def recorded(path: Any) -> Any:
        read.append(Path(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", recorded)
    assert list(controlnet_files(ModelRegistry(tmp_path))) == ["canny"]
    assert read and not [path for path in read if "annotators" in path.parts]


def test_a_controlnet_adds_to_the_estimated_cost() -> None:
    plain = RenderRequest("a cat", steps=20, width=512, height=512)
    unit = ControlUnit("canny", "map.png")
    one = with_control_units(plain, [unit])
    two = with_control_units(plain, [unit, unit])
    seconds = [estimated_cost(request).gpu_seconds for request in (plain, one, two)]
    assert seconds[0] < seconds[1] < seconds[2]
