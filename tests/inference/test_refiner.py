"""The SDXL refiner through the real engine with tiny random models: a tiny SDXL base hands
the end of its schedule to a tiny refiner (single file with the web UI's tensor names, and a
diffusers folder), the picture changes with the refiner and its switch, stays deterministic,
and the infotext carries the web UI's refiner fields."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from PIL import Image

from bot.infotext_import import Installed, request_from_infotext_text
from inference.checkpoints import CONFIGS_DIR, detect_family
from inference.engine import Engine
from inference.infotext import parse_infotext
from inference.metadata import checkpoint_family
from inference.model_cache import ModelCache, load_pipeline
from inference.refiner import RefinerOptions
from inference.registry import ModelEntry, ModelRegistry
from inference.tiny import write_tiny_checkpoint, write_tiny_model
from inference.types import RenderInputError, RenderRequest
from inference.validation import validate_request


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``xl`` (SDXL base), ``sd`` (SD1.5), the refiners ``refiner`` (one web UI style file)
    and ``refiner-folder`` (diffusers folder, other weights)."""
    directory = tmp_path_factory.mktemp("models")
    write_tiny_model(directory / "xl", family="sdxl")
    write_tiny_model(directory / "sd", family="sd15")
    checkpoints = directory / "Stable-diffusion"
    write_tiny_checkpoint(checkpoints / "refiner.safetensors", family="sdxl-refiner", seed=3)
    write_tiny_model(directory / "refiner-folder", family="sdxl-refiner", seed=4)
    return directory


@pytest.fixture(scope="module")
def engine(models: Path) -> Engine:
    return Engine(models)


def render(engine: Engine, **changes: Any) -> tuple[np.ndarray, str]:
    fields: dict[str, Any] = {
        "prompt": "a lighthouse",
        "seed": 7,
        "steps": 6,
        "width": 64,
        "height": 64,
        "model": "xl",
        "sampler": "Euler",
    }
    options = changes.pop("options", {})
    request = RenderRequest(**{**fields, **changes}, options=options)
    (image,) = engine.render(request)
    return np.asarray(Image.open(io.BytesIO(image.png)).convert("RGB")), image.infotext


def test_the_refiner_changes_the_picture_deterministically(engine: Engine) -> None:
    alone, _ = render(engine)
    refined, infotext = render(engine, options={"refiner": "refiner"})
    again, _ = render(engine, options={"refiner": "refiner"})
    assert not np.array_equal(alone, refined)
    assert np.array_equal(refined, again)
    fields = parse_infotext(infotext)[2]
    short_hash = ModelRegistry(engine.registry.models_dir).short_hash(
        engine.registry.resolve("refiner")
    )
    assert fields["Refiner"] == f"refiner [{short_hash}]"
    assert fields["Refiner switch at"] == 0.8


def test_the_switch_and_the_refiner_model_both_matter(engine: Engine) -> None:
    late, late_text = render(engine, options={"refiner": "refiner", "refiner_switch": 0.99})
    early, early_text = render(engine, options={"refiner": "refiner", "refiner_switch": 0.5})
    folder, _ = render(engine, options={"refiner": "refiner-folder", "refiner_switch": 0.5})
    assert not np.array_equal(late, early)
    assert not np.array_equal(early, folder)
    assert parse_infotext(late_text)[2]["Refiner switch at"] == 0.99
    assert parse_infotext(early_text)[2]["Refiner switch at"] == 0.5


def test_a_refined_batch_renders_each_picture_as_alone(engine: Engine) -> None:
    options = {"refiner": "refiner", "refiner_switch": 0.5}
    alone, _ = render(engine, seed=8, options=options)
    request = RenderRequest(
        "a lighthouse",
        seed=7,
        steps=6,
        width=64,
        height=64,
        model="xl",
        sampler="Euler",
        count=2,
        options=options,
    )
    second = engine.render(request)[1]
    assert np.array_equal(alone, np.asarray(Image.open(io.BytesIO(second.png)).convert("RGB")))


def test_the_infotext_brings_the_refiner_back(engine: Engine) -> None:
    registry = engine.registry
    _, infotext = render(engine, options={"refiner": "refiner", "refiner_switch": 0.5})
    installed = Installed(
        models=registry.names(),
        model_hash=lambda name: registry.short_hash(registry.resolve(name)),
        loras=[],
        vaes=[],
        upscalers=[],
    )
    imported = request_from_infotext_text(infotext, installed)
    assert imported.request.options["refiner"] == "refiner"
    assert imported.request.options["refiner_switch"] == 0.5
    assert not imported.unhonoured
    elsewhere = Installed(["xl"], installed.model_hash, [], [], [])
    missing = request_from_infotext_text(infotext, elsewhere)
    assert "refiner" not in missing.request.options
    assert missing.unhonoured == ["refiner 'refiner' is not installed here; rendered without it"]


def test_refiners_are_told_apart_from_their_tensors_and_configs(models: Path) -> None:
    registry = ModelRegistry(models)
    assert detect_family(models / "Stable-diffusion" / "refiner.safetensors") == "sdxl-refiner"
    assert checkpoint_family(registry.resolve("refiner")) == "SDXL refiner"
    assert checkpoint_family(registry.resolve("refiner-folder")) == "SDXL refiner"
    assert checkpoint_family(registry.resolve("xl")) == "SDXL"


@pytest.mark.parametrize(
    ("model", "refiner", "refused"),
    [
        ("sd", "refiner", "sd is not an SDXL base model"),
        ("xl", "xl", "xl is not an SDXL refiner"),
        ("refiner", "refiner", "refiner is an SDXL refiner: it finishes"),
    ],
)
def test_wrong_models_are_refused_in_one_sentence(
    engine: Engine, model: str, refiner: str, refused: str
) -> None:
    with pytest.raises(RenderInputError, match=refused):
        render(engine, model=model, options={"refiner": refiner})


@pytest.mark.parametrize(
    ("changes", "refused"),
    [
        ({"options": {"refiner": "r", "refiner_switch": 1.0}}, "between 0.01 and 0.99"),
        ({"options": {"refiner": "r", "refiner_switch": 0}}, "between 0.01 and 0.99"),
        ({"options": {"refiner": "r", "refiner_switch": "late"}}, "must be a number"),
        ({"options": {"refiner_switch": 0.5}}, "needs a refiner model"),
        (
            {"mode": "img2img", "init_image": "x.png", "options": {"refiner": "r"}},
            "not img2img",
        ),
        ({"options": {"refiner": "r", "hires_scale": 2}}, "hires fix"),
        ({"options": {"refiner": "r", "stop": 50}}, "--stop"),
    ],
)
def test_bad_refiner_requests_are_refused_up_front(changes: dict[str, Any], refused: str) -> None:
    with pytest.raises(RenderInputError, match=refused):
        validate_request(RenderRequest("x", **changes))


def test_the_refiner_fields_part_the_batches() -> None:
    plain = RenderRequest("x")
    refined = RenderRequest("x", options={"refiner": "r"})
    later = RenderRequest("x", options={"refiner": "r", "refiner_switch": 0.9})
    assert len({plain.batch_key(), refined.batch_key(), later.batch_key()}) == 3
    assert RefinerOptions.from_options(refined.options) == RefinerOptions("r", 0.8)


def test_the_shipped_refiner_config_has_the_refiner_s_shapes() -> None:
    """SDXL refiner 1.0: a 2.3B-parameter UNet attending to the 1280-wide OpenCLIP states,
    its pooled output plus five 256-wide micro-conditioning embeddings as added input."""
    config = CONFIGS_DIR / "sdxl-refiner"
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config / "unet"))
    text = json.loads((config / "text_encoder_2" / "config.json").read_text())
    assert unet.config.cross_attention_dim == text["hidden_size"] == 1280
    assert unet.add_embedding.linear_1.in_features == text["projection_dim"] + 5 * 256
    assert 2.2e9 < sum(p.numel() for p in unet.parameters()) < 2.4e9
    index = json.loads((config / "model_index.json").read_text())
    assert index["text_encoder"] == [None, None] and index["requires_aesthetics_score"]


def test_base_and_refiner_stay_loaded_side_by_side(models: Path) -> None:
    registry = ModelRegistry(models)
    reads: list[str] = []

    def read(entry: ModelEntry) -> Any:
        reads.append(entry.name)
        return load_pipeline(entry, torch.float32)

    cache = ModelCache(registry, "cpu", read)  # one base model at a time
    for _ in range(2):
        base = cache.load(registry.resolve("xl"))
        refiner = cache.refiner(registry.resolve("refiner"))
    assert reads == ["xl", "refiner"]
    assert list(cache.loaded) == ["xl"] and base.is_sdxl_base and refiner.is_refiner
    cache.refiner(registry.resolve("refiner-folder"))  # another refiner replaces the last
    assert reads[-1] == "refiner-folder" and list(cache.loaded) == ["xl"]
