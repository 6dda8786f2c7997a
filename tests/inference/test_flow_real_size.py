"""SD3.5 and Flux single files at their real size, without weights: files with the real
names and shapes (sparse, see ``real_size``) go through Easel's own detection and loading,
and diffusers' converters must give exactly the state dict of each model built from the
shipped config. Tiny files cannot check this for Flux: diffusers' Flux converter hard-codes
its 3072 width."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import safetensors.torch
import torch

from inference.checkpoints import flow_config, load_single_file
from inference.flow_families import load_flow_transformer
from inference.flow_tiny import tiny_t5_tokenizer
from inference.registry import ModelEntry
from tests.inference.real_size import (
    CONFIGS,
    SD35_LARGE,
    SD35_MEDIUM,
    Conversion,
    Shapes,
    converted_on_meta,
    flux_layout,
    meta_tensors,
    mmdit_layout,
    prefixed,
    text_encoder_layout,
    vae_layout,
    write_sparse_safetensors,
)

PREFIX = "model.diffusion_model."
TRANSFORMERS = {
    "flux-dev": lambda: flux_layout(guidance=True),
    "flux-schnell": lambda: flux_layout(guidance=False),
    "sd35-large": lambda: mmdit_layout(SD35_LARGE),
    "sd35-medium": lambda: mmdit_layout(SD35_MEDIUM),
}
# Each all-in-one file's text encoders (prefix, config folder) and its VAE prefix, as the
# releases and ComfyUI save them: SD3.5 with ``first_stage_model.``, Flux with ``vae.``.
ENCODERS = {
    "flux-dev": {"clip_l": "text_encoder", "t5xxl": "text_encoder_2"},
    "sd35-large": {"clip_l": "text_encoder", "clip_g": "text_encoder_2", "t5xxl": "text_encoder_3"},
}
VAE_PREFIXES = {"flux-dev": "vae.", "sd35-large": "first_stage_model."}


def _differences(conversion: Conversion) -> dict[str, object]:
    converted, expected = conversion.converted, conversion.expected
    return {
        "missing": sorted(set(expected) - set(converted)),
        "unexpected": sorted(set(converted) - set(expected)),
        "shapes": {k: (v, expected[k]) for k, v in converted.items() if expected.get(k, v) != v},
    }


def _entry(path: Path) -> ModelEntry:
    return ModelEntry(path.stem, path, "safetensors")


@pytest.mark.parametrize("prefix", ["", PREFIX], ids=["bare", "prefixed"])
@pytest.mark.parametrize("family", list(TRANSFORMERS))
def test_a_full_size_transformer_file_converts_to_the_shipped_model(
    tmp_path: Path, family: str, prefix: str
) -> None:
    path = write_sparse_safetensors(
        tmp_path / "unet" / f"{family}.safetensors", prefixed(prefix, TRANSFORMERS[family]())
    )
    config = flow_config(_entry(path))
    assert config == CONFIGS / family

    with converted_on_meta() as conversions:
        load_flow_transformer(path, config, torch.bfloat16)

    (conversion,) = conversions
    assert conversion.converted == conversion.expected, _differences(conversion)


def _write_t5_tokenizer(models: Path) -> None:
    tiny_t5_tokenizer().save_pretrained(models / "text_encoder" / "t5-tokenizer")


def _check_t5_tied(pipeline: Any) -> None:
    """The files hold T5's embedding once; Easel ties the encoder's copy to it."""
    t5 = getattr(pipeline, "text_encoder_3", None) or pipeline.text_encoder_2
    assert t5.encoder.embed_tokens is t5.shared


@pytest.mark.parametrize("family", list(ENCODERS))
def test_a_full_size_all_in_one_file_converts_every_part(tmp_path: Path, family: str) -> None:
    config = CONFIGS / family
    shapes: Shapes = prefixed(PREFIX, TRANSFORMERS[family]())
    for name, folder in ENCODERS[family].items():
        shapes |= text_encoder_layout(config / folder, f"text_encoders.{name}.transformer.")
    shapes |= vae_layout(config / "vae", VAE_PREFIXES[family])
    path = write_sparse_safetensors(tmp_path / "checkpoints" / f"{family}.safetensors", shapes)
    _write_t5_tokenizer(tmp_path)

    with converted_on_meta() as conversions:
        pipeline = load_single_file(_entry(path), torch.bfloat16)

    by_model: dict[str, list[dict[str, object]]] = {}
    for conversion in conversions:
        by_model.setdefault(conversion.model, []).append(_differences(conversion))
    assert len(conversions) == len(ENCODERS[family]) + 2  # and the transformer and the VAE
    # What Easel and diffusers mend: T5's encoder copy of the embedding is tied after
    # loading; diffusers gives any ``clip_l`` an identity projection, which Flux's CLIP-L
    # has no place for and its loader leaves out.
    tolerated = {
        "T5EncoderModel": {"missing": ["encoder.embed_tokens.weight"]},
        "CLIPTextModel": {"unexpected": ["text_projection.weight"]},
    }
    for model, found in by_model.items():
        clean = {"missing": [], "unexpected": [], "shapes": {}}
        assert found == [clean | tolerated.get(model, {})] * len(found), model
    _check_t5_tied(pipeline)


SPLIT_PARTS = {
    # Part files as their publishers name tensors: transformers' names with ``text_model.``
    # for CLIP, T5 without the encoder's copy of the embedding, the VAE in original names.
    "flux-dev": {"clip_l": "text_encoder", "t5xxl_fp16": "text_encoder_2"},
    "sd35-medium": {
        "clip_l": "text_encoder",
        "clip_g": "text_encoder_2",
        "t5xxl": "text_encoder_3",
    },
}


@pytest.mark.parametrize("family", list(SPLIT_PARTS))
def test_a_full_size_split_release_loads_its_parts(tmp_path: Path, family: str) -> None:
    config = CONFIGS / family
    for name, folder in SPLIT_PARTS[family].items():
        layout = text_encoder_layout(config / folder, "")
        write_sparse_safetensors(tmp_path / "text_encoder" / f"{name}.safetensors", layout)
    write_sparse_safetensors(tmp_path / "vae" / "ae.safetensors", vae_layout(config / "vae", ""))
    path = write_sparse_safetensors(
        tmp_path / "unet" / f"{family}.safetensors", TRANSFORMERS[family]()
    )
    _write_t5_tokenizer(tmp_path)

    # Easel builds each text encoder itself and gives it the file's tensors; on the meta
    # device, a name it does not find or a wrong shape still fails as it would for real.
    with (
        converted_on_meta() as conversions,
        torch.device("meta"),
        mock.patch.object(safetensors.torch, "load_file", meta_tensors),
    ):
        pipeline = load_single_file(_entry(path), torch.bfloat16)

    assert [conversion.model for conversion in conversions] == [
        "AutoencoderKL",
        type(pipeline.transformer).__name__,
    ]
    for conversion in conversions:
        assert conversion.converted == conversion.expected, _differences(conversion)
    _check_t5_tied(pipeline)
