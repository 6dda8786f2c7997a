from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from inference.registry import HASH_CACHE_FILE, ModelRegistry
from inference.types import RenderInputError


def touch_model(path: Path, content: bytes = b"weights") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_scans_root_and_web_ui_folders(tmp_path: Path) -> None:
    touch_model(tmp_path / "a.safetensors")
    touch_model(tmp_path / "Stable-diffusion" / "b.safetensors")
    touch_model(tmp_path / "checkpoints" / "c.safetensors")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "model_index.json").write_text("{}")
    (tmp_path / "c.config").mkdir()  # a sidecar config folder is not a model
    (tmp_path / "c.config" / "model_index.json").write_text("{}")
    touch_model(tmp_path / "lora" / "style.safetensors")  # other folders are not checkpoints
    touch_model(tmp_path / "notes.txt")
    registry = ModelRegistry(tmp_path)
    assert registry.names() == ["a", "b", "c", "d"]
    assert registry.resolve(None).name == "a"
    assert registry.resolve(None, default="c").path == tmp_path / "checkpoints" / "c.safetensors"


def test_first_folder_wins_a_name_clash(tmp_path: Path) -> None:
    touch_model(tmp_path / "x.safetensors")
    touch_model(tmp_path / "Stable-diffusion" / "x.safetensors")
    assert ModelRegistry(tmp_path).resolve("x").path == tmp_path / "x.safetensors"


def test_pickle_checkpoints_need_permission(tmp_path: Path) -> None:
    touch_model(tmp_path / "old.ckpt")
    touch_model(tmp_path / "new.safetensors")
    with pytest.raises(RenderInputError, match="'old' is a pickle checkpoint"):
        ModelRegistry(tmp_path).resolve("old")
    assert ModelRegistry(tmp_path).names() == ["new"]
    allowed = ModelRegistry(tmp_path, allow_pickle=True)
    assert allowed.resolve("old").format == "pickle"


def test_short_hash_is_sha256_prefix_and_cached(tmp_path: Path) -> None:
    model = touch_model(tmp_path / "m.safetensors", b"some weights")
    registry = ModelRegistry(tmp_path)
    expected = hashlib.sha256(b"some weights").hexdigest()
    assert registry.short_hash(registry.resolve("m")) == expected[:10]
    cache = json.loads((tmp_path / HASH_CACHE_FILE).read_text())
    assert cache[str(model.resolve())]["sha256"] == expected
    # A stale entry (same size and mtime) is trusted: proof that the cache is read.
    cache[str(model.resolve())]["sha256"] = "f" * 64
    (tmp_path / HASH_CACHE_FILE).write_text(json.dumps(cache))
    assert registry.short_hash(registry.resolve("m")) == "f" * 10
    # A changed file (new mtime/size) is hashed again.
    model.write_bytes(b"other weights!")
    os.utime(model, (1, 1))
    rehashed = hashlib.sha256(b"other weights!").hexdigest()[:10]
    assert registry.short_hash(registry.resolve("m")) == rehashed


def test_diffusers_folders_hash_their_unet(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    touch_model(folder / "model_index.json", b"{}")
    touch_model(folder / "unet" / "diffusion_pytorch_model.safetensors", b"unet")
    registry = ModelRegistry(tmp_path)
    assert registry.short_hash(registry.resolve("f")) == hashlib.sha256(b"unet").hexdigest()[:10]
