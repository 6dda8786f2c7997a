"""A diffusers model whose config gives a size that is no positive whole number: an unsized
request fails with the engine's member-facing RenderFailed naming the model (not its path),
by the rule the pricing reads the same config with (``memory.sample_size``); a list gives its
first value, as diffusers takes it."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from diffusers import AutoencoderKL
from diffusers.configuration_utils import FrozenDict

from inference.engine import Engine
from inference.memory import native_side
from inference.model_cache import LoadedModel, native_size
from inference.registry import ModelEntry
from inference.types import RenderFailed, RenderRequest


def hostile_copy(models_dir: Path, tmp_path: Path, sample_size: object) -> Path:
    """The tiny model copied as ``hostile``, its UNet config giving ``sample_size``, dated a
    minute back so the registry lists it at once (``LISTING_SETTLED_NS``)."""
    model = tmp_path / "models" / "hostile"
    shutil.copytree(models_dir / "tiny", model)
    config_file = model / "unet" / "config.json"
    config = json.loads(config_file.read_text())
    config["sample_size"] = sample_size
    config_file.write_text(json.dumps(config))
    long_ago = time.time_ns() - 60_000_000_000
    for top, _, files in os.walk(model):
        for path in [Path(top), *(Path(top) / name for name in files)]:
            os.utime(path, ns=(long_ago, long_ago))
    return model.parent


UNSIZED = RenderRequest("a cat", model="hostile", steps=2, seed=1)


@pytest.mark.parametrize("sample_size", [None, "8", [], 0, True, 8.5])
def test_a_config_without_a_whole_sample_size_fails_naming_the_model_not_its_path(
    models_dir: Path, tmp_path: Path, sample_size: object
) -> None:
    engine = Engine(hostile_copy(models_dir, tmp_path, sample_size), device="cpu")
    with pytest.raises(RenderFailed) as failed:
        engine.render(UNSIZED)
    message = str(failed.value)
    assert message.startswith("hostile's UNet config gives sample_size ")
    assert "not a positive whole number" in message
    assert str(tmp_path) not in message and "/" not in message


def test_a_sample_size_of_height_and_width_renders_at_the_first(
    models_dir: Path, tmp_path: Path
) -> None:
    engine = Engine(hostile_copy(models_dir, tmp_path, [8, 6]), device="cpu")
    [image] = engine.render(UNSIZED)
    scale = engine.models.load(engine.registry.resolve("hostile")).pipeline.vae_scale_factor
    assert (image.width, image.height) == (8 * scale, 8 * scale)


def test_a_transformer_models_vae_config_without_a_sample_size_sizes_as_the_pricing_does(
    tmp_path: Path,
) -> None:
    """diffusers fills AutoencoderKL's default (32) into the loaded config where the file
    gives none: the engine takes the pricing's default (1024) instead, not a 32-pixel render."""
    folder = tmp_path / "flow"
    (folder / "transformer").mkdir(parents=True)
    (folder / "vae").mkdir()
    (folder / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    entry = ModelEntry("flow", folder, "diffusers")
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
    pipeline = type("Pipeline", (), {"unet": None, "vae": vae})()
    model = LoadedModel(entry, pipeline, {}, "0000000000")
    assert native_size(model) == native_side(entry) == 1024


def test_a_unet_sample_size_filled_from_the_class_default_is_taken_as_absent(
    tmp_path: Path,
) -> None:
    unet = type(
        "UNet", (), {"config": FrozenDict(sample_size=None, _use_default_values=["sample_size"])}
    )()
    pipeline = type("Pipeline", (), {"unet": unet, "vae_scale_factor": 8})()
    model = LoadedModel(ModelEntry("sd", tmp_path, "diffusers"), pipeline, {}, "0000000000")
    assert native_size(model) == 1024
