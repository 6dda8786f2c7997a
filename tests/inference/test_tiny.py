from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from inference.engine import Engine
from inference.tiny import load_clip_tokenizer, write_tiny_model
from inference.types import RenderRequest

UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_shipped_tokenizer_is_the_real_clip_vocabulary() -> None:
    tokenizer = load_clip_tokenizer()
    assert len(tokenizer) == 49408
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_weights_depend_only_on_seed(tmp_path: Path) -> None:
    first = write_tiny_model(tmp_path / "a", seed=3)
    again = write_tiny_model(tmp_path / "b", seed=3)
    other = write_tiny_model(tmp_path / "c", seed=4)
    assert digest(first / UNET_WEIGHTS) == digest(again / UNET_WEIGHTS)
    assert digest(first / UNET_WEIGHTS) != digest(other / UNET_WEIGHTS)
    assert not list(first.rglob("*.bin")), "weights must be safetensors only"


@pytest.mark.parametrize(
    ("family", "inpainting", "pipeline_class", "unet_channels"),
    [
        ("sdxl", False, "StableDiffusionXLPipeline", 4),
        ("sd15", True, "StableDiffusionInpaintPipeline", 9),
    ],
)
def test_families_write_the_right_pipeline(
    tmp_path: Path, family: str, inpainting: bool, pipeline_class: str, unet_channels: int
) -> None:
    model = write_tiny_model(tmp_path / "m", family=family, inpainting=inpainting)  # type: ignore[arg-type]
    assert json.loads((model / "model_index.json").read_text())["_class_name"] == pipeline_class
    unet_config = json.loads((model / "unet/config.json").read_text())
    assert unet_config["in_channels"] == unet_channels


def test_sdxl_tiny_renders_fast(tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "xl", family="sdxl")
    engine = Engine(tmp_path)
    engine.render(RenderRequest("warm up", seed=1, width=64, height=64, steps=1))
    [image] = engine.render(RenderRequest("a cat", seed=1, width=64, height=64, steps=4))
    assert (image.width, image.height) == (64, 64)
    assert "Model: xl" in image.infotext


def test_unknown_family_is_refused(tmp_path: Path) -> None:
    expected = "expected one of sd15, sdxl, sdxl-refiner, sd3, flux, flux-schnell"
    with pytest.raises(ValueError, match=expected):
        write_tiny_model(tmp_path, family="sd4")  # type: ignore[arg-type]
