"""A model upscaler whose output for one picture of a hires batch is blank (not-a-number)
fails that picture's request alone, with the upscaler's words; its partners go through the
hires pass and are delivered, the batch rendered once. When it blanks every picture, no
hires step runs on the grey stand-ins. For the SD families' pass and the flow families'."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import diffusers
import pytest
import torch

from inference import model_cache
from inference.engine import Engine
from inference.infotext import parse_infotext
from inference.model_upscale import ModelUpscaler, load_upscaler
from inference.tiny import write_tiny_model, write_tiny_upscaler
from inference.types import PartlyRendered, RenderRequest
from tests.inference.conftest import TINY

X4 = "tiny-esrgan-4x"
HIRES = {"hires_scale": 2, "hires_steps": 1, "hires_denoising": 0.5, "hires_upscaler": X4}
SEEDS = (5, 6, 7)
BLANK = (
    f"upscaler '{X4}' ({X4}.safetensors) gave not-a-number or infinite values, a blank "
    "picture: its file may be broken; try another upscaler, or ask an admin to check it"
)
# Each model with its denoiser's class: SD1.5's UNet, SD3's transformer (a flow family).
DENOISERS = {TINY: diffusers.UNet2DConditionModel, "sd3": diffusers.SD3Transformer2DModel}


@pytest.fixture(scope="module")
def models(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny SD1.5 checkpoint, a tiny SD3 and a 4x upscaler."""
    directory = tmp_path_factory.mktemp("hires-models")
    (directory / TINY).symlink_to(models_dir / TINY)
    write_tiny_model(directory / "sd3", family="sd3")
    write_tiny_upscaler(directory / "upscalers", scale=4)
    return directory


def blanking(calls: list[int], blank: Callable[[int], bool]) -> Callable[..., ModelUpscaler]:
    """``load_upscaler``, its model's output made not-a-number at each call (counted in
    ``calls``, from 1) that ``blank`` picks."""

    def load(name: str, path: Path, device: str) -> ModelUpscaler:
        upscaler = load_upscaler(name, path, device)
        descriptor = upscaler.descriptor

        class Blanking:
            def __getattr__(self, attribute: str) -> Any:
                return getattr(descriptor, attribute)

            def __call__(self, piece: torch.Tensor) -> torch.Tensor:
                calls.append(1)
                output = descriptor(piece)
                return output * torch.nan if blank(len(calls)) else output

        upscaler.descriptor = Blanking()  # type: ignore[assignment]
        return upscaler

    return load


def hires_batch(model: str) -> list[RenderRequest]:
    return [
        RenderRequest("a cat", model=model, seed=seed, steps=2, width=64, height=64, options=HIRES)
        for seed in SEEDS
    ]


@pytest.mark.parametrize("model", DENOISERS)
def test_an_upscaler_blanking_one_picture_of_a_hires_batch_fails_its_request_alone(
    models: Path, model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(model_cache, "load_upscaler", blanking(calls, lambda call: call == 2))
    with pytest.raises(PartlyRendered) as partly:
        Engine(models).render_batch(hires_batch(model))
    assert {index: str(error) for index, error in partly.value.failures.items()} == {1: BLANK}
    assert sorted(partly.value.rendered) == [0, 2]
    for index in (0, 2):
        [image] = partly.value.rendered[index]
        assert (image.width, image.height) == (128, 128)
        assert parse_infotext(image.infotext)[2]["Hires upscaler"] == X4
    assert len(calls) == 3  # one tile a picture, each picture once


@pytest.mark.parametrize("model", DENOISERS)
def test_an_upscaler_blanking_every_picture_runs_no_hires_step(
    models: Path, model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    denoiser = DENOISERS[model]
    sizes: list[tuple[int, ...]] = []
    forward = denoiser.forward

    def sized(self: Any, *args: Any, **kwargs: Any) -> Any:
        # The UNet is given its latents first, the transformer by name.
        latents = args[0] if args else kwargs["hidden_states"]
        sizes.append(tuple(latents.shape[-2:]))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(denoiser, "forward", sized)
    calls: list[int] = []
    monkeypatch.setattr(model_cache, "load_upscaler", blanking(calls, lambda call: True))
    with pytest.raises(PartlyRendered) as partly:
        Engine(models).render_batch(hires_batch(model))
    assert {index: str(error) for index, error in partly.value.failures.items()} == dict.fromkeys(
        range(len(SEEDS)), BLANK
    )
    assert partly.value.rendered == {}
    assert set(sizes) == {(8, 8)}  # the first pass's latents (64 / 8) alone
    assert len(calls) == len(SEEDS)
