from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from inference.engine import Engine
from inference.images import MASKED_CONTENTS
from inference.infotext import parse_infotext
from inference.passes.denoise import LatentFill
from inference.types import RenderInputError, RenderRequest, StepProgress

PixelReader = Callable[[bytes], np.ndarray]


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An init picture (96x80, with shapes) and a mask with a white square in it."""
    folder = tmp_path_factory.mktemp("pictures")
    init = Image.new("RGB", (96, 80), (30, 120, 200))
    ImageDraw.Draw(init).ellipse((10, 10, 60, 70), fill=(250, 200, 20))
    mask = Image.new("L", (96, 80), 0)
    ImageDraw.Draw(mask).rectangle((40, 24, 63, 47), fill=255)
    empty_mask = Image.new("L", (96, 80), 0)
    paths = {"init": folder / "init.png", "mask": folder / "mask.png", "empty": folder / "e.png"}
    init.save(paths["init"])
    mask.save(paths["mask"])
    empty_mask.save(paths["empty"])
    return {name: str(path) for name, path in paths.items()}


def img2img(pictures: dict[str, str], **changes: Any) -> RenderRequest:
    base = RenderRequest(
        "a cat",
        seed=4,
        steps=4,
        width=64,
        height=64,
        mode="img2img",
        init_image=pictures["init"],
        denoising_strength=0.5,
    )
    return dataclasses.replace(base, **changes)


def inpaint(pictures: dict[str, str], **changes: Any) -> RenderRequest:
    return img2img(pictures, mode="inpaint", mask_image=pictures["mask"], **changes)


def test_img2img_is_reproducible_and_uses_its_inputs(
    engine: Engine, pictures: dict[str, str], pixels: PixelReader, tmp_path: Path
) -> None:
    first = engine.render(img2img(pictures))[0]
    assert np.array_equal(pixels(first.png), pixels(engine.render(img2img(pictures))[0].png))
    assert (first.width, first.height) == (64, 64)
    assert parse_infotext(first.infotext)[2]["Denoising strength"] == 0.5
    stronger = engine.render(img2img(pictures, denoising_strength=0.9))[0]
    assert not np.array_equal(pixels(first.png), pixels(stronger.png))
    other_init = tmp_path / "other.png"
    Image.new("RGB", (64, 64), "white").save(other_init)
    # 0.3 of 4 steps runs the last 2 (the web UI's int(0.3 x 4) + 1), where the init shows.
    gentle = engine.render(img2img(pictures, denoising_strength=0.3))[0]
    other_request = img2img(pictures, init_image=str(other_init), denoising_strength=0.3)
    other = engine.render(other_request)[0]
    assert np.abs(pixels(gentle.png) - pixels(other.png)).mean() > 1


def test_inpaint_below_full_denoising_runs_every_step_from_the_picture(
    engine: Engine, pictures: dict[str, str]
) -> None:
    """0.8 of 4 steps runs all 4 (the web UI's int(0.8 x 4) + 1) from the picture noised at the
    largest sigma: diffusers' inpaint pipeline reads that strength as "from pure noise", so
    Easel ran 3. That the picture is what gets noised, as the web UI's: tests/parity
    (an inpaint of the whole picture is its img2img)."""
    reports: list[StepProgress] = []
    request = inpaint(pictures, width=96, height=80, denoising_strength=0.8)
    engine.render(request, progress=reports.append)
    assert [(report.step, report.total_steps) for report in reports][-1] == (4, 4)


def test_inpaint_keeps_pixels_outside_the_mask(
    engine: Engine, pictures: dict[str, str], pixels: PixelReader
) -> None:
    # Whole picture at the init's own size, no blur: the composite edge is the mask edge.
    request = inpaint(pictures, width=96, height=80, options={"mask_blur": 0})
    [image] = engine.render(request)
    result = pixels(image.png)
    original = np.asarray(Image.open(pictures["init"]).convert("RGB"), dtype=np.int16)
    outside = np.ones(result.shape[:2], bool)
    outside[24:48, 40:64] = False
    assert np.array_equal(result[outside], original[outside])
    assert np.abs(result[~outside] - original[~outside]).mean() > 5
    params = parse_infotext(image.infotext)[2]
    assert (params["Mask blur"], params["Masked content"]) == (0, "original")


def test_inpaint_only_masked_returns_the_full_picture(
    engine: Engine, pictures: dict[str, str], pixels: PixelReader
) -> None:
    request = inpaint(pictures, options={"only_masked": True, "only_masked_padding": 4})
    [image] = engine.render(request)
    assert (image.width, image.height) == (96, 80)  # the init's size, not the render size
    result = pixels(image.png)
    original = np.asarray(Image.open(pictures["init"]).convert("RGB"), dtype=np.int16)
    # Far from the square (blur 4 reaches about 3 sigma) nothing changed.
    assert np.array_equal(result[:, :20], original[:, :20])
    assert np.array_equal(result[:8], original[:8])
    assert np.abs(result[28:44, 44:60] - original[28:44, 44:60]).mean() > 5
    params = parse_infotext(image.infotext)[2]
    assert (params["Inpaint area"], params["Masked area padding"]) == ("Only masked", 4)


@pytest.mark.parametrize("content", MASKED_CONTENTS)
def test_every_masked_content_mode_runs(
    engine: Engine, pictures: dict[str, str], content: str
) -> None:
    [image] = engine.render(inpaint(pictures, options={"masked_content": content}))
    assert parse_infotext(image.infotext)[2]["Masked content"] == content


def test_task_pipelines_print_no_progress_bars(
    models_dir: Path, pictures: dict[str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    """A server logs; diffusers' per-step bars on stderr would flood it (a fresh engine, so
    its img2img and inpaint pipelines are made in this test)."""
    fresh = Engine(models_dir)
    fresh.render(img2img(pictures))
    fresh.render(inpaint(pictures))
    assert "it/s" not in capfd.readouterr().err


def test_latent_fills_replace_the_masked_latents_only() -> None:
    mask = Image.new("L", (64, 32), 0)
    mask.paste(255, (0, 0, 32, 32))  # the left half, latent columns 0-3 of 8
    latents, noise = torch.ones(1, 4, 4, 8), torch.full((1, 4, 4, 8), 2.0)
    filled_noise = LatentFill("latent noise", mask).apply(latents, noise)
    filled_nothing = LatentFill("latent nothing", mask).apply(latents, noise)
    assert torch.equal(filled_noise[..., :3], noise[..., :3])
    assert torch.equal(filled_nothing[..., :3], torch.zeros(1, 4, 4, 3))
    for filled in (filled_noise, filled_nothing):
        assert torch.equal(filled[..., 5:], latents[..., 5:])  # outside: the picture's latents


def test_latent_fills_change_what_the_hole_starts_from(
    engine: Engine, pictures: dict[str, str], pixels: PixelReader
) -> None:
    """At a denoising strength below 1 the start decides much of the hole: each fill gives
    its own picture there, and the outside stays the original."""
    results = {}
    for content in ("original", "latent noise", "latent nothing"):
        options = {"masked_content": content, "mask_blur": 0}
        request = inpaint(pictures, width=96, height=80, denoising_strength=0.5, options=options)
        results[content] = pixels(engine.render(request)[0].png)
    original = np.asarray(Image.open(pictures["init"]).convert("RGB"), dtype=np.int16)
    for content, result in results.items():
        assert np.array_equal(result[:8], original[:8]), content
    hole = (slice(28, 44), slice(44, 60))
    assert np.abs(results["latent noise"][hole] - results["original"][hole]).mean() > 2
    assert np.abs(results["latent nothing"][hole] - results["original"][hole]).mean() > 2
    assert np.abs(results["latent noise"][hole] - results["latent nothing"][hole]).mean() > 2


def test_inverted_mask_repaints_the_outside(
    engine: Engine, pictures: dict[str, str], pixels: PixelReader
) -> None:
    request = inpaint(pictures, width=96, height=80, options={"mask_blur": 0, "mask_invert": True})
    result = pixels(engine.render(request)[0].png)
    original = np.asarray(Image.open(pictures["init"]).convert("RGB"), dtype=np.int16)
    assert np.array_equal(result[24:48, 40:64], original[24:48, 40:64])
    assert np.abs(result[:20] - original[:20]).mean() > 5


def test_nine_channel_inpainting_model(
    engine: Engine, pictures: dict[str, str], pixels: PixelReader
) -> None:
    request = inpaint(
        pictures, model="tiny-inpainting", width=96, height=80, options={"mask_blur": 0}
    )
    result = pixels(engine.render(request)[0].png)
    original = np.asarray(Image.open(pictures["init"]).convert("RGB"), dtype=np.int16)
    assert np.array_equal(result[:24], original[:24])
    # txt2img and img2img on an inpainting model repaint everything through its inpaint path.
    txt2img = RenderRequest("a cat", seed=1, steps=2, width=64, height=64, model="tiny-inpainting")
    assert engine.render(txt2img)[0].width == 64
    assert engine.render(img2img(pictures, model="tiny-inpainting"))[0].height == 64


@pytest.mark.parametrize(
    ("model", "request_for"),
    [("tiny", inpaint), ("tiny-inpainting", inpaint), ("tiny-inpainting", img2img)],
)
def test_full_denoising_starts_from_the_picture_as_a_step_below_it_does(
    engine: Engine,
    pictures: dict[str, str],
    pixels: PixelReader,
    model: str,
    request_for: Callable[..., RenderRequest],
) -> None:
    """At 4 steps, denoising 0.8 and 1 both run all 4 steps from the picture noised at the
    largest sigma, as the web UI's (t_enc = int(min(denoising, 0.999) x 4) = 3). Diffusers'
    inpaint pipelines (and with them a 9-channel model's img2img) read strength 1 as "from
    pure noise", which Easel followed at 1."""
    near, full = (
        pixels(engine.render(request_for(pictures, model=model, denoising_strength=d))[0].png)
        for d in (0.8, 1.0)
    )
    assert np.array_equal(near, full)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"init_image": None}, "img2img needs an init image"),
        ({"init_image": "/nonexistent.png"}, "^init image is missing or not a file$"),
        ({"mode": "inpaint"}, "inpaint needs a mask image"),
        (
            {"mode": "inpaint", "mask_image": "MASK", "options": {"mask_blur": 65}},
            "mask blur must be a whole number from 0 to 64, got 65",
        ),
        (
            {"mode": "inpaint", "mask_image": "MASK", "options": {"masked_content": "x"}},
            "masked content must be one of fill, original, latent noise, latent nothing",
        ),
        ({"mode": "inpaint", "mask_image": "EMPTY"}, "the mask is empty"),
        (
            {"mode": "upscale", "options": {"upscale_factor": 3}},
            "upscale factor must be 2 or 4, got 3",
        ),
    ],
)
def test_bad_inputs_are_refused(
    engine: Engine, pictures: dict[str, str], changes: dict[str, Any], message: str
) -> None:
    names = {"MASK": pictures["mask"], "EMPTY": pictures["empty"]}
    changes = {
        key: names.get(value, value) if isinstance(value, str) else value
        for key, value in changes.items()
    }
    with pytest.raises(RenderInputError, match=message):
        engine.render(img2img(pictures, **changes))
