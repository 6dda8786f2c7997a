"""SD3.5 and Flux told apart from their tensor names alone (single files in the original
layouts, with and without Comfy's ``model.diffusion_model.`` prefix, and diffusers folders),
the families the model list shows, and the one sentence an SD3.5/Flux file without T5's
tokenizer gets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bot.services import Services
from inference.checkpoints import detect_family, load_single_file
from inference.flow_detect import flow_family_from_tensors
from inference.flow_tiny import tiny_t5_tokenizer
from inference.metadata import checkpoint_family
from inference.not_installed import NotInstalled
from inference.registry import ModelEntry, ModelRegistry
from inference.tiny import write_tiny_checkpoint, write_tiny_model
from inference.types import RenderInputError
from tests.support.gguf_files import write_gguf

PREFIX = "model.diffusion_model."
FLUX = ["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"]
GUIDANCE = ["guidance_in.in_layer.weight"]
SD3 = [f"{PREFIX}joint_blocks.0.x_block.attn.qkv.weight", f"{PREFIX}x_embedder.proj.weight"]
SD35_MEDIUM = [f"{PREFIX}joint_blocks.0.x_block.attn2.qkv.weight"]
SD35_LARGE = [f"{PREFIX}joint_blocks.37.x_block.attn.qkv.weight"]
# What an all-in-one file carries beside its transformer.
ENCODERS = [
    "text_encoders.clip_l.transformer.text_model.embeddings.position_embedding.weight",
    "text_encoders.t5xxl.transformer.shared.weight",
    "first_stage_model.decoder.conv_in.weight",
]


def write_file(path: Path, names: list[str], metadata: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: torch.zeros(1) for name in names}, str(path), metadata)
    return path


@pytest.mark.parametrize(
    ("names", "family", "label"),
    [
        (FLUX + GUIDANCE, "flux-dev", "Flux dev"),
        ([PREFIX + name for name in FLUX + GUIDANCE] + ENCODERS, "flux-dev", "Flux dev"),
        (FLUX, "flux-schnell", "Flux schnell"),
        ([PREFIX + name for name in FLUX], "flux-schnell", "Flux schnell"),
        (SD3 + SD35_MEDIUM + ENCODERS, "sd35-medium", "SD 3.5 Medium"),
        (SD3 + SD35_LARGE, "sd35-large", "SD 3.5 Large"),
    ],
)
def test_single_files_are_told_by_their_tensors(
    tmp_path: Path, names: list[str], family: str, label: str
) -> None:
    # A Flux LoRA-style modelspec says only "flux": the tensors decide dev or schnell.
    path = write_file(tmp_path / "m.safetensors", names, {"modelspec.architecture": "flux-1"})
    assert flow_family_from_tensors(set(names)) == family
    assert detect_family(path) == family
    assert checkpoint_family(ModelEntry("m", path, "safetensors")) == label


@pytest.mark.parametrize(
    ("names", "label"),
    [
        (FLUX + GUIDANCE, "Flux dev"),
        (FLUX, "Flux schnell"),
        ([name.removeprefix(PREFIX) for name in SD3 + SD35_LARGE], "SD 3.5 Large"),
        ([name.removeprefix(PREFIX) for name in SD3 + SD35_MEDIUM], "SD 3.5 Medium"),
        (["input_blocks.0.0.weight"], "unknown"),
    ],
)
def test_gguf_transformers_are_told_by_their_unprefixed_tensors(
    tmp_path: Path, names: list[str], label: str
) -> None:
    """city96's GGUF files keep the original names without ``model.diffusion_model.``."""
    path = write_gguf({name: torch.zeros(2, 32) for name in names}, tmp_path / "m.gguf")
    assert checkpoint_family(ModelEntry("m", path, "gguf")) == label


def test_an_sd3_of_no_shipped_size_asks_for_a_sidecar(tmp_path: Path) -> None:
    path = write_file(tmp_path / "sd3-medium.safetensors", SD3)
    with pytest.raises(RenderInputError, match=r"sd3-medium\.config/$"):
        detect_family(path)
    assert checkpoint_family(ModelEntry("sd3-medium", path, "safetensors")) == "SD 3"


def test_a_transformer_alone_needs_its_parts_beside_it(tmp_path: Path) -> None:
    tiny_t5_tokenizer().save_pretrained(tmp_path / "text_encoder" / "t5-tokenizer")
    flux = write_file(tmp_path / "unet" / "flux1-dev.safetensors", FLUX + GUIDANCE)
    with pytest.raises(NotInstalled) as refused:
        load_single_file(ModelEntry("flux1-dev", flux, "safetensors"), torch.float32)
    assert str(refused.value) == (
        "the CLIP-L flux1-dev.safetensors needs is not installed on this server: ask an admin"
    )
    assert refused.value.for_operator == (
        "flux1-dev.safetensors holds no CLIP-L and no CLIP-L file that fits it is in "
        f"{tmp_path / 'text_encoder'}/: put one there, or use an all-in-one file or a "
        "diffusers folder"
    )


def test_a_flux_file_without_t5_s_tokenizer_names_the_folder(tmp_path: Path) -> None:
    path = write_file(
        tmp_path / "Stable-diffusion" / "flux1-dev.safetensors", FLUX + GUIDANCE + ENCODERS
    )
    with pytest.raises(NotInstalled) as refused:
        load_single_file(ModelEntry("flux1-dev", path, "safetensors"), torch.float32)
    folder = tmp_path / "text_encoder" / "t5-tokenizer"
    assert str(refused.value) == (
        "the T5 tokenizer flux1-dev.safetensors needs is not installed on this server: ask an admin"
    )
    assert refused.value.for_operator == (
        "flux1-dev.safetensors needs T5's tokenizer, which Easel cannot download: put its "
        f"tokenizer.json (from any Flux or SD3 diffusers repository) in {folder}/"
    )


def test_the_model_list_labels_families_and_leaves_refiners_out(tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "my-flux", family="flux")
    write_tiny_model(tmp_path / "fast-flux", family="flux-schnell")
    write_tiny_model(tmp_path / "my-sd3", family="sd3")
    write_file(tmp_path / "Stable-diffusion" / "big.safetensors", SD3 + SD35_LARGE)
    write_tiny_checkpoint(tmp_path / "refiner.safetensors", family="sdxl-refiner")
    labels = Services.model_labels(_WithRegistry(ModelRegistry(tmp_path)))  # type: ignore[arg-type]
    assert labels == {
        "big": "big (SD 3.5 Large)",
        "fast-flux": "fast-flux (Flux schnell)",
        "my-flux": "my-flux (Flux dev)",
        "my-sd3": "my-sd3 (SD 3)",
    }


class _WithRegistry:
    """All ``Services.model_labels`` reads: the registry."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
