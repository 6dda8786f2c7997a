from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest

from inference.engine import Engine
from inference.infotext import parse_infotext
from inference.limits import MAX_BATCH_IMAGES
from inference.types import RenderInputError, RenderRequest

PixelReader = Callable[[bytes], np.ndarray]
# Batched matrix products may round differently from solo ones: allow 2/255 per channel.
BATCH_TOLERANCE = 2
BASE = RenderRequest("a cat", width=64, height=64, steps=3)


def test_batch_matches_solo_renders(engine: Engine, pixels: PixelReader) -> None:
    """Each picture's text is its solo render's: its own seeds, chaos and relax, though the
    call runs as the first request."""
    requests = [
        dataclasses.replace(
            BASE,
            prompt="a red fox, blue sky",
            seed=50,
            variation_seed=900,
            variation_strength=0.3,
            options={"chaos": 60, "relax": True},
        ),
        dataclasses.replace(BASE, prompt="a blue bird", negative_prompt="fog", seed=30, count=2),
        dataclasses.replace(
            BASE, prompt="a tree", seed=10, variation_seed=7, variation_strength=0.4
        ),
    ]
    batched = engine.render_batch(requests)
    assert [len(images) for images in batched] == [1, 2, 1]
    for request, images in zip(requests, batched, strict=True):
        solo = engine.render(request)
        for batch_image, solo_image in zip(images, solo, strict=True):
            assert batch_image.seed == solo_image.seed
            assert batch_image.infotext == solo_image.infotext
            difference = np.abs(pixels(batch_image.png) - pixels(solo_image.png))
            assert difference.max() <= BATCH_TOLERANCE
    assert parse_infotext(batched[1][1].infotext)[:2] == ("a blue bird", "fog")
    assert [image.seed for image in batched[1]] == [30, 31]
    first, bird, tree = (parse_infotext(images[0].infotext)[2] for images in batched)
    assert (first["Chaos"], first["Relax"]) == (60, "True")
    assert "Chaos" not in bird and "Relax" not in bird and bird["Seed"] == 30
    assert (tree["Seed"], tree["Variation seed"]) == (10, 7)


def test_incompatible_requests_are_refused(engine: Engine) -> None:
    with pytest.raises(RenderInputError, match="a batch must share model, size, sampler"):
        engine.render_batch([BASE, dataclasses.replace(BASE, steps=4)])
    too_many = [dataclasses.replace(BASE, count=8)] * 3
    with pytest.raises(RenderInputError, match=f"at most {MAX_BATCH_IMAGES} images, got 24"):
        engine.render_batch(too_many)
    assert engine.render_batch([]) == []
