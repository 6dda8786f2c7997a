"""The engine side of ``--tile``, ``--stop`` and ``--chaos`` on the tiny model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from inference.engine import Engine
from inference.infotext import parse_infotext
from inference.tiling import padded_convolutions, seamless
from inference.tiny import build_tiny_pipeline
from inference.types import RenderRequest, StepProgress
from tests.inference.conftest import PixelReader

QUICK = RenderRequest(
    prompt="a red fox, in the snow, at dawn", seed=7, steps=4, width=64, height=64
)


def test_seamless_makes_the_unet_and_the_vae_wrap_around_and_restores_them() -> None:
    """With circular padding the models see no edges: shifting the input across the right
    edge (by a multiple of the UNet's downsampling) shifts the output the same way, which
    is what makes the picture's left and right edges continue into each other."""
    pipeline = build_tiny_pipeline()
    unet, vae = pipeline.unet, pipeline.vae
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(1, 77, unet.config.cross_attention_dim)

    def unet_then_decode(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            denoised = x - unet(x, 500, encoder_hidden_states=text).sample
            decoded: torch.Tensor = vae.decode(denoised).sample
        return decoded

    def shift_error() -> float:
        shifted = unet_then_decode(torch.roll(latents, shifts=2, dims=-1))
        expected = torch.roll(unet_then_decode(latents), shifts=2 * 8, dims=-1)
        return float((shifted - expected).abs().max())

    zero_padded = shift_error()
    with seamless(True, unet, vae):
        assert {conv.padding_mode for conv in padded_convolutions(unet, vae)} == {"circular"}
        wrapped = shift_error()
    assert wrapped < 1e-4 < zero_padded
    assert {conv.padding_mode for conv in padded_convolutions(unet, vae)} == {"zeros"}


def test_a_tiled_render_pads_circularly_during_the_call_and_says_so(engine: Engine) -> None:
    """Every padded convolution that runs during a tiled render pads circularly."""
    modes: set[str] = set()
    original_forward = torch.nn.Conv2d.forward

    def recording_forward(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        if isinstance(conv.padding, tuple) and any(conv.padding):
            modes.add(conv.padding_mode)
        return original_forward(conv, x)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.nn.Conv2d, "forward", recording_forward)
        [tiled] = engine.render(dataclasses.replace(QUICK, options={"tile": True}))
    assert modes == {"circular"}
    assert parse_infotext(tiled.infotext)[2]["Tiling"] == "True"
    modes.clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.nn.Conv2d, "forward", recording_forward)
        [plain] = engine.render(QUICK)
    assert modes == {"zeros"}  # restored: the next render has edges again
    assert "Tiling" not in parse_infotext(plain.infotext)[2]


def test_stop_runs_that_share_of_the_steps_then_decodes(
    engine: Engine, pixels: PixelReader
) -> None:
    steps: list[StepProgress] = []
    [stopped] = engine.render(dataclasses.replace(QUICK, options={"stop": 50}), steps.append)
    assert [step.step for step in steps] == [1, 2]  # of 4
    [full] = engine.render(QUICK)
    assert parse_infotext(stopped.infotext)[2]["Stop at"] == "50%"
    assert np.abs(pixels(stopped.png) - pixels(full.png)).max() > 0


def test_chaos_gives_each_picture_its_own_weights_and_its_infotext_renders_it_again(
    engine: Engine, pixels: PixelReader
) -> None:
    request = dataclasses.replace(QUICK, count=2, options={"chaos": 80})
    first, second = engine.render(request)
    prompts = [parse_infotext(image.infotext)[0] for image in (first, second)]
    assert prompts[0] != prompts[1]
    assert all(":" in prompt and prompt != QUICK.prompt for prompt in prompts)
    assert parse_infotext(second.infotext)[2]["Chaos"] == 80
    # The second picture's own prompt and seed, without chaos, give the same picture.
    [again] = engine.render(dataclasses.replace(QUICK, prompt=prompts[1], seed=second.seed))
    assert np.abs(pixels(again.png) - pixels(second.png)).max() <= 1
