"""The model lists' families (/models, its pages, /imagine's model autocomplete) are read from
headers once per version of the models' files: a second call reads none, and a model added,
replaced or removed, or a config rewritten in place, shows at once."""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from pathlib import Path
from typing import Any

import pytest
import torch
from gguf import GGMLQuantizationType
from safetensors.torch import save_file

import inference.metadata
import inference.model_list
from bot.services import Services
from inference.metadata import FAMILY_CONFIGS, FAMILY_MARKERS
from inference.model_list import (
    FlowModels,
    ListedModel,
    installed_flow_models,
    installed_models,
    models_without_embeddings,
)
from inference.registry import ModelEntry, ModelRegistry
from tests.support.gguf_files import write_gguf

MARKERS = dict(FAMILY_MARKERS)
READ_WAIT_S = 30.0  # a generous limit on a wait that ends at once
OVERLAP_S = 1.0  # how long a second listing is given to run beside a held one


def write_checkpoint(path: Path, family: str, padding: int = 1) -> None:
    """A header-only checkpoint the family markers recognise (the lists never read weights)."""
    save_file({MARKERS[family]: torch.zeros(padding)}, str(path))


@pytest.fixture
def headers_read(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The models whose headers the lists read from now on."""
    read: list[str] = []
    real = inference.model_list.listed_model

    def spy(entry: ModelEntry) -> ListedModel:
        read.append(entry.name)
        return real(entry)

    monkeypatch.setattr(inference.model_list, "listed_model", spy)
    return read


def labels(registry: ModelRegistry) -> dict[str, str]:
    return {name: model.label for name, model in installed_models(registry).items()}


def test_headers_are_read_again_only_when_the_files_change(
    tmp_path: Path, headers_read: list[str]
) -> None:
    write_checkpoint(tmp_path / "anime.safetensors", "sd15")
    registry = ModelRegistry(tmp_path)
    assert labels(registry) == {"anime": "SD 1.5"}
    assert labels(registry) == {"anime": "SD 1.5"}
    assert headers_read == ["anime"]

    write_checkpoint(tmp_path / "photo.safetensors", "sdxl-base")
    assert labels(registry) == {"anime": "SD 1.5", "photo": "SDXL"}

    # Replaced in place by another family's file: the new header is read.
    anime = tmp_path / "anime.safetensors"
    write_checkpoint(anime, "sdxl-base", padding=4)
    os.utime(anime, ns=(anime.stat().st_atime_ns, anime.stat().st_mtime_ns + 1_000_000))
    assert labels(registry)["anime"] == "SDXL"

    (tmp_path / "photo.safetensors").unlink()
    read_before = len(headers_read)
    assert labels(registry) == {"anime": "SDXL"}
    assert labels(registry) == {"anime": "SDXL"}
    assert len(headers_read) == read_before + 1  # once for the new set of files, not twice


def test_a_listing_during_a_read_waits_for_it_and_reads_no_header_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first plan after a start, arriving while ``PromptSafety.warm_up``'s read of the
    families runs, read every header again (``lru_cache`` shares no call in progress)."""
    for name in ("anime", "photo"):
        write_checkpoint(tmp_path / f"{name}.safetensors", "sd15")
    registry = ModelRegistry(tmp_path)
    read: list[str] = []
    reading, go_on = threading.Event(), threading.Event()
    real = inference.model_list.listed_model

    def held_at_the_first_header(entry: ModelEntry) -> ListedModel:
        read.append(entry.name)
        if len(read) == 1:
            reading.set()
            go_on.wait(READ_WAIT_S)
        return real(entry)

    monkeypatch.setattr(inference.model_list, "listed_model", held_at_the_first_header)
    with ThreadPoolExecutor(2) as threads:
        first = threads.submit(installed_models, registry)
        assert reading.wait(READ_WAIT_S)
        second = threads.submit(installed_models, registry)
        # Time for the second to read every header on its own, had it not waited.
        wait_for_futures([second], timeout=OVERLAP_S)
        go_on.set()
        assert first.result() == second.result()
    assert sorted(read) == ["anime", "photo"]


def rewrite_in_place(path: Path, text: str) -> None:
    """Overwrite ``path``'s bytes without replacing the file (as an editor saving in place
    does): no folder's mtime changes. The file's own mtime moves on by a second, as a later
    edit's would (two writes a few ms apart may share one clock tick)."""
    mtime_ns = path.stat().st_mtime_ns
    with path.open("r+", encoding="utf-8") as file:
        file.write(text)
        file.truncate()
    os.utime(path, ns=(mtime_ns, mtime_ns + 1_000_000_000))


def test_a_config_rewritten_in_place_is_read_again(tmp_path: Path, headers_read: list[str]) -> None:
    model = tmp_path / "painter"
    (model / "unet").mkdir(parents=True)
    index, unet = model / "model_index.json", model / "unet" / "config.json"
    index.write_text('{"_class_name": "StableDiffusionPipeline" }')
    unet.write_text('{"in_channels": 4}')
    registry = ModelRegistry(tmp_path)
    assert labels(registry) == {"painter": "SD 1.5"}
    folders = [(p.stat().st_size, p.stat().st_mtime_ns) for p in (model, model / "unet")]

    rewrite_in_place(unet, '{"in_channels": 9}')  # the same size
    assert labels(registry) == {"painter": "SD 1.5 inpainting"}
    rewrite_in_place(index, '{"_class_name": "StableDiffusion3Pipeline"}')
    assert labels(registry) == {"painter": "SD 3"}
    assert [(p.stat().st_size, p.stat().st_mtime_ns) for p in (model, model / "unet")] == folders
    assert labels(registry) == {"painter": "SD 3"}
    assert headers_read == ["painter"] * 3


def test_a_denoiser_gguf_requantized_under_its_name_is_read_again(tmp_path: Path) -> None:
    model = tmp_path / "painter"
    (model / "unet").mkdir(parents=True)
    (model / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    weights, gguf_file = {"proj.weight": torch.ones(4, 32)}, model / "unet" / "unet.gguf"
    write_gguf(weights, gguf_file, GGMLQuantizationType.Q8_0)
    registry = ModelRegistry(tmp_path)
    assert labels(registry) == {"painter": "SD 1.5, GGUF Q8_0"}
    write_gguf(weights, gguf_file, GGMLQuantizationType.Q4_0)  # the same file, rewritten
    assert labels(registry) == {"painter": "SD 1.5, GGUF Q4_0"}


def test_a_listing_reads_a_folders_configs_and_a_gguf_header_once_per_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its label and whether it takes embeddings come from one read: a folder's configs and a
    GGUF's header are not cached as a single safetensors file's header is."""
    (tmp_path / "painter").mkdir()
    (tmp_path / "painter" / "model_index.json").write_text(
        '{"_class_name": "StableDiffusionPipeline"}'
    )
    write_gguf({"proj.weight": torch.ones(4, 32)}, tmp_path / "packed.gguf")
    read: list[str] = []
    real_read_text, real_tensor_names = Path.read_text, inference.metadata.gguf_tensor_names

    def read_text(path: Path, *args: Any, **kwargs: Any) -> str:
        read.append(path.name)
        return real_read_text(path, *args, **kwargs)

    def tensor_names(path: Path) -> frozenset[str]:
        read.append(path.name)
        return real_tensor_names(path)

    monkeypatch.setattr(Path, "read_text", read_text)
    monkeypatch.setattr(inference.metadata, "gguf_tensor_names", tensor_names)
    assert labels(ModelRegistry(tmp_path)) == {"painter": "SD 1.5", "packed": "unknown, GGUF Q8_0"}
    assert sorted(read) == ["model_index.json", "packed.gguf"]


class _WithRegistry:
    """All ``Services.model_labels`` reads: the registry."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry


def test_the_model_autocomplete_reads_no_header_per_keystroke(
    tmp_path: Path, headers_read: list[str]
) -> None:
    write_checkpoint(tmp_path / "anime.safetensors", "sd15")
    write_checkpoint(tmp_path / "refiner.safetensors", "sdxl-refiner")
    services = _WithRegistry(ModelRegistry(tmp_path))
    for _ in range(3):  # three keystrokes
        assert Services.model_labels(services) == {"anime": "anime (SD 1.5)"}  # type: ignore[arg-type]
    assert sorted(headers_read) == ["anime", "refiner"]


def test_every_config_a_family_is_read_from_is_watched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``FAMILY_CONFIGS`` is the one list: a config the family is read from but missing from
    it would not be seen when rewritten in place."""
    configs = {
        "flux": {
            "model_index.json": {"_class_name": "FluxPipeline"},
            "transformer/config.json": {},
        },
        "inpaint": {
            "model_index.json": {"_class_name": "StableDiffusionPipeline"},
            "unet/config.json": {"in_channels": 9},
        },
        "v": {
            "model_index.json": {"_class_name": "StableDiffusionPipeline"},
            "unet/config.json": {"in_channels": 4},
            "scheduler/scheduler_config.json": {"prediction_type": "v_prediction"},
        },
    }
    for model, files in configs.items():
        for name, config in files.items():
            (tmp_path / model / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / model / name).write_text(json.dumps(config))
    read: set[str] = set()
    real_read_text = Path.read_text

    def spy(path: Path, *args: Any, **kwargs: Any) -> str:
        read.add(path.relative_to(tmp_path).as_posix().split("/", 1)[1])  # the model's own
        return real_read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", spy)
    assert labels(ModelRegistry(tmp_path)) == {
        "flux": "Flux schnell",
        "inpaint": "SD 1.5 inpainting",
        "v": "SD 2.x",
    }
    assert read == set(FAMILY_CONFIGS)


def test_flux_models_take_distilled_guidance_and_sd3_models_a_true_cfg(tmp_path: Path) -> None:
    """By their tensors (headers only): Flux dev's and schnell's CFG is distilled guidance, an
    SD 3.5's the true CFG an SD model's is, though all three are flow models."""
    flux = "double_blocks.0.img_attn.qkv.weight"
    dev = {flux: torch.zeros(1), "guidance_in.in_layer.weight": torch.zeros(1)}
    save_file(dev, str(tmp_path / "dev.safetensors"))
    save_file({flux: torch.zeros(1)}, str(tmp_path / "schnell.safetensors"))
    sd35 = "joint_blocks.0.x_block.attn{}.qkv.weight"
    save_file(
        {sd35.format(n): torch.zeros(1) for n in ("", "2")}, str(tmp_path / "sd35.safetensors")
    )
    write_checkpoint(tmp_path / "sd15.safetensors", "sd15")
    registry = ModelRegistry(tmp_path)
    assert installed_flow_models(registry) == FlowModels(
        ["dev", "schnell", "sd35"], ["dev", "schnell"]
    )
    assert models_without_embeddings(registry) == ["dev", "schnell", "sd35"]
