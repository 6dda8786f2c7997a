from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image

from inference.engine import Engine
from inference.infotext import format_infotext, parse_infotext, png_with_infotext
from inference.types import RenderInputError, RenderRequest, StepProgress
from inference.upscale import (
    HiresOptions,
    UpscaleOptions,
    hires_scale_to,
    hires_size,
    scaled_render_size,
)
from inference.validation import validate_request
from tests.inference.conftest import TINY

PixelReader = Callable[[bytes], np.ndarray]
BASE = RenderRequest("a cat", seed=3, steps=2, width=64, height=64)


@pytest.fixture
def picture_with_infotext(tmp_path: Path) -> Path:
    path = tmp_path / "result.png"
    infotext = format_infotext("a lighthouse", "fog", {"Steps": 20, "Seed": 77, "Size": "40x24"})
    gradient = np.linspace(0, 255, 40 * 24 * 3).reshape(24, 40, 3).astype(np.uint8)
    path.write_bytes(png_with_infotext(Image.fromarray(gradient), infotext))
    return path


def test_fast_upscale_needs_no_model(tmp_path: Path, picture_with_infotext: Path) -> None:
    engine = Engine(tmp_path / "no-models-here")  # would fail if it tried to load one
    request = dataclasses.replace(
        BASE, mode="upscale", init_image=str(picture_with_infotext), options={"upscale_factor": 4}
    )
    [image] = engine.render(request)
    assert (image.width, image.height) == (160, 96)
    prompt, negative, params = parse_infotext(image.infotext)
    assert (prompt, negative, params["Seed"]) == ("a lighthouse", "fog", 77)
    assert (params["Postprocess upscale by"], params["Postprocess upscaler"]) == (4, "Lanczos")


def test_creative_upscale_redetails_with_the_model(
    engine: Engine, picture_with_infotext: Path, pixels: PixelReader
) -> None:
    # Of a --relax picture (edits keep its relax): its text says so, as the picture's did.
    options = {
        "upscale_factor": 2,
        "upscale_mode": "creative",
        "upscale_strength": 0.5,
        "relax": True,
    }
    request = dataclasses.replace(
        BASE, mode="upscale", init_image=str(picture_with_infotext), options=options
    )
    [image] = engine.render(request)
    assert (image.width, image.height) == (80, 48)
    params = parse_infotext(image.infotext)[2]
    assert (params["Model"], params["Denoising strength"], params["Size"]) == ("tiny", 0.5, "80x48")
    assert params["Relax"] == "True"
    fast = engine.render(dataclasses.replace(request, options={"upscale_factor": 2}))[0]
    assert np.abs(pixels(image.png) - pixels(fast.png)).mean() > 1


def test_creative_upscale_past_the_model_size_goes_in_tiles(
    engine: Engine, picture_with_infotext: Path
) -> None:
    """40x24 at 4x is 160x96: six tiles of the tiny model's 64-pixel native size, overlapping
    by 8, in two pipeline calls (four tiles, then two), blended into one picture."""
    options = {"upscale_factor": 4, "upscale_mode": "creative", "upscale_strength": 0.5}
    request = dataclasses.replace(
        BASE, steps=4, mode="upscale", init_image=str(picture_with_infotext), options=options
    )
    reports: list[StepProgress] = []
    [image] = engine.render(request, progress=reports.append)
    assert (image.width, image.height) == (160, 96)
    params = parse_infotext(image.infotext)[2]
    assert (params["Size"], params["SD upscale overlap"]) == ("160x96", 8)
    # Three steps per call (img2img's, the web UI's int(0.5 x 4) + 1), two calls: the total is
    # known from the first report.
    assert [(r.step, r.total_steps) for r in reports] == [(step, 6) for step in range(1, 7)]
    assert engine.render(request)[0].png == image.png  # tile i uses seed + i: repeatable


def test_hires_fix_renders_twice_and_reports_both_passes(engine: Engine) -> None:
    reports: list[StepProgress] = []
    request = dataclasses.replace(
        BASE, options={"hires_scale": 1.5, "hires_steps": 4, "hires_denoising": 0.5}
    )
    [image] = engine.render(request, progress=reports.append)
    assert (image.width, image.height) == (96, 96)
    params = parse_infotext(image.infotext)[2]
    assert params["Size"] == "64x64"  # the web UI records the first pass's size
    assert (params["Hires upscale"], params["Hires steps"], params["Denoising strength"]) == (
        1.5,
        4,
        0.5,
    )
    # 2 first-pass steps, then exactly the 4 hires steps (the web UI's: the last 4 of an
    # 8-step schedule; diffusers' img2img would run 4 x 0.5 = 2).
    assert [report.step for report in reports] == [1, 2, 3, 4, 5, 6]
    assert {report.total_steps for report in reports} == {6}


def test_latent_hires_resizes_the_first_pass_latents(engine: Engine, pixels: PixelReader) -> None:
    """The web UI's default hires upscaler: no decode and encode between the two passes."""
    hires = {"hires_scale": 2, "hires_denoising": 0.6}
    request = dataclasses.replace(BASE, options={**hires, "hires_upscaler": "latent (NEAREST)"})
    [latent] = engine.render(request)
    assert (latent.width, latent.height) == (128, 128)
    assert parse_infotext(latent.infotext)[2]["Hires upscaler"] == "Latent (nearest)"
    assert engine.render(request)[0].png == latent.png
    [bilinear] = engine.render(
        dataclasses.replace(request, options={**hires, "hires_upscaler": "Latent"})
    )
    [lanczos] = engine.render(dataclasses.replace(request, options=hires))
    assert np.abs(pixels(latent.png) - pixels(bilinear.png)).mean() > 1
    assert np.abs(pixels(latent.png) - pixels(lanczos.png)).mean() > 1


def test_inpainting_checkpoints_take_hires_fix_but_not_in_latents(engine: Engine) -> None:
    request = dataclasses.replace(BASE, model="tiny-inpainting", options={"hires_scale": 2})
    [image] = engine.render(request)
    assert (image.width, image.height) == (128, 128)
    assert parse_infotext(image.infotext)[2]["Hires upscaler"] == "Lanczos"
    latent = dataclasses.replace(request, options={"hires_scale": 2, "hires_upscaler": "Latent"})
    with pytest.raises(RenderInputError, match="the Latent hires upscaler needs an ordinary"):
        engine.render(latent)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"hires_scale": 5}, "hires scale must be above 1 and at most 4, got 5"),
        ({"hires_scale": 2, "hires_steps": -1}, "hires steps must be from 0"),
        ({"hires_scale": 2, "hires_denoising": 0}, "hires denoising must be above 0"),
    ],
)
def test_hires_options_are_checked(options: dict[str, object], message: str) -> None:
    with pytest.raises(RenderInputError, match=message):
        HiresOptions.from_options(options, 64, 64)


def test_one_hires_step_runs_one_step(engine: Engine) -> None:
    """The web UI runs the hires steps whatever the denoising: 1 step at 0.7 is the last step
    of a 1-step schedule (diffusers' int(1 x 0.7) = 0 would run none; this was refused)."""
    reports: list[StepProgress] = []
    request = dataclasses.replace(BASE, options={"hires_scale": 1.5, "hires_steps": 1})
    [image] = engine.render(request, progress=reports.append)
    assert (image.width, image.height) == (96, 96)
    assert [(r.step, r.total_steps) for r in reports] == [(1, 3), (2, 3), (3, 3)]
    validate_request(dataclasses.replace(BASE, steps=1, options={"hires_scale": 1.5}))


def test_a_hires_schedule_is_no_longer_than_the_sampler_takes(
    models_dir: Path, tmp_path: Path
) -> None:
    """8 hires steps at 0.15 stretch to a 53-step schedule; an LCM model's own sampler
    (diffusers' LCM) lays out at most 50, so the schedule stops there (diffusers raised).
    Steps run: still the hires steps."""
    (tmp_path / "tiny-lcm").symlink_to(models_dir / TINY, target_is_directory=True)
    engine = Engine(tmp_path, device="cpu")
    reports: list[StepProgress] = []
    hires = {"hires_scale": 1.5, "hires_steps": 8, "hires_denoising": 0.15}
    request = dataclasses.replace(BASE, model="tiny-lcm", sampler="LCM", options=hires)
    [image] = engine.render(request, progress=reports.append)
    assert (image.width, image.height) == (96, 96)
    assert reports[-1].step == reports[-1].total_steps == 2 + 8


def test_hires_size_limit_and_rounding() -> None:
    assert scaled_render_size(512, 768, 1.5) == (768, 1152)
    assert scaled_render_size(100, 60, 1.3) == (128, 80)
    with pytest.raises(RenderInputError, match="hires fix would render 2560x2560"):
        HiresOptions.from_options({"hires_scale": 2.5}, 1024, 1024)
    assert HiresOptions.from_options({}, 64, 64) is None


@pytest.mark.parametrize(
    ("size", "scale", "expected"),
    [
        # The web UI's int(side x scale), floored to a multiple of 8 by its latent resize
        # and VAE; rounding to the nearest made 720 and 1080x1584.
        ((512, 512), 1.4, (712, 712)),
        ((832, 1216), 1.3, (1080, 1576)),
        ((512, 768), 1.5, (768, 1152)),
        ((640, 960), 1.75, (1120, 1680)),
    ],
)
def test_hires_size_is_the_web_uis(
    size: tuple[int, int], scale: float, expected: tuple[int, int]
) -> None:
    hires = HiresOptions.from_options({"hires_scale": scale}, *size)
    assert hires is not None and hires.size == expected


def _fewest_decimals_for(width: int, height: int, size: tuple[int, int]) -> int:
    """Found by search: the fewest decimals of a scale above 1 whose ``hires_size`` is
    ``size``. ``int(side x scale)`` floored to 8 is a side of ``size`` for scales in
    [side of size / side, (side of size + 8) / side); each length's decimals in or next to
    that range are tried in floats, as ``hires_size`` reads them."""
    low = max(Fraction(size[0], width), Fraction(size[1], height))
    high = min(Fraction(size[0] + 8, width), Fraction(size[1] + 8, height))
    for decimals in range(17):
        unit = 10**decimals
        for tenths in range(math.floor(low * unit) - 1, math.ceil(high * unit) + 2):
            scale = float(Fraction(tenths, unit))
            if scale > 1 and hires_size(width, height, scale) == size:
                return decimals
    raise AssertionError(f"no scale gives {size}")


@given(
    width=st.integers(8, 256).map(lambda eighths: eighths * 8),
    height=st.integers(8, 256).map(lambda eighths: eighths * 8),
    ratio=st.fractions(Fraction(1), Fraction(4)).filter(lambda ratio: ratio > 1),
    both_sides=st.booleans(),
)
@example(width=960, height=960, ratio=Fraction(1056, 960), both_sides=False)  # 1.1, not 1.101
@example(width=80, height=80, ratio=Fraction(88, 80), both_sides=False)  # 1.1, not 1.11
@example(width=640, height=960, ratio=Fraction(1968, 960), both_sides=True)  # 2.051
def test_a_hires_resize_is_written_as_the_shortest_scale_of_its_size(
    width: int, height: int, ratio: Fraction, both_sides: bool
) -> None:
    """The scale a "Hires resize" is written as (the infotext's ``Hires upscale``) gives the
    size the resize asked for, is above 1, and has the fewest decimals any such scale has."""
    to_width = min(4 * width, math.ceil(width * ratio))
    to_height = min(4 * height, math.ceil(height * ratio)) if both_sides else 0
    scale = hires_scale_to(width, height, to_width, to_height)
    size = hires_size(width, height, scale)
    least = max(Fraction(to_width, width), Fraction(to_height, height))
    assert size == (math.floor(width * least) // 8 * 8, math.floor(height * least) // 8 * 8)
    assert 1 < scale <= 4
    decimals = max(0, -int(Decimal(repr(scale)).normalize().as_tuple().exponent))
    assert decimals == _fewest_decimals_for(width, height, size)


def test_upscale_size_limits() -> None:
    fast = UpscaleOptions.from_options({"upscale_factor": 4})
    assert fast.output_size(2048, 1024) == (8192, 4096)
    with pytest.raises(RenderInputError, match="largest side allowed is 8192"):
        fast.output_size(4096, 64)
    creative = UpscaleOptions.from_options({"upscale_factor": 2, "upscale_mode": "creative"})
    assert creative.output_size(1200, 600) == (2400, 1200)  # past the render limit: tiles
    with pytest.raises(RenderInputError, match="largest side allowed is 4096"):
        creative.output_size(2400, 600)
    with pytest.raises(RenderInputError, match="upscale mode must be 'fast' or 'creative'"):
        UpscaleOptions.from_options({"upscale_mode": "magic"})
