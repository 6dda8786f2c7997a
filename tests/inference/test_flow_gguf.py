"""An SD3/Flux transformer as a ``.gguf`` file in ``models/unet/`` (city96's releases: the
original layout, linear weights packed), read with its text encoders and VAE from the split
folders: listed with its family and quantization, rendered close to the float model, and a
GGUF that is no SD3/Flux transformer refused in one sentence.

Tiny SD3 only: diffusers' Flux converter assumes Flux's full 3072 width, so a tiny Flux cannot
be read from the original layout."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from bot.cli.doctor import diagnose
from bot.settings import load_settings
from inference.engine import Engine
from inference.flow_detect import SD3_PREFIX
from inference.flow_tiny import write_tiny_flow_checkpoint
from inference.infotext import parse_infotext
from inference.memory import model_memory
from inference.model_list import listed_model
from inference.registry import ModelRegistry
from inference.tiny import write_tiny_model
from inference.types import RenderInputError, RenderRequest
from tests.support.gguf_files import write_gguf

SIZE = {"width": 64, "height": 64}


def write_gguf_transformer(models: Path, name: str) -> Path:
    """The tiny SD3 as a split release whose transformer is a Q8_0 GGUF file in ``unet/``
    under the original names without a prefix, as city96 saves them."""
    split = write_tiny_flow_checkpoint(models / "unet" / f"{name}.safetensors", parts_dir=models)
    state = {key.removeprefix(SD3_PREFIX): tensor for key, tensor in load_file(split).items()}
    split.unlink()
    return write_gguf(state, models / "unet" / f"{name}.gguf")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("models")
    write_tiny_model(directory / "sd3", family="sd3")
    write_gguf_transformer(directory, "sd3-q8")
    return directory


def render(engine: Engine, model: str) -> tuple[np.ndarray, dict[str, object]]:
    request = RenderRequest(
        model=model, prompt="a red cat", seed=7, steps=4, sampler="Euler", **SIZE
    )
    (image,) = engine.render(request)
    pixels = np.asarray(Image.open(io.BytesIO(image.png)).convert("RGB")).astype(np.int16)
    return pixels, parse_infotext(image.infotext)[2]


def test_a_gguf_transformer_renders_close_to_its_float_model(models: Path) -> None:
    engine = Engine(models, preview_interval_s=0)
    quantized, fields = render(engine, "sd3-q8")
    float_model, _ = render(engine, "sd3")
    assert fields["Model"] == "sd3-q8" and fields["Quantization"] == "Q8_0"
    # Q8_0 rounding: a little off (mean 0.16, max 4 of 255 when written), never identical.
    assert 0 < np.abs(quantized - float_model).mean() < 1


def test_the_model_list_and_doctor_show_its_family_and_quantization(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = ModelRegistry(models).resolve("sd3-q8")
    assert entry.format == "gguf" and entry.hashed_file == entry.path
    assert listed_model(entry).label == "SD 3, GGUF Q8_0"
    monkeypatch.setenv("EASEL_MODELS_DIR", str(models))
    monkeypatch.setenv("EASEL_DEVICES", "cpu")
    check = {c.name: c for c in diagnose(load_settings(None))}["memory sd3-q8"]
    transformer = model_memory(entry, 4, False).components[0]
    assert check.ok and "denoiser GGUF Q8_0" in check.detail
    assert (
        transformer.name == "transformer" and transformer.stored_bytes < 4 * transformer.parameters
    )


def test_a_gguf_that_is_no_sd3_or_flux_transformer_is_refused(tmp_path: Path) -> None:
    (tmp_path / "unet").mkdir()
    write_gguf({"input_blocks.0.0.weight": torch.ones(4, 32)}, tmp_path / "unet" / "sd-unet.gguf")
    engine = Engine(tmp_path, preview_interval_s=0)
    with pytest.raises(RenderInputError, match=r"^sd-unet.gguf is not an SD3 or Flux transformer"):
        render(engine, "sd-unet")
