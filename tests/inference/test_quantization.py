"""Quantized denoisers: a GGUF UNet in a diffusers folder and EASEL_QUANTIZE=int8 (torchao)
render the tiny model's picture within a measured PSNR, say so in the infotext, and modes the
device or the install cannot run are refused in one sentence."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import math
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from bot.cli.doctor import diagnose
from bot.engines import engine_factory_for
from bot.infotext_import import installed_in, request_from_infotext_text
from bot.settings import SettingsError, load_settings
from inference.engine import Engine
from inference.flow_tiny import write_tiny_flow_model
from inference.infotext import parse_infotext
from inference.quantization import quantize_problem
from inference.tiny import write_tiny_model
from inference.types import RenderedImage, RenderInputError, RenderRequest
from tests.parity.reference import psnr
from tests.support.gguf_files import gguf_copy

REQUEST = RenderRequest("a red fox in the snow", seed=3, steps=6, width=64, height=64)
# Measured on the tiny random-weight SD1.5 model (64x64, float32 on the CPU), against the
# unquantized picture: Q8_0 GGUF 63.2 dB, torchao int8 62.7 dB at 6 steps (64.8 and 64.1 dB at
# 20). Random weights say little about a trained model's loss; the bound catches wrong weights.
# The tiny Flux (4 Euler steps): Q8_0 GGUF transformer 56.4 dB, int8 transformer and T5 56.3 dB.
MIN_PSNR = 45.0
FLUX_REQUEST = dataclasses.replace(REQUEST, steps=4, sampler="Euler")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("quantized")
    write_tiny_model(folder / "tiny", seed=0)
    gguf_copy(folder / "tiny", folder / "tiny-q8")
    write_tiny_flow_model(folder / "flux", "flux")
    gguf_copy(folder / "flux", folder / "flux-q8")
    return folder


@pytest.fixture(scope="module")
def reference(models: Path) -> RenderedImage:
    [picture] = Engine(models).render(dataclasses.replace(REQUEST, model="tiny"))
    return picture


@pytest.fixture(scope="module")
def flux_reference(models: Path) -> RenderedImage:
    [picture] = Engine(models).render(dataclasses.replace(FLUX_REQUEST, model="flux"))
    return picture


def linear_weight_types(model: torch.nn.Module) -> set[str]:
    return {type(m.weight).__name__ for m in model.modules() if type(m).__name__ == "Linear"}


def picture_of(rendered: RenderedImage) -> Image.Image:
    return Image.open(io.BytesIO(rendered.png))


def quantization_of(rendered: RenderedImage) -> object:
    return parse_infotext(rendered.infotext)[2].get("Quantization")


def test_gguf_unet_renders_close_to_its_float_model(models: Path, reference: RenderedImage) -> None:
    engine = Engine(models)
    [picture] = engine.render(dataclasses.replace(REQUEST, model="tiny-q8"))
    unet = engine.models.loaded["tiny-q8"].pipeline.unet
    assert any(type(module).__name__ == "GGUFLinear" for module in unet.modules())
    similarity = psnr(picture_of(reference), picture_of(picture))
    assert MIN_PSNR <= similarity < math.inf, f"{similarity:.1f} dB"
    assert quantization_of(picture) == "Q8_0"
    assert quantization_of(reference) is None
    # Use settings reads the field as a description of the picture, not a setting it dropped.
    imported = request_from_infotext_text(picture.infotext, installed_in(engine.registry, None))
    assert (imported.request.model, imported.unhonoured) == ("tiny-q8", [])
    # The GGUF file is what names the model: its hash is the web UI's hash of that file.
    assert (
        engine.registry.short_hash(engine.registry.resolve("tiny-q8"))
        == (engine.registry.sha256(models / "tiny-q8" / "unet" / "model-Q8_0.gguf")[:10])
    )


def test_int8_quantizes_the_unet_and_renders_close(
    models: Path, reference: RenderedImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EASEL_MODELS_DIR", str(models))
    monkeypatch.setenv("EASEL_QUANTIZE", "INT8")
    engine = engine_factory_for(load_settings(None))("cpu")
    assert isinstance(engine, Engine)
    [picture] = engine.render(dataclasses.replace(REQUEST, model="tiny"))
    loaded = engine.models.loaded["tiny"]
    assert linear_weight_types(loaded.pipeline.unet) == {"Int8Tensor"}
    # The cache's memory budget counts the int8 values and their scales, not float32 weights.
    plain = Engine(models).models.load(loaded.entry)
    linear = sum(
        m.weight.numel() for m in plain.pipeline.unet.modules() if type(m).__name__ == "Linear"
    )
    rows = sum(
        m.weight.shape[0] for m in plain.pipeline.unet.modules() if type(m).__name__ == "Linear"
    )
    # Each linear weight drops from 4 bytes to 1, plus a float32 scale and an int8 zero point a row.
    assert loaded.weight_bytes == plain.weight_bytes - 3 * linear + 5 * rows
    similarity = psnr(picture_of(reference), picture_of(picture))
    assert MIN_PSNR <= similarity < math.inf, f"{similarity:.1f} dB"
    assert quantization_of(picture) == "int8"


def test_gguf_flux_transformer_renders_close_to_its_float_model(
    models: Path, flux_reference: RenderedImage
) -> None:
    engine = Engine(models)
    [picture] = engine.render(dataclasses.replace(FLUX_REQUEST, model="flux-q8"))
    transformer = engine.models.loaded["flux-q8"].pipeline.transformer
    assert any(type(module).__name__ == "GGUFLinear" for module in transformer.modules())
    similarity = psnr(picture_of(flux_reference), picture_of(picture))
    assert MIN_PSNR <= similarity < math.inf, f"{similarity:.1f} dB"
    assert quantization_of(picture) == "Q8_0"


def test_int8_quantizes_flux_transformer_and_t5(
    models: Path, flux_reference: RenderedImage
) -> None:
    engine = Engine(models, quantize="int8")
    [picture] = engine.render(dataclasses.replace(FLUX_REQUEST, model="flux"))
    pipeline = engine.models.loaded["flux"].pipeline
    assert linear_weight_types(pipeline.transformer) == {"Int8Tensor"}
    assert linear_weight_types(pipeline.text_encoder_2) == {"Int8Tensor"}  # T5
    assert linear_weight_types(pipeline.text_encoder) == {"Parameter"}  # CLIP stays
    similarity = psnr(picture_of(flux_reference), picture_of(picture))
    assert MIN_PSNR <= similarity < math.inf, f"{similarity:.1f} dB"
    assert quantization_of(picture) == "int8"


def test_fp8_is_refused_on_the_cpu(models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    refusal = r"^EASEL_QUANTIZE=fp8 needs a CUDA GPU of compute capability 8.9 or later, and cpu"
    with pytest.raises(RenderInputError, match=refusal + r" .*use EASEL_QUANTIZE=int8 there$"):
        Engine(models, quantize="fp8")
    monkeypatch.setenv("EASEL_DEVICES", "cpu")
    monkeypatch.setenv("EASEL_QUANTIZE", "fp8")
    check = {c.name: c for c in diagnose(load_settings(None))}["quantize cpu"]
    assert not check.ok and re.match(refusal, check.detail)


def test_quantize_without_torchao_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "torchao" else real_find_spec(name, *args),
    )
    problem = quantize_problem("int8", "cpu")
    assert problem == (
        "EASEL_QUANTIZE=int8 needs torchao: pip install 'easel[quant]', or set EASEL_QUANTIZE=off"
    )
    assert quantize_problem("off", "cpu") is None


def test_unknown_quantize_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EASEL_QUANTIZE", "nf4")
    with pytest.raises(SettingsError, match="EASEL_QUANTIZE='nf4' is invalid"):
        load_settings(None)
