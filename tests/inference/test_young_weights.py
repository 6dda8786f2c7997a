"""Weights read by add-on loaders outside the model cache's own files: an IP-Adapter is read
into memory of the process's own (a copy over it as it loads is a short read naming it, never
a bus error), and a split release's text encoders, which load mapped, are settled with the
model's own file before its load reads them (``model_cache.stamped_files``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from inference import file_versions
from inference.engine import Engine
from inference.flow_tiny import write_tiny_flow_checkpoint
from inference.ip_adapter import read_adapter
from inference.owned_weights import WeightsCutShort
from inference.types import RenderFailed, RenderRequest
from tests.inference.conftest import mapped_under
from tests.inference.test_cut_short_weights import sleeping_as
from tests.inference.test_replaced_models import settled


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    path = tmp_path / "ipadapter" / "a.safetensors"
    path.parent.mkdir()
    tensors = {
        "image_proj.proj.weight": torch.randn(8, 4),
        "ip_adapter.1.to_k_ip.weight": torch.randn(4, 4),
    }
    save_file(tensors, str(path))
    return path


def test_an_ip_adapter_is_read_into_memory_of_its_own(adapter: Path) -> None:
    state = read_adapter(adapter)
    assert state["image_proj"].keys() == {"proj.weight"}
    assert state["ip_adapter"].keys() == {"1.to_k_ip.weight"}
    assert mapped_under(adapter.parent) == set()  # while its tensors are held


def test_an_ip_adapter_cut_short_as_it_loads_is_named(adapter: Path) -> None:
    os.truncate(adapter, adapter.stat().st_size - 8)
    with pytest.raises(WeightsCutShort) as cut:
        read_adapter(adapter)
    assert isinstance(cut.value, RenderFailed)  # the job fails with it, and is refunded
    assert str(cut.value).startswith(f"a.safetensors ended at byte {adapter.stat().st_size:,},")


def test_a_split_release_s_text_encoder_being_written_is_refused_before_its_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused naming the text encoder: the model's load watched it before reading anything
    (``ModelCache._unchanged_while_read``), so ``_load_part`` never mapped it."""
    write_tiny_flow_checkpoint(tmp_path / "unet" / "split.safetensors", parts_dir=tmp_path)
    settled(tmp_path)
    t5 = tmp_path / "text_encoder" / "tiny-t5xxl.safetensors"

    def copy_writes(seconds: float) -> None:  # a copy writing it in place, as it is watched
        now = time.time_ns()
        os.utime(t5, ns=(now, now))

    copy_writes(0)
    sleeping_as(monkeypatch, copy_writes)
    request = RenderRequest(prompt="a cat", model="split", width=64, height=64, steps=1, seed=1)
    with pytest.raises(RenderFailed) as refused:
        Engine(tmp_path).render(request)
    assert str(refused.value).startswith(
        "model split cannot be loaded now: tiny-t5xxl.safetensors is still being written"
    )


def test_a_changed_part_of_a_loaded_model_is_named_from_the_model_s_folder(
    tmp_path: Path,
) -> None:
    """As a loaded diffusers folder's log line names its changed denoiser (only the changed
    files are checked: ``ModelCache._current``)."""
    model = tmp_path / "m"
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"w")
    assert file_versions.written_lately([weights], model) == (
        "m/unet/diffusion_pytorch_model.safetensors was written in the last 2 s (a copy under way?)"
    )  # as a load's watch names it (``being_written``), not the file alone
