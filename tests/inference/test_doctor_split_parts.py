"""``easel doctor`` counts a split release as the loader reads it: a transformer alone in
``models/unet/`` (``.safetensors`` or GGUF) with the T5, CLIP and VAE files its loading picks
from ``models/text_encoder/`` and ``models/vae/``; a part it cannot find is the loader's one
sentence, before anything loads."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from bot.cli.doctor import diagnose
from bot.settings import load_settings
from inference.checkpoints import split_part_files
from inference.flow_tiny import write_tiny_flow_checkpoint
from inference.memory import model_memory
from inference.registry import ModelRegistry
from tests.inference.test_flow_gguf import write_gguf_transformer

PARTS = {
    "text_encoder": ("CLIP-L", "text_encoder/tiny-clip_l.safetensors"),
    "text_encoder_2": ("CLIP-G", "text_encoder/tiny-clip_g.safetensors"),
    "text_encoder_3": ("T5", "text_encoder/tiny-t5xxl.safetensors"),
    "vae": ("VAE", "vae/tiny-sd3-ae.safetensors"),
}


def stored_bytes(path: Path) -> int:
    """A .safetensors file's tensor bytes: its size less its header."""
    (header,) = struct.unpack("<Q", path.read_bytes()[:8])
    return path.stat().st_size - 8 - header


def doctor_checks(models: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    monkeypatch.setenv("EASEL_MODELS_DIR", str(models))
    monkeypatch.setenv("EASEL_DEVICES", "cpu")
    return {c.name: c for c in diagnose(load_settings(None))}


def test_a_split_transformer_counts_with_the_parts_the_loader_picks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tiny_flow_checkpoint(tmp_path / "unet" / "split.safetensors", parts_dir=tmp_path)
    write_gguf_transformer(tmp_path, "split-q8")
    entries = ModelRegistry(tmp_path).scan()
    checks = doctor_checks(tmp_path, monkeypatch)
    for name in ("split", "split-q8"):
        parts = split_part_files(entries[name])
        assert parts == {c: (part, tmp_path / file) for c, (part, file) in PARTS.items()}
        memory = model_memory(entries[name], 4, False, parts)
        assert [c.name for c in memory.components] == sorted(["transformer", *PARTS])
        # Each part's figures are its whole file's tensors.
        by_name = {c.name: c.stored_bytes for c in memory.components}
        assert all(by_name[c] == stored_bytes(tmp_path / f) for c, (_, f) in PARTS.items())
        check = checks[f"memory {name}"]
        assert check.ok and all(f"{c} " in check.detail for c in ["transformer", *PARTS])
    # Under EASEL_QUANTIZE the T5 file is quantized as a single file's T5 is.
    plain = model_memory(entries["split"], 4, False, split_part_files(entries["split"]))
    int8 = model_memory(entries["split"], 4, True, split_part_files(entries["split"]))
    run = {c.name: c.run_bytes for c in plain.components}
    assert {c.name for c in int8.components if c.run_bytes < run[c.name]} == {
        "transformer",
        "text_encoder_3",
    }


def test_a_missing_part_is_the_loader_s_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tiny_flow_checkpoint(tmp_path / "unet" / "split.safetensors", parts_dir=tmp_path)
    (tmp_path / "vae" / "tiny-sd3-ae.safetensors").unlink()
    check = doctor_checks(tmp_path, monkeypatch)["memory split"]
    assert not check.ok
    assert check.detail == (
        f"split.safetensors holds no VAE and no VAE file that fits it is in {tmp_path / 'vae'}/: "
        "put one there, or use an all-in-one file or a diffusers folder"
    )
