from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from inference.checkpoints import CONFIGS_DIR, UNET_INPUT_CONV, detect_family
from inference.engine import Engine
from inference.ldm_export import unet_to_ldm
from inference.registry import SIDECAR_SUFFIX
from inference.tiny import write_tiny_checkpoint, write_tiny_model
from inference.types import RenderInputError, RenderRequest

PixelReader = Callable[[bytes], np.ndarray]

# Parameter counts of the published models: the shipped configs must rebuild them exactly.
PUBLISHED_SIZES = {
    "sd15": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sd15-inpainting": {"unet": 859_535_364, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sd2-v": {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840},
    "sdxl-base": {
        "unet": 2_567_463_684,
        "vae": 83_653_863,
        "text_encoder": 123_060_480,
        "text_encoder_2": 694_659_840,
    },
}
# diffusers is untyped: Any keeps mypy's strict mode quiet about its calls.
COMPONENT_CLASSES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "unet": lambda config: UNet2DConditionModel.from_config(config),  # type: ignore[no-untyped-call]
    "vae": lambda config: AutoencoderKL.from_config(config),  # type: ignore[no-untyped-call]
    "text_encoder": lambda config: CLIPTextModel(CLIPTextConfig(**config)),
    "text_encoder_2": lambda config: CLIPTextModelWithProjection(CLIPTextConfig(**config)),
}


def config_of(family: str, component: str) -> dict[str, Any]:
    path = CONFIGS_DIR / family / component / "config.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.mark.parametrize("family", list(PUBLISHED_SIZES))
def test_shipped_configs_rebuild_the_published_architectures(family: str) -> None:
    for component, expected in PUBLISHED_SIZES[family].items():
        with torch.device("meta"):  # shapes without gigabytes
            model = COMPONENT_CLASSES[component](config_of(family, component))
        assert sum(p.numel() for p in model.parameters()) == expected, component


@pytest.mark.parametrize("family", ["sd15", "sdxl-base"])
def test_ldm_names_round_trip_through_diffusers_converter(family: str) -> None:
    config = config_of(family, "unet")
    with torch.device("meta"):
        unet = COMPONENT_CLASSES["unet"](config)
    state = unet.state_dict()
    converted = convert_ldm_unet_checkpoint(  # type: ignore[no-untyped-call]
        unet_to_ldm(state, config), unet.config
    )
    assert set(converted) == set(state)


SD15_MARKER = "cond_stage_model.transformer.text_model.final_layer_norm.weight"


def fake_checkpoint(path: Path, names: list[str], in_channels: int = 4) -> Path:
    """Zeros under ``names``: a ``.safetensors`` file, or a ``.ckpt`` pickle nesting them
    under ``state_dict`` as the web UI's checkpoints do."""
    tensors = {name: torch.zeros(1) for name in names}
    tensors[UNET_INPUT_CONV] = torch.zeros(1, in_channels, 1, 1)
    if path.suffix == ".ckpt":
        torch.save({"state_dict": tensors, "global_step": 1}, path)
    else:
        save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
@pytest.mark.parametrize(
    ("marker", "in_channels", "family"),
    [
        (SD15_MARKER, 4, "sd15"),
        (SD15_MARKER, 9, "sd15-inpainting"),
        ("cond_stage_model.model.ln_final.weight", 4, "sd2-v"),
        ("conditioner.embedders.1.model.ln_final.weight", 4, "sdxl-base"),
    ],
)
def test_family_detection(
    tmp_path: Path, marker: str, in_channels: int, family: str, suffix: str
) -> None:
    checkpoint = fake_checkpoint(tmp_path / f"m{suffix}", [marker], in_channels)
    assert detect_family(checkpoint) == family


def test_unknown_checkpoints_are_explained(tmp_path: Path) -> None:
    odd = fake_checkpoint(tmp_path / "odd.safetensors", ["something.else"])
    with pytest.raises(RenderInputError, match=r"cannot tell which model family odd\.safetensors"):
        detect_family(odd)
    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.alpha": torch.zeros(1)}, str(lora))
    with pytest.raises(RenderInputError, match="not a Stable Diffusion checkpoint"):
        detect_family(lora)


@pytest.fixture(scope="module")
def checkpoint_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    folder = tmp_path_factory.mktemp("single-file")
    write_tiny_model(folder / "folder", seed=5)
    write_tiny_checkpoint(folder / "file.safetensors", seed=5)
    write_tiny_checkpoint(folder / "file-inpainting.safetensors", inpainting=True, seed=5)
    return Engine(folder, max_loaded_models=3)


def test_single_file_renders_like_the_diffusers_folder(
    checkpoint_engine: Engine, pixels: PixelReader
) -> None:
    assert checkpoint_engine.list_models() == ["file", "file-inpainting", "folder"]
    request = RenderRequest("a cat", seed=9, steps=2, width=64, height=64, sampler="Euler")
    from_file = checkpoint_engine.render(dataclasses.replace(request, model="file"))[0]
    from_folder = checkpoint_engine.render(dataclasses.replace(request, model="folder"))[0]
    assert np.array_equal(pixels(from_file.png), pixels(from_folder.png))
    assert "Model: file" in from_file.infotext
    inpainting = checkpoint_engine.render(dataclasses.replace(request, model="file-inpainting"))
    assert inpainting[0].width == 64


@dataclasses.dataclass
class WritesAMarker:
    """Unpickled, this creates ``marker``: what a malicious checkpoint would do with a shell."""

    marker: Path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


def pickle_checkpoint(safetensors: Path, ckpt: Path) -> Path:
    """The tiny ``.safetensors`` checkpoint as the web UI's ``.ckpt`` (torch.save of its LDM
    state dict under ``state_dict``), with the sidecar config its tiny sizes need."""
    torch.save({"state_dict": load_file(safetensors), "global_step": 1}, ckpt)
    sidecar = safetensors.with_name(safetensors.stem + SIDECAR_SUFFIX)
    shutil.copytree(sidecar, ckpt.with_name(ckpt.stem + SIDECAR_SUFFIX))
    return ckpt


def test_a_ckpt_renders_weights_only_where_pickles_are_allowed(
    tmp_path: Path, pixels: PixelReader
) -> None:
    write_tiny_checkpoint(tmp_path / "source" / "file.safetensors", seed=5)
    models = tmp_path / "models"
    models.mkdir()
    pickle_checkpoint(tmp_path / "source" / "file.safetensors", models / "pickled.ckpt")
    request = RenderRequest("a cat", seed=9, steps=2, width=64, height=64, sampler="Euler")
    with pytest.raises(RenderInputError, match=r"pickled\.ckpt.*EASEL_ALLOW_PICKLE=1"):
        Engine(models).render(dataclasses.replace(request, model="pickled"))
    (models / "file.safetensors").symlink_to(tmp_path / "source" / "file.safetensors")
    (models / "file.config").symlink_to(tmp_path / "source" / "file.config")
    engine = Engine(models, allow_pickle=True, max_loaded_models=2)
    from_pickle = engine.render(dataclasses.replace(request, model="pickled"))[0]
    from_file = engine.render(dataclasses.replace(request, model="file"))[0]
    assert np.array_equal(pixels(from_pickle.png), pixels(from_file.png))
    assert "Model: pickled" in from_pickle.infotext


@pytest.mark.parametrize("sidecar", [True, False], ids=["sidecar-config", "detected-family"])
def test_a_ckpt_that_would_run_code_is_refused_unrun(tmp_path: Path, sidecar: bool) -> None:
    marker = tmp_path / "code-ran"
    models = tmp_path / "models"
    models.mkdir()
    tensors = {SD15_MARKER: torch.zeros(1), UNET_INPUT_CONV: torch.zeros(1, 4, 1, 1)}
    torch.save({"state_dict": tensors, "payload": WritesAMarker(marker)}, models / "evil.ckpt")
    if sidecar:
        shutil.copytree(CONFIGS_DIR / "sd15", models / f"evil{SIDECAR_SUFFIX}")
    engine = Engine(models, allow_pickle=True)
    with pytest.raises(RenderInputError, match=r"evil\.ckpt holds more than weights.*refused"):
        engine.render(RenderRequest("a cat", steps=2, width=64, height=64, model="evil"))
    assert not marker.exists()
    torch.load(models / "evil.ckpt", weights_only=False)  # the payload is real: unrestricted,
    assert marker.exists()  # it runs
