"""One reader for a GGUF file's header: the model list's family and quantization, and
``easel doctor``'s memory figures, all come from one read per file version."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gguf
import pytest
import torch

from inference.gguf_header import gguf_tensors
from inference.memory import gguf_quantization, model_memory
from inference.metadata import checkpoint_family
from inference.registry import ModelEntry
from tests.support.gguf_files import write_gguf

# Flux schnell's marker tensors (inference.flow_detect), tiny; one weight packs into Q8_0.
FLUX_NAMES = ("double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight")


def write_flux_like(path: Path, rows: int) -> Path:
    state = {name: torch.randn(rows, 32) for name in FLUX_NAMES}
    state["final_layer.linear.bias"] = torch.randn(rows)
    return write_gguf(state, path)


@pytest.fixture
def header_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files whose header ``gguf.GGUFReader`` opens from now on."""
    reads: list[Path] = []
    real = gguf.GGUFReader

    def counting(path: Any, *args: Any, **kwargs: Any) -> Any:
        reads.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(gguf, "GGUFReader", counting)
    return reads


def test_family_quantization_and_memory_share_one_read_per_file_version(
    tmp_path: Path, header_reads: list[Path]
) -> None:
    path = write_flux_like(tmp_path / "flux.gguf", rows=8)
    entry = ModelEntry("flux", path, "gguf")
    assert checkpoint_family(entry) == "Flux schnell"
    assert gguf_quantization(entry) == "Q8_0"
    assert model_memory(entry, 2, False).components
    assert header_reads == [path]

    # A replaced file (new size and mtime) is read again, and what it holds now is shown.
    write_flux_like(path, rows=16)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert {t.shape for t in gguf_tensors(path) if t.name in FLUX_NAMES} == {(16, 32)}
    assert checkpoint_family(entry) == "Flux schnell"
    assert header_reads == [path, path]


def test_shapes_are_given_as_torch_has_them_and_floats_are_not_packed(tmp_path: Path) -> None:
    tensors = {t.name: t for t in gguf_tensors(write_flux_like(tmp_path / "f.gguf", rows=8))}
    weight = tensors[FLUX_NAMES[0]]
    assert weight.shape == (8, 32) and weight.packed == "Q8_0"
    # Q8_0: 34 bytes per block of 32 values.
    assert weight.stored_bytes == 8 * 34
    bias = tensors["final_layer.linear.bias"]
    assert bias.shape == (8,) and bias.packed is None and bias.stored_bytes == 8 * 4
