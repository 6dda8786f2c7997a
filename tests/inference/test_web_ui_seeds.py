"""Seeds past 2**32 - 1, as the web UI takes them: a typed one and a batch's seed + i render
and are written as given, and the written number pasted back renders the same picture."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.edits import (
    Picture,
    picture_settings,
    request_from_infotext,
    upscale_request,
    vary_request,
)
from bot.infotext_import import installed_in, request_from_infotext_text
from bot.requests import ImagineOptions, RequestError, build_request, picture_alone
from inference.engine import Engine
from inference.infotext import parse_infotext, png_with_infotext
from inference.limits import MAX_SEED, RANDOM_SEEDS
from inference.types import RenderRequest
from tests.inference.conftest import TINY, PixelReader
from tests.inference.test_batching import BATCH_TOLERANCE

TOP_32_BITS = 2**32 - 1
QUICK = "--steps 2 --ar 1:1"


def test_a_typed_seed_past_32_bits_renders_is_written_and_pastes_back_as_typed(
    engine: Engine, pixels: PixelReader
) -> None:
    """``--seed 4294967296`` renders at 4294967296 and its text says so; Use settings (the
    paste's reader) and a button (``picture_settings``) read it back, and render the same
    picture. torch's CPU generator reads the seed's low 32 bits for the initial noise, as the
    web UI's CPU noise (Euler a here: DPM++ SDE's Brownian tree reads them all)."""
    typed = build_request(ImagineOptions(f"a fox --seed {2**32} {QUICK}"))
    typed = dataclasses.replace(typed, width=64, height=64)
    assert typed.seed == 2**32
    [made] = engine.render(typed)
    assert made.seed == 2**32 and parse_infotext(made.infotext)[2]["Seed"] == 2**32
    pasted = request_from_infotext_text(made.infotext, installed_in(engine.registry, None))
    assert pasted.unhonoured == [] and pasted.request.seed == 2**32
    assert picture_settings(made.infotext, None).seed == 2**32
    [again] = engine.render(pasted.request)
    assert again.seed == 2**32
    assert np.array_equal(pixels(again.png), pixels(made.png))
    # The initial noise is its low 32 bits', as the web UI's CPU noise is; the prompt reads
    # the same.
    [low_bits] = engine.render(dataclasses.replace(typed, seed=0))
    assert np.array_equal(pixels(low_bits.png), pixels(made.png))


@pytest.mark.parametrize("seed", [MAX_SEED + 1, 2**64 - 1])
def test_a_seed_past_the_journal_s_integers_is_refused_naming_the_range(seed: int) -> None:
    with pytest.raises(RequestError, match=f"between 0 and {MAX_SEED}, or -1"):
        build_request(ImagineOptions(f"a fox --seed {seed}"))


def test_a_batch_past_32_bits_writes_seed_plus_i_and_it_pastes_back(
    engine: Engine, pixels: PixelReader
) -> None:
    top = RenderRequest("a fox", seed=TOP_32_BITS, steps=2, width=64, height=64, count=2)
    varied = dataclasses.replace(top, variation_seed=TOP_32_BITS, variation_strength=0.5)
    installed = installed_in(engine.registry, None)
    for request, key in ((top, "Seed"), (varied, "Variation seed")):
        second = engine.render(request)[1]
        params = parse_infotext(second.infotext)[2]
        assert params[key] == 2**32  # a varied batch keeps its seed, steps its variation seed
        assert second.seed == params["Seed"]
        pasted = request_from_infotext_text(second.infotext, installed)
        assert pasted.unhonoured == []
        again = engine.render(pasted.request)[0]  # alone: as a batch's picture, rounding aside
        assert np.abs(pixels(again.png) - pixels(second.png)).max() <= BATCH_TOLERANCE


def test_a_fast_upscale_of_a_picture_past_32_bits_keeps_its_seed(
    engine: Engine, tmp_path: Path
) -> None:
    top = RenderRequest("a fox", seed=TOP_32_BITS, steps=2, width=64, height=64, count=2)
    second = engine.render(top)[1]
    assert second.seed == 2**32
    path = tmp_path / "second.png"
    path.write_bytes(second.png)
    request = RenderRequest(
        "a fox",
        seed=2**32,
        mode="upscale",
        init_image=str(path),
        options={"upscale_factor": 2, "upscale_mode": "fast"},
    )
    upscaled = engine.render(request)[0]
    assert upscaled.seed == 2**32
    assert parse_infotext(upscaled.infotext)[2]["Seed"] == 2**32
    result = tmp_path / "upscaled.png"
    result.write_bytes(upscaled.png)
    picture = Picture(result, upscaled.width, upscaled.height, upscaled.infotext)
    varied = vary_request(picture_alone(request, 0, upscaled.seed), picture, "subtle")
    assert varied.seed == 2**32


@pytest.mark.parametrize(
    ("written", "low_bits"), [(MAX_SEED + 1, 0), (2**64 - 1, TOP_32_BITS), (-7, None)]
)
def test_a_picture_s_seed_the_journal_cannot_keep_renders_at_its_low_bits_or_a_random_one(
    engine: Engine, tmp_path: Path, written: int, low_bits: int | None
) -> None:
    """Another UI's 64-bit seed in an uploaded picture's text: /vary, the buttons and Use
    settings render at its low 32 bits (the same CPU initial noise; past MAX_SEED it could not
    be stored), a negative one at a random seed, each with a note naming it, rather than
    refuse a seed the member never typed; a fast upscale records that seed, not the text's."""
    text = f"a fox\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: {written}, Size: 64x64"
    path = tmp_path / "uploaded.png"
    path.write_bytes(png_with_infotext(Image.new("RGB", (64, 64), "red"), text))
    picture = Picture(path, 64, 64, text)
    varied = vary_request(request_from_infotext(text, None, [TINY]), picture, "subtle")
    pasted = request_from_infotext_text(text, installed_in(engine.registry, None))
    [note] = varied.notes
    assert note in pasted.unhonoured
    if low_bits is None:
        assert note == (
            f"the picture's seed {written} is not a whole number between 0 and {MAX_SEED}; a "
            "random seed is used"
        )
        assert 0 <= varied.seed < RANDOM_SEEDS and 0 <= pasted.request.seed < RANDOM_SEEDS
    else:
        assert note == (
            f"the picture's seed {written} is past {MAX_SEED}, the largest kept here; seed "
            f"{low_bits} (its low 32 bits: the same initial noise) is used"
        )
        assert varied.seed == pasted.request.seed == low_bits
    upscale = upscale_request(picture_settings(text, None), picture, 2, "fast")
    [upscaled] = engine.render(dataclasses.replace(upscale, seed=5))
    assert upscaled.seed == (5 if low_bits is None else low_bits)
