"""Outpainting and zoom out: the canvas grows, only the new area is painted."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference.engine import Engine
from inference.infotext import parse_infotext
from inference.outpaint import OutpaintOptions
from inference.types import RenderInputError, RenderRequest


@pytest.fixture()
def picture(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "picture.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


def test_outpaint_grows_the_canvas_and_keeps_the_original(engine: Engine, picture: Path) -> None:
    request = RenderRequest(
        "a cat",
        steps=2,
        seed=3,
        mode="img2img",
        init_image=str(picture),
        denoising_strength=0.9,
        options={"outpaint": {"left": 16, "down": 8}},
    )
    [image] = engine.render(request)
    assert (image.width, image.height) == (80, 72)
    result = np.asarray(Image.open(io.BytesIO(image.png)).convert("RGB"))
    original = np.asarray(Image.open(picture).convert("RGB"))
    assert np.array_equal(result[0:64, 16:80], original)  # every original pixel untouched
    assert parse_infotext(image.infotext)[2]["Outpaint"] == "left 16 right 0 up 0 down 8"


def test_zoom_out_sizes_are_multiples_of_8_around_the_centre() -> None:
    options = OutpaintOptions.from_options({"zoom_out": 1.5})
    assert options is not None
    margins = options.margins(100, 64)
    assert margins.canvas_size(100, 64) == (152, 96)
    assert (margins.left, margins.right, margins.up, margins.down) == (26, 26, 16, 16)


def test_odd_sizes_round_up_on_the_right_and_bottom() -> None:
    options = OutpaintOptions.from_options({"outpaint": {"left": 5, "up": 3}})
    assert options is not None
    margins = options.margins(64, 64)
    assert margins.canvas_size(64, 64) == (72, 72)
    assert (margins.left, margins.right, margins.up, margins.down) == (5, 3, 3, 5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"zoom_out": 1.0}, "above 1 and at most 4"),
        ({"zoom_out": 2, "outpaint": {"left": 8}}, "either"),
        ({"outpaint": {"sideways": 8}}, "left, right, up, down"),
        ({"outpaint": {"left": -8}}, "from 0 to 2048"),
        ({"outpaint": {"left": 0}}, "at least one side"),
    ],
)
def test_bad_outpaint_options_teach(options: dict[str, object], message: str) -> None:
    with pytest.raises(RenderInputError, match=message):
        OutpaintOptions.from_options(options)
