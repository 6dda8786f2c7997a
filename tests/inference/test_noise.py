from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

import inference.noise as noise_module
import inference.passes.denoise as denoise_module
from bot.requests import picture_alone
from inference.engine import Engine
from inference.infotext import parse_infotext
from inference.noise import (
    StepNoise,
    initial_noise,
    initial_noise_and_generator,
    seeded_generator,
    seeded_noise,
    slerp,
    step_noise_drawn_ahead,
)
from inference.samplers import make_scheduler
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


def test_a_varied_batch_varies_one_picture(engine: Engine, pixels: PixelReader) -> None:
    """As the web UI: with a variation every picture keeps the main seed and only the variation
    seed counts up; picture 2 made alone (U2, Remix of it, its pasted settings) is itself."""
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
    recorded = [parse_infotext(image.infotext)[2] for image in images]
    assert [(params["Seed"], params["Variation seed"]) for params in recorded] == [(1, 50), (1, 51)]
    assert [image.seed for image in images] == [1, 1]
    alone = dataclasses.replace(picture_alone(request, 1, images[1].seed), count=1)
    pasted = dataclasses.replace(request, seed=1, variation_seed=51, count=1)
    assert alone == pasted
    [second] = engine.render(alone)
    assert np.array_equal(pixels(second.png), pixels(images[1].png))
    assert second.infotext == images[1].infotext


def _ancestral_steps(
    steps: int, seeds: list[int], ahead: bool, shape: tuple[int, ...] = SHAPE
) -> list[torch.Tensor]:
    """``steps`` Euler a steps on a fixed sample, optionally with the noise drawn ahead; the
    generators' states after the first step are appended last."""
    scheduler: Any = make_scheduler("Euler a", {"num_train_timesteps": 1000})
    scheduler.set_timesteps(steps)
    generators = [seeded_generator(seed) for seed in seeds]
    sample = seeded_noise(0, (len(seeds), *shape[1:]))
    outputs: list[torch.Tensor] = []
    after_first: list[torch.Tensor] = []
    with step_noise_drawn_ahead(scheduler, generators, steps) if ahead else nullcontext():
        for timestep in scheduler.timesteps:
            model_output = seeded_noise(int(timestep), sample.shape)
            sample = scheduler.step(
                model_output, timestep, sample, generator=generators
            ).prev_sample
            outputs.append(sample)
            if not after_first:
                after_first = [generator.get_state() for generator in generators]
    return outputs + after_first


# A picture's noise of whole blocks of torch's normal sampler (each generator's steps are
# then one draw), and one ending in a partial block (drawn step by step).
@pytest.mark.parametrize("shape", [SHAPE, (1, 4, 5, 3)])
def test_ancestral_step_noise_drawn_ahead_is_the_step_wise_noise_bit_for_bit(
    shape: tuple[int, ...],
) -> None:
    for seeds in ([5], [5, 6, 7]):
        step_wise = _ancestral_steps(4, seeds, ahead=False, shape=shape)
        ahead = _ancestral_steps(4, seeds, ahead=True, shape=shape)
        steps_step_wise, steps_ahead = step_wise[:4], ahead[:4]
        assert all(torch.equal(a, b) for a, b in zip(steps_step_wise, steps_ahead, strict=True))
        # Drawn ahead: after the first step every generator has already given all four draws.
        drained = [seeded_generator(seed) for seed in seeds]
        for generator in drained:
            for _ in range(4):
                torch.randn(shape, generator=generator)
        assert all(
            torch.equal(state, generator.get_state())
            for state, generator in zip(ahead[4:], drained, strict=True)
        )


def test_ancestral_step_noise_refilled_when_the_steps_do_not_fit_is_the_same_noise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At most ``AHEAD_BYTES`` are drawn ahead: two steps at a time here, over four steps."""
    seeds = [5, 6]
    step_wise = _ancestral_steps(4, seeds, ahead=False)
    monkeypatch.setattr(noise_module, "AHEAD_BYTES", 2 * len(seeds) * math.prod(SHAPE) * 4)
    ahead = _ancestral_steps(4, seeds, ahead=True)
    assert all(torch.equal(a, b) for a, b in zip(step_wise[:4], ahead[:4], strict=True))
    # After the first step each generator has given two steps' draws, not four.
    drained = [seeded_generator(seed) for seed in seeds]
    for generator in drained:
        torch.randn((2, *SHAPE), generator=generator)
    assert all(
        torch.equal(state, generator.get_state())
        for state, generator in zip(ahead[4:], drained, strict=True)
    )


def test_the_last_refill_draws_only_the_steps_left(monkeypatch: pytest.MonkeyPatch) -> None:
    """Five steps, room for two at a time: refills of 2, 2 and 1 (not 2, 2, 2), so the
    generators end where five step-wise draws leave them."""
    seeds = [5, 6]
    shape = (len(seeds), *SHAPE[1:])
    monkeypatch.setattr(noise_module, "AHEAD_BYTES", 2 * math.prod(shape) * 4)
    generators = [seeded_generator(seed) for seed in seeds]
    ahead = StepNoise(generators, draws=5)
    drawn = [ahead.next(randn_tensor, shape, "cpu", torch.float32) for _ in range(5)]
    step_wise = [seeded_generator(seed) for seed in seeds]
    expected = [randn_tensor(shape, generator=step_wise, dtype=torch.float32) for _ in range(5)]
    assert all(torch.equal(a, b) for a, b in zip(drawn, expected, strict=True))
    assert all(
        torch.equal(a.get_state(), b.get_state())
        for a, b in zip(generators, step_wise, strict=True)
    )


def test_ancestral_renders_equal_those_with_step_wise_noise(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = [
        RenderRequest("a cat", seed=21, steps=3, width=64, height=64, sampler=name, count=2)
        for name in ("Euler a", "DPM2 a", "DPM++ 2S a", "DPM++ 2M SDE", "LCM")
    ]
    ahead = [[image.png for image in engine.render(request)] for request in requests]
    monkeypatch.setattr(denoise_module, "step_noise_drawn_ahead", lambda *_: nullcontext())
    step_wise = [[image.png for image in engine.render(request)] for request in requests]
    assert ahead == step_wise


def test_the_generator_comes_back_where_the_initial_noise_left_it() -> None:
    for variation_seed, strength in ((None, 0.0), (8, 0.0), (8, 0.4)):
        noise, generator = initial_noise_and_generator(3, SHAPE, variation_seed, strength)
        assert torch.equal(noise, initial_noise(3, SHAPE, variation_seed, strength))
        reference = seeded_generator(3)
        torch.randn(SHAPE, generator=reference)
        # The seed's generator, past its draw (the variation's own generator is not kept).
        assert torch.equal(generator.get_state(), reference.get_state())


@pytest.mark.parametrize(
    ("changes", "seeded"),
    [
        ({}, [30, 31]),
        # A varied batch keeps its seed: each picture still draws with its own generators.
        ({"variation_seed": 80, "variation_strength": 0.4}, [30, 80, 30, 81]),
    ],
)
def test_ancestral_render_draws_each_initial_noise_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, changes: dict[str, Any], seeded: list[int]
) -> None:
    """One seeded generator per noise (the picture's, its variation's): the one that drew the
    initial noise goes on to the steps, rather than a second one drawing it again."""
    made: list[int] = []

    def counted(seed: int) -> torch.Generator:
        made.append(seed)
        return seeded_generator(seed)

    monkeypatch.setattr(noise_module, "seeded_generator", counted)
    request = RenderRequest(
        "a cat", seed=30, steps=2, width=64, height=64, sampler="Euler a", count=2, **changes
    )
    engine.render(request)
    assert made == seeded
