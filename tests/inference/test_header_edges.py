"""Weights headers and configs that pass the strict checks yet are odd: a tensor of one side
where a width is read, JSON nested past Python's limit, a half file of another part. Each is
passed over (or left out, said why), never failing every request that reads it."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest

from inference.image_prompts import ImagePrompt, checkpoint_text_width, choose_adapter
from inference.metadata import safetensors_header, safetensors_problem, trigger_words
from inference.registry import ModelRegistry
from inference.split_parts import _find_part
from tests.support.checkpoint_files import stand_in_checkpoint

DEEP = 100_000  # past Python's recursion limit, as its JSON decoder recurses once per level


def weights_file(path: Path, tensors: dict[str, list[int]], *, cut: int = 0) -> Path:
    """A ``.safetensors`` file of byte tensors of these shapes, its data never written (a
    sparse file: these tests read headers only); ``cut`` bytes short of whole (a copy in
    progress)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = math.prod(shape)
        header[name] = {"dtype": "U8", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    with path.open("wb") as stream:
        stream.write(struct.pack("<Q", len(raw)) + raw)
        stream.truncate(8 + len(raw) + offset - cut)
    return path


def test_an_adapter_whose_key_has_one_side_is_passed_over(tmp_path: Path) -> None:
    """Its header is whole and strict; its width is none, not an ``IndexError`` failing every
    image prompt naming no adapter."""
    key = "ip_adapter.1.to_k_ip.weight"
    weights_file(tmp_path / "ipadapter" / "a_odd.safetensors", {key: [768]})
    weights_file(tmp_path / "ipadapter" / "b_good.safetensors", {key: [1, 768]})
    assert choose_adapter(ImagePrompt(("x.png",)), ModelRegistry(tmp_path), 768)[0] == "b_good"


def test_a_checkpoint_whose_attention_key_has_one_side_has_no_width_said(tmp_path: Path) -> None:
    weights_file(tmp_path / "m.safetensors", {"model.diffusion_model.x.attn2.to_k.weight": [768]})
    assert checkpoint_text_width(ModelRegistry(tmp_path).resolve("m")) is None


def test_a_text_encoder_whose_marker_has_one_side_is_not_the_part(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"d_model": 4096}))
    folder = tmp_path / "text_encoder"
    weights_file(folder / "a_odd.safetensors", {"shared.weight": [4096]})
    good = weights_file(folder / "b_t5.safetensors", {"shared.weight": [32128, 4096]})
    assert _find_part("T5", config, [folder]) == (good, None)


def test_a_half_file_of_another_part_is_not_blamed_for_a_missing_part(tmp_path: Path) -> None:
    """A half CLIP-L (its header reads, and holds no T5) is not the T5 being copied; a half
    file whose header does not read yet may be (its loading says so)."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"d_model": 4096}))
    folder = tmp_path / "text_encoder"
    clip = {"text_model.embeddings.position_embedding.weight": [77, 768]}
    weights_file(folder / "clip_l.safetensors", clip, cut=1)
    assert _find_part("T5", config, [folder]) is None
    cut_in_header = folder / "t5.safetensors"
    with weights_file(cut_in_header, {"shared.weight": [32128, 4096]}).open("rb") as whole:
        cut_in_header.write_bytes(whole.read(20))
    assert _find_part("T5", config, [folder]) == (
        cut_in_header,
        "t5.safetensors ends inside its header",
    )


def test_a_model_index_nested_too_deep_reads_as_one_that_is_not_json(tmp_path: Path) -> None:
    """Listed with no weights to check, as any index that does not read (its load says why):
    the listing every admission reads does not fail."""
    stand_in_checkpoint(tmp_path / "good.safetensors")
    for name, index in (("deep", "[" * DEEP + "]" * DEEP), ("not_json", "not json")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model_index.json").write_text(index)
    assert ModelRegistry(tmp_path).names() == ["deep", "good", "not_json"]


def test_a_unet_config_nested_too_deep_says_no_width(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet"]}))
    (folder / "unet" / "config.json").write_text("[" * DEEP + "]" * DEEP)
    stand_in_checkpoint(folder / "unet" / "diffusion_pytorch_model.safetensors")
    assert checkpoint_text_width(ModelRegistry(tmp_path).resolve("m")) is None


def test_a_header_nested_too_deep_does_not_read(tmp_path: Path) -> None:
    path = tmp_path / "a.safetensors"
    raw = b'{"__metadata__": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(ValueError, match="nests too deep"):
        safetensors_header(path)
    assert "nests too deep" in str(safetensors_problem(path))


def test_a_lora_s_tag_counts_nested_too_deep_give_no_trigger_words() -> None:
    """A LoRA's metadata (a string in a header that reads) is JSON of its own: ``/loras``
    lists the file with no words, not failing."""
    assert trigger_words({"ss_tag_frequency": "[" * DEEP + "]" * DEEP}) == ()


def _half(path: Path) -> Path:
    whole: Any = stand_in_checkpoint(path).read_bytes()
    path.write_bytes(whole[:-2])
    return path


def test_a_first_model_being_copied_into_an_empty_folder_is_awaited(tmp_path: Path) -> None:
    """No model installed yet: the half file would be the first once whole; its copy ending
    in place makes it the one a request naming no model gets."""
    half = _half(tmp_path / "a.safetensors")
    registry = ModelRegistry(tmp_path)
    assert registry.awaited(None)
    stand_in_checkpoint(half)  # the copy ends, in place
    assert registry.resolve(None).path == half
    assert not registry.awaited(None)


def test_a_half_file_of_the_first_installed_s_name_searched_earlier_is_awaited(
    tmp_path: Path,
) -> None:
    """The models folder is searched before ``Stable-diffusion``: its half ``a`` takes the name
    ``a`` (the first installed) once whole."""
    stand_in_checkpoint(tmp_path / "Stable-diffusion" / "a.safetensors")
    stand_in_checkpoint(tmp_path / "Stable-diffusion" / "b.safetensors")
    _half(tmp_path / "a.safetensors")
    registry = ModelRegistry(tmp_path)
    assert registry.awaited(None)
    assert registry.awaited("a")
