"""The seeds a batch writes past 2**32 - 1: the web UI's seed + i (4294967296, not Easel's
wrapped 0), and that number pasted back renders the same picture."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from bot.edits import Picture, vary_request
from bot.infotext_import import installed_in, request_from_infotext_text
from bot.requests import picture_alone
from inference.engine import Engine
from inference.infotext import parse_infotext
from inference.types import RenderRequest
from tests.inference.conftest import PixelReader
from tests.inference.test_batching import BATCH_TOLERANCE

TOP = 2**32 - 1


def test_a_batch_past_the_top_seed_writes_the_web_ui_s_seeds_and_they_paste_back(
    engine: Engine, pixels: PixelReader
) -> None:
    top = RenderRequest("a fox", seed=TOP, steps=2, width=64, height=64, count=2)
    varied = dataclasses.replace(top, variation_seed=TOP, variation_strength=0.5)
    installed = installed_in(engine.registry, None)
    for request, key, written in (
        (top, "Seed", 2**32),  # picture 2: seed + 1
        (varied, "Variation seed", 2**32),  # a varied batch keeps its seed, steps this one
    ):
        second = engine.render(request)[1]
        params = parse_infotext(second.infotext)[2]
        assert params[key] == written
        pasted = request_from_infotext_text(second.infotext, installed)
        assert pasted.unhonoured == []
        again = engine.render(pasted.request)[0]  # alone: as a batch's picture, rounding aside
        assert np.abs(pixels(again.png) - pixels(second.png)).max() <= BATCH_TOLERANCE


def test_a_fast_upscale_of_a_wrapped_picture_stores_the_seed_its_buttons_take(
    engine: Engine, tmp_path: Path
) -> None:
    second = engine.render(RenderRequest("a fox", seed=TOP, steps=2, width=64, height=64, count=2))[
        1
    ]
    assert second.seed == 0
    path = tmp_path / "second.png"
    path.write_bytes(second.png)
    request = RenderRequest(
        "a fox",
        seed=0,
        mode="upscale",
        init_image=str(path),
        options={"upscale_factor": 2, "upscale_mode": "fast"},
    )
    upscaled = engine.render(request)[0]
    assert upscaled.seed == 0
    assert parse_infotext(upscaled.infotext)[2]["Seed"] == 2**32  # the text keeps what it said
    # Vary on the result: refused with "seed must be between 0 and 4294967295" before.
    result = tmp_path / "upscaled.png"
    result.write_bytes(upscaled.png)
    picture = Picture(result, upscaled.width, upscaled.height, upscaled.infotext)
    varied = vary_request(picture_alone(request, 0, upscaled.seed), picture, "subtle")
    assert varied.seed == 0
