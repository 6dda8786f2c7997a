"""A weights file copied over while Easel loads it fails that job with a sentence naming it,
never the process with a bus error. Checkpoints and LoRAs load mapped (their weights are the
page cache until they reach the device): one being written is not loaded until it settles
(``file_versions.being_written``, the load's one wait), and a loaded model goes on rendering
its weights meanwhile, never waiting per job (``file_versions.written_lately``). Easel's own
small loaders (a VAE override here, the depth annotator) read their files into memory of the
process's own (``inference.owned_weights``), so a file cut short as they read it, or after,
is a short read or a changed stamp, never a bus error."""

from __future__ import annotations

import multiprocessing
import os
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

import inference.networks
import inference.owned_weights
from inference import file_versions, model_cache
from inference.engine import Engine
from inference.model_cache import ModelCache
from inference.networks import applied_loras
from inference.owned_weights import WeightsCutShort, own_weights, read_safetensors
from inference.preprocessors import depth_model
from inference.prompts import ExtraNetwork
from inference.registry import ModelRegistry
from inference.tiny import (
    build_tiny_pipeline,
    write_tiny_checkpoint,
    write_tiny_depth_annotator,
    write_tiny_vae,
)
from inference.types import RenderFailed
from tests.inference.conftest import mapped_under
from tests.inference.test_replaced_models import REQUEST, settled

# A child that hangs, or a copy that does not start, fails the test long before this.
WAIT_S = 120
# A copy's writes, as ``rsync --inplace`` makes them: the file's own bytes again, a block at a
# time (its size stays; its mtime moves).
BLOCK = 64 * 1024


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return write_tiny_checkpoint(tmp_path / "models" / "m.safetensors", seed=0)


@pytest.fixture
def pipeline_loads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Each checkpoint the engine reads from disk."""
    loads: list[Path] = []
    read = model_cache.load_single_file

    def counted(entry: Any, dtype: torch.dtype) -> Any:
        loads.append(entry.path)
        return read(entry, dtype)

    monkeypatch.setattr(model_cache, "load_single_file", counted)
    return loads


@pytest.fixture
def watches(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Each wait ``file_versions`` makes for a file to settle, counted, not slept."""
    waited: list[float] = []
    sleeping_as(monkeypatch, waited.append)
    return waited


def sleeping_as(monkeypatch: pytest.MonkeyPatch, sleep: Callable[[float], None]) -> None:
    """``file_versions``' waits run ``sleep`` instead (its clock is the real one)."""
    monkeypatch.setattr(file_versions, "time", SimpleNamespace(time_ns=time.time_ns, sleep=sleep))


class InPlaceCopy:
    """A copy writing a file over in place (``rsync --inplace``): its own bytes again, a
    block at a time, until stopped (its size stays; its mtime moves)."""

    def __init__(self, file: Path) -> None:
        self._file = file
        self._content = file.read_bytes()
        self._stop = threading.Event()
        self._written = threading.Event()
        self._writer = threading.Thread(target=self._write, daemon=True)

    def _write(self) -> None:
        with self._file.open("r+b", buffering=0) as stream:
            while not self._stop.is_set():
                for start in range(0, len(self._content), BLOCK):
                    stream.seek(start)
                    stream.write(self._content[start : start + BLOCK])
                    self._written.set()

    def start(self) -> None:
        """Start it, back once it has written (the file's stamp moved)."""
        self._writer.start()
        assert self._written.wait(WAIT_S)

    def stop(self) -> None:
        self._stop.set()
        if self._writer.is_alive():
            self._writer.join()


@pytest.fixture
def copy_over(checkpoint: Path) -> Iterator[InPlaceCopy]:
    copy = InPlaceCopy(checkpoint)
    yield copy
    copy.stop()


def test_a_checkpoint_being_written_is_not_loaded(
    checkpoint: Path,
    pipeline_loads: list[Path],
    copy_over: InPlaceCopy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The real watch (the suite's is shorter): a writer thread starved for longer than the
    # short one on a busy machine would read as settled.
    monkeypatch.setattr(file_versions, "WRITE_WATCH_S", 0.5)
    copy_over.start()
    with pytest.raises(RenderFailed) as refused:
        Engine(checkpoint.parent).render(REQUEST)
    assert str(refused.value) == (
        f"model m cannot be loaded now: m.safetensors is still being written "
        f"({checkpoint.stat().st_size:,} bytes so far): try again once the copy has finished "
        "(copy a new file beside the old one and rename it into place: Easel never sees it "
        "half written)"
    )
    assert pipeline_loads == []  # never mapped while it was written


def test_a_loaded_model_renders_its_weights_while_its_file_is_written_then_reloads(
    tmp_path: Path,
    checkpoint: Path,
    pipeline_loads: list[Path],
    copy_over: InPlaceCopy,
    watches: list[float],
) -> None:
    """Its jobs never wait for the file: written in place, then a new version moved over it
    as the README says (as the copy ends: 2 s young), the loaded weights serve; once the
    file has settled, it loads without a wait."""
    engine = Engine(checkpoint.parent)
    first = engine.render(REQUEST)[0]
    assert watches == [file_versions.WRITE_WATCH_S]  # its file was young as it loaded
    copy_over.start()
    during_the_copy = engine.render(REQUEST)[0]
    copy_over.stop()
    write_tiny_checkpoint(tmp_path / "new" / "m.safetensors", seed=5).replace(checkpoint)
    moved_in = engine.render(REQUEST)[0]
    assert pipeline_loads == [checkpoint]  # the weights loaded served both
    assert during_the_copy.png == moved_in.png == first.png
    settled(checkpoint)  # 2 s on
    after = engine.render(REQUEST)[0]
    assert pipeline_loads == [checkpoint, checkpoint]  # its new version, once settled
    assert after.png != first.png
    assert len(watches) == 1  # no job waited for the copy, nor the reload


def test_a_vae_override_renamed_into_place_serves_the_one_loaded_until_settled(
    tmp_path: Path, watches: list[float]
) -> None:
    vae = write_tiny_vae(tmp_path / "VAE" / "v.safetensors", seed=1)
    settled(vae)
    cache = ModelCache(ModelRegistry(tmp_path), "cpu", lambda entry: None)
    model: Any = SimpleNamespace(pipeline=SimpleNamespace(vae=build_tiny_pipeline().vae))
    loaded = cache.vae_for(model, vae)
    write_tiny_vae(tmp_path / "new" / "v.safetensors", seed=9).replace(vae)
    assert cache.vae_for(model, vae) is loaded  # not refused, nor waited for
    settled(vae)
    assert cache.vae_for(model, vae).sha256 != loaded.sha256
    assert watches == []


def test_only_a_file_written_in_the_last_2_s_is_watched(
    tmp_path: Path, watches: list[float]
) -> None:
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"w")
    assert file_versions.written_lately([weights]) == (
        "w.safetensors was written in the last 2 s (a copy under way?)"
    )
    assert file_versions.being_written([weights]) is None  # watched, and it did not change
    assert watches == [file_versions.WRITE_WATCH_S]
    settled(weights)
    assert file_versions.written_lately([weights]) is None
    assert file_versions.being_written([weights]) is None
    assert watches == [file_versions.WRITE_WATCH_S]  # an old file costs a stat, no wait


def test_a_lora_being_written_is_skipped_with_its_sentence_never_mapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lora = tmp_path / "l.safetensors"
    lora.write_bytes(bytes(64))

    def copy_writes(seconds: float) -> None:  # the copy goes on as it is watched
        with lora.open("ab") as stream:
            stream.write(bytes(64))

    sleeping_as(monkeypatch, copy_writes)
    mapped: list[str] = []
    pipeline = SimpleNamespace(load_lora_weights=lambda path, adapter_name: mapped.append(path))
    with applied_loras(pipeline, [ExtraNetwork("lora", "l", 1, 1)], {"l": lora}) as loras:
        assert loras.names == ()
        assert loras.skipped == {
            "l": "LoRA 'l' skipped: l.safetensors is still being written (128 bytes so far): "
            "try again once the copy has finished (copy a new file beside the old one and "
            "rename it into place: Easel never sees it half written)"
        }
    assert mapped == []


def _vae_cut_short(vae: Path, where: str, said: Connection) -> None:
    """In a child: load ``vae`` as a model's override while it is cut to half its size
    ``where`` (``during`` its read, or ``after`` it, where a mapped read's weights were not
    read yet and a bus error ended the process); send what the load raised."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a regression's bus error dumps no core
    torch.set_num_threads(1)  # the parent's thread pool is not the child's

    def cut() -> None:
        os.truncate(vae, vae.stat().st_size // 2)

    if where == "after":
        read = inference.networks.read_safetensors

        def read_then_cut(path: Path) -> dict[str, torch.Tensor]:
            state = read(path)
            cut()
            return state

        inference.networks.read_safetensors = read_then_cut
    else:
        fill = inference.owned_weights._read_into
        tensors: list[object] = []

        def cut_on_the_third(*args: Any) -> None:
            tensors.append(args)
            if len(tensors) == 3:
                cut()
            fill(*args)

        inference.owned_weights._read_into = cut_on_the_third
    cache = ModelCache(ModelRegistry(vae.parent.parent), "cpu", lambda entry: None)
    model: Any = SimpleNamespace(pipeline=SimpleNamespace(vae=build_tiny_pipeline().vae))
    try:
        cache.vae_for(model, vae)
        said.send("loaded")
    except RenderFailed as refused:
        said.send(str(refused))


@pytest.mark.parametrize("where", ["during", "after"])
def test_a_vae_cut_short_as_it_loads_is_refused_not_a_bus_error(tmp_path: Path, where: str) -> None:
    vae = write_tiny_vae(tmp_path / "VAE" / "v.safetensors")
    size = vae.stat().st_size
    # Forked: the child starts with torch and diffusers imported (a fresh interpreter takes
    # 10 s and more to import them).
    context = multiprocessing.get_context("fork")
    receiving, sending = context.Pipe(duplex=False)
    child = context.Process(target=_vae_cut_short, args=(vae, where, sending))
    child.start()
    child.join(WAIT_S)
    assert child.exitcode != -signal.SIGBUS, "the cut-short file ended the process"
    assert child.exitcode == 0
    assert receiving.recv() == (
        f"VAE v.safetensors cannot be loaded now: v.safetensors is incomplete ({size // 2} of "
        f"{size} bytes): still copying?"
    )


def test_the_depth_annotator_s_weights_are_read_never_mapped(tmp_path: Path) -> None:
    folder = write_tiny_depth_annotator(tmp_path)
    model = depth_model(folder)
    assert mapped_under(folder) == set()
    assert own_weights(model) == 0  # nothing left for it to copy out of a file


@pytest.fixture
def weights(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    tensors = {
        "matrix": torch.randn(3, 4),
        "scalar": torch.tensor(2.5, dtype=torch.bfloat16),
        "empty": torch.zeros(0, 3, dtype=torch.float16),
        "counts": torch.arange(5, dtype=torch.int64),
        "mask": torch.tensor([True, False]),
    }
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path))
    return path, tensors


def test_read_weights_are_the_files_in_memory_torch_owns(
    weights: tuple[Path, dict[str, torch.Tensor]],
) -> None:
    path, tensors = weights
    read = read_safetensors(path)
    assert read.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert read[name].dtype == tensor.dtype and torch.equal(read[name], tensor)
        # Storage torch allocated (``own_weights`` copies what it did not).
        assert read[name].untyped_storage().resizable()
    assert mapped_under(path.parent) == set()


def test_a_file_that_ends_before_its_weights_do_is_named(
    weights: tuple[Path, dict[str, torch.Tensor]],
) -> None:
    """What a short read raises (a load meets it where the cut lands before the reader has
    read the file's end), naming the file and what to do."""
    path, _ = weights
    os.truncate(path, path.stat().st_size - 8)
    with pytest.raises(WeightsCutShort) as cut:
        read_safetensors(path)
    assert str(cut.value).startswith(f"{path.name} ended at byte {path.stat().st_size:,},")
    assert str(cut.value).endswith(
        "it was cut short while it loaded (being copied over?); try again once the copy has "
        "finished"
    )
