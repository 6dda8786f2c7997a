"""One weights file whose header holds a number no size can be (``1e999``, which Python's JSON
reads as infinity; NaN; a fraction; a string) is left out of the lists, said why, and never
fails the listing of its folder: every admission lists the checkpoints and the embeddings, and
which models take embeddings (their families, from headers and configs)."""

from __future__ import annotations

import json
import logging
import reprlib
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from safetensors import SafetensorError
from safetensors.torch import load_file

from inference import gguf_header, metadata
from inference.file_versions import PerFileVersion
from inference.gguf_header import gguf_problem
from inference.metadata import (
    checkpoint_family,
    pickle_problem,
    safetensors_header,
    safetensors_problem,
)
from inference.model_list import models_without_embeddings
from inference.registry import ModelRegistry
from tests.support.checkpoint_files import stand_in_checkpoint

# A tensor entry for two bytes of data, with one value made hostile, and what is said of it.
HOSTILE_TENSORS = {
    "offset past a float's range": (b'"shape": [2], "data_offsets": [0, 1e999]', "out of range"),
    "shape past a float's range": (b'"shape": [1e999], "data_offsets": [0, 2]', "out of range"),
    "NaN shape": (b'"shape": [NaN], "data_offsets": [0, 2]', "NaN is not a JSON number"),
    "infinite offset": (b'"shape": [2], "data_offsets": [-Infinity, 2]', "not a JSON number"),
    "fractional offset": (b'"shape": [2], "data_offsets": [0, 2.5]', "two whole numbers"),
    "one offset": (b'"shape": [2], "data_offsets": [2]', "two whole numbers"),
    "negative offset": (b'"shape": [2], "data_offsets": [-2, 2]', "two whole numbers"),
    "string shape": (b'"shape": ["2"], "data_offsets": [0, 2]', "list of whole numbers"),
    "null shape": (b'"shape": null, "data_offsets": [0, 2]', "list of whole numbers"),
    "boolean shape": (b'"shape": [true], "data_offsets": [0, 2]', "list of whole numbers"),
}


def hostile_file(path: Path, tensor: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = b'{"w": {"dtype": "U8", ' + tensor + b"}}"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0")
    return path


@pytest.mark.parametrize(("tensor", "said"), HOSTILE_TENSORS.values(), ids=list(HOSTILE_TENSORS))
def test_a_hostile_number_is_a_problem_named_and_the_file_left_out(
    tmp_path: Path, tensor: bytes, said: str
) -> None:
    models = tmp_path / "models"
    for folder in ("Stable-diffusion", "Lora", "embeddings"):
        stand_in_checkpoint(models / folder / "good.safetensors")
        evil = hostile_file(models / folder / "evil.safetensors", tensor)
    with pytest.raises(ValueError, match=said):
        safetensors_header(evil)
    problem = safetensors_problem(evil)
    assert problem is not None and "evil.safetensors" in problem and said in problem
    registry = ModelRegistry(models)
    assert registry.names() == ["good"]
    assert registry.resolve("good").name == "good"
    assert said in registry.unusable()["evil"]
    assert list(registry.network_files("lora")) == ["good"]
    assert list(registry.network_files("embedding")) == ["good"]


def test_a_read_failing_as_no_check_foresaw_leaves_that_file_out_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A reader's oversight (here the ``OverflowError`` that ``int(inf)`` raised) leaves the
    one file out, kept for its version: read once, told once, never every lookup failing."""
    loras = tmp_path / "Lora"
    stand_in_checkpoint(loras / "good.safetensors")
    evil = stand_in_checkpoint(loras / "evil.safetensors")
    reads: list[str] = []
    read = metadata._sized_header

    def overflowing(path: Path) -> tuple[int, dict[str, object]]:
        reads.append(path.name)
        if path == evil:
            raise OverflowError("cannot convert float infinity to integer")
        return read(path)

    monkeypatch.setattr(metadata, "_sized_header", overflowing)
    registry = ModelRegistry(tmp_path)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            assert list(registry.network_files("lora")) == ["good"]
    assert reads.count("evil.safetensors") == 1
    told = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(told) == 1
    assert told[0].endswith(
        "is not offered: evil.safetensors cannot be read: "
        "OverflowError('cannot convert float infinity to integer')"
    )


@pytest.mark.parametrize(
    ("problems", "check", "suffix"),
    [
        (metadata._SAFETENSORS_PROBLEMS, safetensors_problem, ".safetensors"),
        (metadata._PICKLE_PROBLEMS, pickle_problem, ".ckpt"),
        (gguf_header._GGUF_PROBLEMS, gguf_problem, ".gguf"),
    ],
    ids=["safetensors", "pickle", "gguf"],
)
def test_every_weights_check_says_an_unforeseen_failure_as_a_problem(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    problems: PerFileVersion[str | None],
    check: Callable[[Path], str | None],
    suffix: str,
) -> None:
    odd = tmp_path / f"odd{suffix}"
    odd.write_bytes(b"\0" * 64)
    reads: list[Path] = []

    def failing(path: Path, size: int) -> str | None:
        reads.append(path)
        raise IndexError("a reader's oversight")

    monkeypatch.setattr(problems, "_read", failing)
    for _ in range(2):
        assert check(odd) == f'odd{suffix} cannot be read: IndexError("a reader\'s oversight")'
    assert reads == [odd]


def test_a_unet_input_of_one_dimension_reads_as_its_family(tmp_path: Path) -> None:
    """Whole numbers, but too few of them for an input convolution: SD 1.5 by its text
    encoder, never an ``IndexError`` out of every admission's list of models."""
    tensors = (
        b'{"cond_stage_model.transformer.text_model.final_layer_norm.weight": '
        b'{"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, '
        b'"model.diffusion_model.input_blocks.0.0.weight": '
        b'{"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}'
    )
    checkpoint = tmp_path / "Stable-diffusion" / "flat.safetensors"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(struct.pack("<Q", len(tensors)) + tensors + b"\0\0")
    registry = ModelRegistry(tmp_path)
    assert checkpoint_family(registry.resolve("flat")) == "SD 1.5"
    assert models_without_embeddings(registry) == []


@pytest.mark.parametrize(
    "index",
    ['{"_class_name": "StableDiffusionXLPipeline", "text_encoder": null}', "[]"],
    ids=["null text encoder", "a list"],
)
def test_a_diffusers_folder_whose_index_reads_oddly_is_of_unknown_family(
    tmp_path: Path, index: str
) -> None:
    folder = tmp_path / "Stable-diffusion" / "odd"
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(index)
    registry = ModelRegistry(tmp_path)
    assert checkpoint_family(registry.resolve("odd")) == "unknown"
    assert models_without_embeddings(registry) == []


def tensors_file(path: Path, tensors: dict[str, object], data: int) -> Path:
    """A safetensors file of ``data`` zero bytes, its header naming ``tensors`` as given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = json.dumps(tensors).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(data))
    return path


def assert_left_out(models: Path, evil: Path, problem: str) -> None:
    """safetensors' loader refuses ``evil``: the check names why, and the lists leave it out
    (not offered to fail every job naming it)."""
    with pytest.raises(SafetensorError):
        load_file(evil)
    assert (
        safetensors_problem(evil) == f"{evil.name}'s header {problem} not a whole safetensors file"
    )
    assert list(ModelRegistry(models).network_files("lora")) == ["good"]


@pytest.mark.parametrize(
    ("shape", "problem"),
    [
        ([2**40, 2**40], ", past the 64-bit sizes safetensors and torch read"),
        ([2**32, 2**32, 0], ", past the 64-bit sizes safetensors and torch read"),
        ([2**63, 0], ", past the 64-bit sizes safetensors and torch read"),
        ([3], " of U8, which needs more than its 2 bytes of data"),
        ([1], " of U8, which needs less than its 2 bytes of data"),
    ],
    ids=["size past 64 bits", "past 64 bits before a 0", "a number past torch's", "more", "less"],
)
def test_a_shape_that_does_not_fit_its_data_is_a_problem_named_and_the_file_left_out(
    tmp_path: Path, shape: list[int], problem: str
) -> None:
    models = tmp_path / "models"
    stand_in_checkpoint(models / "Lora" / "good.safetensors")
    tensor = {"dtype": "U8", "shape": shape, "data_offsets": [0, 2]}
    evil = tensors_file(models / "Lora" / "evil.safetensors", {"w": tensor}, 2)
    assert_left_out(models, evil, f"gives tensor 'w' the shape {reprlib.repr(shape)}{problem}:")


def test_a_shape_of_many_huge_numbers_is_refused_at_once(tmp_path: Path) -> None:
    """A 2 MB header of 100,000 numbers of 63 bits: multiplied out, the product's digits grow
    at each factor (33 s here, hours at the 100 MB a header may take), on every listing of the
    LoRAs; the check stops at the first overflow."""
    models = tmp_path / "models"
    stand_in_checkpoint(models / "Lora" / "good.safetensors")
    shape = [2**63 - 1] * 100_000
    tensor = {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}
    evil = tensors_file(models / "Lora" / "evil.safetensors", {"w": tensor}, 0)
    started = time.perf_counter()
    problem = safetensors_problem(evil)
    assert time.perf_counter() - started < 1  # the header's JSON takes most of it
    assert problem == (
        f"evil.safetensors's header gives tensor 'w' the shape {reprlib.repr(shape)}, past the "
        "64-bit sizes safetensors and torch read: not a whole safetensors file"
    )
    assert list(ModelRegistry(models).network_files("lora")) == ["good"]


@pytest.mark.parametrize(
    ("offsets", "problem"),
    [
        ({"a": [0, 4], "b": [8, 12]}, "puts tensor 'b' at byte 8, not at byte 4 (where 'a' ends)"),
        ({"a": [0, 8], "b": [4, 8]}, "puts tensor 'b' at byte 4, not at byte 8 (where 'a' ends)"),
        ({"a": [4, 8]}, "puts tensor 'a' at byte 4, not at byte 0 (where the data starts)"),
    ],
    ids=["a gap", "an overlap", "not from 0"],
)
def test_data_that_do_not_run_on_from_byte_0_are_a_problem_named_and_the_file_left_out(
    tmp_path: Path, offsets: dict[str, list[int]], problem: str
) -> None:
    """Each tensor's shape fits its data, and the file ends where its last tensor does, but
    safetensors lays tensors end to end: it refuses the file, so the lists leave it out."""
    models = tmp_path / "models"
    stand_in_checkpoint(models / "Lora" / "good.safetensors")
    tensors = {
        name: {"dtype": "U8", "shape": [stop - start], "data_offsets": [start, stop]}
        for name, (start, stop) in offsets.items()
    }
    data = max(stop for _, stop in offsets.values())  # the file ends where its data does
    evil = tensors_file(models / "Lora" / "evil.safetensors", tensors, data)
    assert_left_out(
        models,
        evil,
        f"{problem}: a safetensors file's tensors run on from byte 0, with no gap or overlap;",
    )
