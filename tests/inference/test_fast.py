"""Fast mode: the UNet feature cache (DeepCache) and the few-step models' recipes."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from inference.engine import Engine
from inference.fast import DEEP_CACHE_INTERVAL, DeepCache, fast_preset
from inference.infotext import parse_infotext
from inference.tiny import build_tiny_pipeline, write_tiny_model
from inference.types import RenderRequest
from tests.inference.conftest import PixelReader

# Measured on the tiny model (benchmarks/fast_mode.py --unet tiny): 41-47 dB over seeds and
# 12-20 steps. Far below, the cache would be reusing features it should not.
MIN_FAST_PSNR_DB = 35.0


def psnr(first: np.ndarray, second: np.ndarray) -> float:
    mse = float(np.mean((first.astype(np.float64) - second) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]

    def hook(*_: Any) -> None:
        calls[0] += 1

    module.register_forward_hook(hook)
    return calls


def test_the_deep_blocks_run_only_every_interval_unet_calls() -> None:
    pipeline = build_tiny_pipeline()
    unet = pipeline.unet
    # A module inside the mid block runs only when the mid block really computes; the last
    # up block runs at every call.
    deep, shallow = count_calls(unet.mid_block.resnets[0]), count_calls(unet.up_blocks[-1])
    with DeepCache(unet).installed() as cache:
        pipeline(
            "a cat",
            num_inference_steps=7,
            height=64,
            width=64,
            generator=torch.Generator().manual_seed(1),
            output_type="latent",
        )
    assert (cache.calls, shallow[0]) == (7, 7)  # Euler a: one UNet call a step (CFG batched)
    assert cache.full_calls == deep[0] == math.ceil(7 / DEEP_CACHE_INTERVAL) == 3
    # Afterwards the UNet is its plain self again: every block computes at every call.
    assert all("forward" not in block.__dict__ for block in unet.modules())
    sample, text = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32)
    unet(sample, 10, text)
    assert deep[0] == 4


def test_a_new_input_shape_forces_a_full_call() -> None:
    unet = build_tiny_pipeline().unet
    text = torch.randn(1, 77, 32)
    with torch.inference_mode(), DeepCache(unet, interval=10).installed() as cache:
        unet(torch.randn(1, 4, 8, 8), 10, text)
        unet(torch.randn(1, 4, 8, 8), 9, text)
        unet(torch.randn(1, 4, 16, 8), 8, text)  # hires pass: another size
    assert (cache.calls, cache.full_calls) == (3, 2)


def test_fast_render_is_close_repeatable_and_recorded(engine: Engine, pixels: PixelReader) -> None:
    plain = RenderRequest("a cat", seed=5, steps=12, width=64, height=64)
    fast = dataclasses.replace(plain, fast=True)
    [before] = engine.render(plain)
    [first], [second] = engine.render(fast), engine.render(fast)
    [after] = engine.render(plain)
    assert first.png == second.png  # same seed, same picture
    assert after.png == before.png  # the cache leaves the UNet as it was
    assert first.png != before.png
    assert psnr(pixels(first.png), pixels(before.png)) >= MIN_FAST_PSNR_DB
    _prompt, _negative, params = parse_infotext(first.infotext)
    assert params["Fast"] == f"DeepCache {DEEP_CACHE_INTERVAL}" and params["Steps"] == 12
    assert "Fast" not in parse_infotext(before.infotext)[2]


def test_batched_fast_pictures_match_their_solo_renders(
    engine: Engine, pixels: PixelReader
) -> None:
    requests = [
        RenderRequest(prompt, seed=seed, steps=6, width=64, height=64, fast=True)
        for seed, prompt in enumerate(("a cat", "a dog"))
    ]
    batched = engine.render_batch(requests)
    for request, [picture] in zip(requests, batched, strict=True):
        [solo] = engine.render(request)
        assert np.abs(pixels(picture.png) - pixels(solo.png)).max() <= 2


SGM = "SGM Uniform"  # distilled on trailing timesteps


@pytest.mark.parametrize(
    ("name", "scheduler", "expected"),
    [
        ("sdxl-turbo", "EulerAncestralDiscreteScheduler", ("Turbo", 4, 1.0, "Euler a", SGM)),
        ("dreamshaper-LCM", "PNDMScheduler", ("LCM", 4, 1.5, "LCM", "Automatic")),
        ("my-model", "LCMScheduler", ("LCM", 4, 1.5, "LCM", "Automatic")),
        ("SDXL_Lightning_4step", "EulerDiscreteScheduler", ("Lightning", 4, 1.0, "Euler", SGM)),
        ("sd15", "PNDMScheduler", None),
        # A family is a word of the name or starts or ends a run of letters, never the
        # middle of one.
        ("realcmix", "PNDMScheduler", None),
        ("LCMDreamshaperV7", "PNDMScheduler", ("LCM", 4, 1.5, "LCM", "Automatic")),
        ("DreamShaperXLTurbo", "PNDMScheduler", ("Turbo", 4, 1.0, "Euler a", SGM)),
        ("sdxlturbo", "PNDMScheduler", ("Turbo", 4, 1.0, "Euler a", SGM)),
        ("turbovisionxlSuperFastXL", "PNDMScheduler", ("Turbo", 4, 1.0, "Euler a", SGM)),
        ("lcmlora-sd15", "PNDMScheduler", ("LCM", 4, 1.5, "LCM", "Automatic")),
        ("LCMs", "PNDMScheduler", ("LCM", 4, 1.5, "LCM", "Automatic")),
    ],
)
def test_few_step_models_are_told_by_name_or_scheduler(
    name: str, scheduler: str, expected: tuple[object, ...] | None
) -> None:
    preset = fast_preset(name, {"_class_name": scheduler})
    assert (None if preset is None else dataclasses.astuple(preset)) == expected


def test_a_turbo_model_renders_fast_with_its_own_recipe(tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "tiny-turbo")
    engine = Engine(tmp_path, device="cpu")
    request = RenderRequest("a cat", seed=3, steps=20, cfg_scale=7, width=64, height=64)
    [plain] = engine.render(request)
    [fast] = engine.render(dataclasses.replace(request, fast=True))
    assert parse_infotext(plain.infotext)[2]["Steps"] == 20  # never without being asked
    params = parse_infotext(fast.infotext)[2]
    assert (params["Steps"], params["CFG scale"], params["Sampler"]) == (4, 1, "Euler a")
    assert params["Fast"] == "Turbo preset"
    # The steps its device ran (the it/s metric's), not the 20 asked for.
    assert (plain.steps_run, fast.steps_run) == (20, 4)
