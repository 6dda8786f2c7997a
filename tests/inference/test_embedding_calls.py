"""The add-ons of one pipeline call, of pictures of different members: each picture reads only
its own embeddings (also where two names tokenize alike) and is warned only about those its
own prompt names; a file removed since its folder was listed is a warning or a refusal naming
it, never an internal error; and a kept folder listing expires, as a network file system may
not move a directory's mtime."""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from PIL import Image

from inference import registry as registry_module
from inference.engine import Engine
from inference.infotext import parse_infotext
from inference.model_cache import ModelCache
from inference.model_upscale import read_spandrel_model
from inference.networks import applied_embeddings, applied_loras, load_vae
from inference.prompts import ExtraNetwork, default_tokenizer
from inference.registry import LISTING_MAX_AGE_NS, ModelRegistry
from inference.tiny import (
    TINY_TEXT_HIDDEN,
    write_tiny_embedding,
    write_tiny_model,
    write_tiny_upscaler,
    write_tiny_vae,
)
from inference.types import RenderInputError, RenderRequest
from inference.vae_files import vae_file
from tests.inference.test_embedding_listing import settle
from tests.support.checkpoint_files import stand_in_checkpoint


class _TextEncoder:
    """As much of a text encoder as ``applied_embeddings`` touches."""

    def __init__(self) -> None:
        self.table = torch.nn.Embedding(len(default_tokenizer().vocab), TINY_TEXT_HIDDEN)

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.table

    def set_input_embeddings(self, table: torch.nn.Embedding) -> None:
        self.table = table


def test_a_kept_listing_expires_where_the_directory_s_mtime_does_not_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    embeddings = tmp_path / "embeddings"
    embeddings.mkdir()
    stand_in_checkpoint(embeddings / "fuzz.safetensors")
    settle(tmp_path)
    registry = ModelRegistry(tmp_path)
    assert list(registry.network_files("embedding")) == ["fuzz"]
    listed = embeddings.stat()
    stand_in_checkpoint(embeddings / "sparkle.safetensors")
    # As an NFS client's attribute cache or a FUSE mount answers the directory's stat.
    os.utime(embeddings, ns=(listed.st_atime_ns, listed.st_mtime_ns))
    assert list(registry.network_files("embedding")) == ["fuzz"]  # kept, and not yet stale
    later = time.time_ns() + LISTING_MAX_AGE_NS
    monkeypatch.setattr(registry_module, "time", SimpleNamespace(time_ns=lambda: later))
    assert sorted(registry.network_files("embedding")) == ["fuzz", "sparkle"]


def test_an_add_on_removed_since_its_folder_was_listed_is_named_not_an_internal_error(
    tmp_path: Path,
) -> None:
    gone = tmp_path / "gone.safetensors"
    files = {"gone": gone, "kept": write_tiny_embedding(tmp_path / "kept.safetensors")}
    pipeline = SimpleNamespace(text_encoder=_TextEncoder())
    with applied_embeddings(pipeline, ["gone", "kept"], files) as (_, embeddings):
        assert embeddings.names == ("kept",)
    assert embeddings.skipped == {
        "gone": "embedding 'gone' skipped: it is no longer installed on this device"
    }
    loaded: list[str] = []
    lora_pipeline = SimpleNamespace(
        load_lora_weights=lambda path, adapter_name: loaded.append(path),
        get_list_adapters=dict,
    )
    with applied_loras(lora_pipeline, [ExtraNetwork("lora", "gone", 1.0, 1.0)], files) as loras:
        assert (loras.names, loaded) == ((), [])  # never asked of the Hub as a repository
    assert loras.warnings == ("LoRA 'gone' skipped: it is no longer installed on this device",)
    with pytest.raises(RenderInputError, match=r"^VAE gone.safetensors is no longer installed"):
        load_vae(gone, like=None)
    with pytest.raises(RenderInputError, match=r"^upscaler 'x' \(gone.safetensors\) is no longer"):
        read_spandrel_model(gone, "upscaler 'x'")  # a .pth is refused naming its file already


# Headers whose layout safetensors refuses (the data under them: 40 bytes), and what is said.
MISLAID_TENSORS = {
    "shape over too few bytes": (
        {"emb_params": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 40]}},
        "the shape [3, 4] of F32, which needs more than its 40 bytes of data",
    ),
    "odd bytes of F16": (
        {"emb_params": {"dtype": "F16", "shape": [20], "data_offsets": [0, 39]}},
        "the shape [20] of F16, which needs more than its 39 bytes of data",
    ),
    "overlapping tensors": (
        {
            "x": {"dtype": "F32", "shape": [10], "data_offsets": [0, 40]},
            "emb_params": {"dtype": "F32", "shape": [10], "data_offsets": [0, 40]},
        },
        "puts tensor 'emb_params' at byte 0, not at byte 40 (where 'x' ends)",
    ),
}


@pytest.mark.parametrize(("header", "said"), MISLAID_TENSORS.values(), ids=list(MISLAID_TENSORS))
def test_an_embedding_whose_layout_safetensors_refuses_is_skipped_naming_it(
    tmp_path: Path, header: dict[str, Any], said: str
) -> None:
    """Read into memory of Easel's own (``owned_weights.read_safetensors``), its layout is
    checked as safetensors checks it: never torch's bare error failing the call, nor
    overlapping tensors read as if whole."""
    raw = json.dumps(header).encode()
    mislaid = tmp_path / "mislaid.safetensors"
    mislaid.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(40))
    files = {"mislaid": mislaid}
    pipeline = SimpleNamespace(text_encoder=_TextEncoder())
    with applied_embeddings(pipeline, ["mislaid"], files) as (_, embeddings):
        assert embeddings.names == ()
    [why] = embeddings.warnings
    assert why.startswith("embedding 'mislaid' skipped: mislaid.safetensors's header ")
    assert said in why


def test_a_vae_or_upscaler_removed_since_its_folder_was_listed_is_refused_by_name(
    tmp_path: Path,
) -> None:
    """The VAE's channels and the kept upscaler's mtime are read before either loads."""
    vae = write_tiny_vae(tmp_path / "VAE" / "gone.safetensors")
    upscaler = write_tiny_upscaler(tmp_path / "upscalers")
    settle(tmp_path)
    registry = ModelRegistry(tmp_path)
    cache = ModelCache(registry, "cpu", lambda entry: None)
    assert list(registry.network_files("vae")) == ["gone"]
    upscaling = registry.resolve_upscaler(upscaler.stem)
    picture = Image.new("RGB", (8, 8))
    assert cache.enlarge(picture, (32, 32), upscaling, None).size == (32, 32)  # kept loaded
    for folder in (vae.parent, upscaler.parent):
        listed = folder.stat()
        for file in folder.iterdir():
            file.unlink()
        # As an NFS client's attribute cache answers the directory's stat.
        os.utime(folder, ns=(listed.st_atime_ns, listed.st_mtime_ns))
    with pytest.raises(RenderInputError, match=r"^VAE gone.safetensors is no longer installed"):
        vae_file(registry, RenderRequest("a", options={"vae": "gone"}), latent_channels=4)
    with pytest.raises(RenderInputError, match=r"^upscaler 'tiny-esrgan-4x' .* no longer"):
        cache.enlarge(picture, (32, 32), upscaling, None)


def test_names_that_tokenize_alike_each_read_their_own_vectors(tmp_path: Path) -> None:
    """The tokenizer lowercases: ``Sparkle`` and ``sparkle`` are the same token ids."""
    files = {
        "Sparkle": write_tiny_embedding(tmp_path / "Sparkle.safetensors", seed=1, vectors=1),
        "sparkle": write_tiny_embedding(tmp_path / "sparkle.safetensors", seed=2, vectors=3),
    }
    word = tuple(default_tokenizer().encode("sparkle"))
    pipeline = SimpleNamespace(text_encoder=_TextEncoder())
    with applied_embeddings(pipeline, ["Sparkle", "sparkle"], files) as (placeholders, _):
        upper = placeholders.of(["Sparkle"]).placeholders
        lower = placeholders.of(["sparkle"]).placeholders
        both = placeholders.of(["Sparkle", "sparkle"]).placeholders
    assert (len(upper[word]), len(lower[word])) == (1, 3)
    assert both == upper
    assert placeholders.shadowed(["Sparkle", "sparkle"]) == {"sparkle": "Sparkle"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD 1.5 model, an SDXL embedding (``wide``: not for it) and two embeddings whose
    names tokenize alike."""
    directory = tmp_path_factory.mktemp("models")
    write_tiny_model(directory / "tiny", seed=0)
    folder = directory / "embeddings"
    write_tiny_embedding(folder / "wide.safetensors", family="sdxl")
    write_tiny_embedding(folder / "Sparkle.safetensors", seed=1, vectors=1)
    write_tiny_embedding(folder / "sparkle.safetensors", seed=2, vectors=3)
    return directory


def _fields(image: Any) -> dict[str, Any]:
    return parse_infotext(image.infotext)[2]


def test_a_picture_is_warned_only_about_the_embeddings_its_own_prompt_names(
    models: Path,
) -> None:
    """Two members' jobs in one pipeline call: ``wide`` (another member's word) is told to
    its job only; the picture naming both ``Sparkle`` and ``sparkle`` reads and records one."""
    engine = Engine(models)
    base: dict[str, Any] = {"width": 64, "height": 64, "steps": 2}
    mine = RenderRequest("a cat sparkle", seed=1, **base)
    theirs = RenderRequest("a dog wide", seed=2, **base)
    [[my_picture], [their_picture]] = engine.render_batch([mine, theirs])
    their_warnings = _fields(their_picture)["Prompt warnings"]
    assert "embedding 'wide' skipped: made for text encoders of width" in their_warnings
    my_fields = _fields(my_picture)
    assert "wide" not in my_fields.get("Prompt warnings", "")
    assert (
        "embedding 'sparkle' skipped: its name reads as 'Sparkle'" in my_fields["Prompt warnings"]
    )
    assert my_fields["TI hashes"].startswith("Sparkle: ") and "," not in my_fields["TI hashes"]
