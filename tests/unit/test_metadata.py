"""Cards for the lists, read from safetensors headers only (inference/metadata.py)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from inference.metadata import (
    UNET_INPUT_CONV,
    checkpoint_family,
    network_info,
    safetensors_header,
    tensor_family,
)
from inference.registry import ModelEntry


def write_header(path: Path, header: dict[str, object], body: bytes = b"") -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)
    return path


def test_trigger_words_are_the_most_frequent_tags_across_datasets(tmp_path: Path) -> None:
    tags = {"10_cat": {"red cat": 5, "hat": 1}, "5_more": {"hat": 3, "blue sky": 2, "x": 0}}
    lora = write_header(
        tmp_path / "cat.safetensors",
        {
            "__metadata__": {
                "ss_tag_frequency": json.dumps(tags),
                "ss_base_model_version": "sdxl_base_v1-0",
            }
        },
    )
    info = network_info(lora)
    assert info.trigger_words == ("red cat", "hat", "blue sky", "x")
    assert info.base_model == "SDXL"


def test_modelspec_keys_are_read(tmp_path: Path) -> None:
    lora = write_header(
        tmp_path / "spec.safetensors",
        {
            "__metadata__": {
                "modelspec.architecture": "stable-diffusion-v1/lora",
                "modelspec.trigger_phrase": "sks dog, photo",
                "ss_tag_frequency": json.dumps({"d": {"ignored": 9}}),
            }
        },
    )
    info = network_info(lora)
    assert info.trigger_words == ("sks dog", "photo")
    assert info.base_model == "SD 1.5"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x01",
        struct.pack("<Q", 10**12) + b"{}",
        struct.pack("<Q", 50) + b"{}",
        b"\x02" * 8 + b"[]",
    ],
)
def test_a_broken_file_reads_as_unknown(tmp_path: Path, content: bytes) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(content)
    with pytest.raises(ValueError):
        safetensors_header(broken)
    info = network_info(broken)
    assert (info.base_model, info.trigger_words) == ("unknown", ())


def test_a_checkpoints_family_comes_from_its_tensor_names(tmp_path: Path) -> None:
    xl = write_header(
        tmp_path / "xl.safetensors",
        {
            "conditioner.embedders.1.model.ln_final.weight": {
                "dtype": "F16",
                "shape": [1],
                "data_offsets": [0, 2],
            }
        },
        b"\0\0",
    )
    inpaint = write_header(
        tmp_path / "inpaint.safetensors",
        {
            "cond_stage_model.transformer.text_model.final_layer_norm.weight": {
                "dtype": "F16",
                "shape": [1],
                "data_offsets": [0, 2],
            },
            UNET_INPUT_CONV: {"dtype": "F16", "shape": [320, 9, 3, 3], "data_offsets": [2, 2]},
        },
        b"\0\0",
    )
    assert checkpoint_family(ModelEntry("xl", xl, "safetensors")) == "SDXL"
    assert checkpoint_family(ModelEntry("inpaint", inpaint, "safetensors")) == "SD 1.5 inpainting"
    # A pickle is never opened for a list.
    pickle = tmp_path / "old.ckpt"
    pickle.write_bytes(b"not read")
    assert checkpoint_family(ModelEntry("old", pickle, "pickle")) == "unknown"


def test_the_family_rules_go_by_the_tensors_the_list_by_the_metadata_too(tmp_path: Path) -> None:
    """A merge's stale metadata names another base model: a list shows what it says, the
    family rules (``inference.family_rules``) go by the tensors the engine loads it by."""
    marker = {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}
    xl = write_header(
        tmp_path / "merge.safetensors",
        {
            "conditioner.embedders.1.model.ln_final.weight": marker,
            "__metadata__": {"ss_base_model_version": "sd_v1"},
        },
        b"\0\0",
    )
    said = {"x": marker, "__metadata__": {"ss_base_model_version": "sdxl"}}
    bare = ModelEntry(
        "bare", write_header(tmp_path / "bare.safetensors", said, b"\0\0"), "safetensors"
    )
    entry = ModelEntry("merge", xl, "safetensors")
    assert (checkpoint_family(entry), tensor_family(entry)) == ("SD 1.5", "SDXL")
    # Only the metadata speaks: the rules leave it to the engine.
    assert (checkpoint_family(bare), tensor_family(bare)) == ("SDXL", "unknown")
