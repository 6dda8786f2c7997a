from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from inference.engine import Engine
from inference.infotext import parse_infotext
from inference.noise import initial_noise, seeded_noise, slerp
from inference.types import RenderRequest

SHAPE = (1, 4, 8, 8)

PixelReader = Callable[[bytes], np.ndarray]


def test_noise_depends_only_on_seed() -> None:
    assert torch.equal(seeded_noise(9, SHAPE), seeded_noise(9, SHAPE))
    assert not torch.equal(seeded_noise(9, SHAPE), seeded_noise(10, SHAPE))


def test_slerp_ends_and_norm() -> None:
    start, end = seeded_noise(1, SHAPE), seeded_noise(2, SHAPE)
    assert torch.equal(slerp(0.0, start, end), start)
    assert torch.allclose(slerp(1.0, start, end), end)
    middle = slerp(0.5, start, end)
    # Lerp would shrink the norm by about 1/sqrt(2); slerp keeps it Gaussian-like.
    assert abs(middle.norm() / start.norm() - 1) < 0.05
    assert not torch.allclose(middle, start) and not torch.allclose(middle, end)


def test_slerp_of_parallel_noise_falls_back_to_lerp() -> None:
    noise = seeded_noise(1, SHAPE)
    assert torch.allclose(slerp(0.3, noise, noise * 2), noise * 1.3)


def test_variation_strength_zero_is_the_base_noise() -> None:
    assert torch.equal(initial_noise(1, SHAPE, 2, 0.0), seeded_noise(1, SHAPE))
    assert torch.allclose(initial_noise(1, SHAPE, 2, 1.0), seeded_noise(2, SHAPE))


def test_variation_renders_between_base_and_variation(engine: Engine, pixels: PixelReader) -> None:
    # Euler is deterministic after the first noise, so strength 1 gives the variation's image.
    base = RenderRequest("a cat", seed=100, steps=3, width=64, height=64, sampler="Euler")
    other = engine.render(dataclasses.replace(base, seed=200))[0]
    plain = engine.render(base)[0]
    none = engine.render(dataclasses.replace(base, variation_seed=200, variation_strength=0.0))[0]
    full = engine.render(dataclasses.replace(base, variation_seed=200, variation_strength=1.0))[0]
    half = engine.render(dataclasses.replace(base, variation_seed=200, variation_strength=0.5))[0]
    assert np.array_equal(pixels(none.png), pixels(plain.png))
    assert np.abs(pixels(full.png) - pixels(other.png)).max() <= 1
    assert np.abs(pixels(half.png) - pixels(plain.png)).mean() > 1
    assert np.abs(pixels(half.png) - pixels(other.png)).mean() > 1
    params = parse_infotext(half.infotext)[2]
    assert (params["Variation seed"], params["Variation seed strength"]) == (200, 0.5)
    assert "Variation seed" not in parse_infotext(none.infotext)[2]


def test_batch_variation_seeds_count_up(engine: Engine) -> None:
    request = RenderRequest(
        "a cat",
        seed=1,
        steps=2,
        width=64,
        height=64,
        count=2,
        variation_seed=50,
        variation_strength=0.3,
    )
    images = engine.render(request)
    assert [parse_infotext(image.infotext)[2]["Variation seed"] for image in images] == [50, 51]
