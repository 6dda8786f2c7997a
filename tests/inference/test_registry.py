from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from inference import file_hashes
from inference.file_hashes import HASHES_FILE, MODELS_FOLDER_HASHES_FILE
from inference.registry import ModelRegistry
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


def test_a_hidden_file_is_told_once_however_often_the_folder_is_listed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Every admission lists the embeddings: the operator hears of a clash once, not per command.
    touch_model(tmp_path / "embeddings" / "a" / "style.safetensors")
    touch_model(tmp_path / "embeddings" / "b" / "style.safetensors")
    touch_model(tmp_path / "x.safetensors")
    touch_model(tmp_path / "Stable-diffusion" / "x.safetensors")
    registry = ModelRegistry(tmp_path)
    with caplog.at_level("WARNING", logger="inference.registry"):
        for _ in range(3):
            assert list(registry.network_files("embedding")) == ["style"]
            assert registry.names() == ["x"]
    hidden = [r.getMessage() for r in caplog.records if "hidden by" in r.getMessage()]
    assert len(hidden) == 2, hidden


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


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the SHA-256 computations (one list item per hash object made)."""
    made: list[int] = []
    real = hashlib.sha256

    def counted(*args: Any, **kwargs: Any) -> Any:
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(hashlib, "sha256", counted)
    return made


def test_short_hash_is_sha256_prefix_kept_in_the_data_dir(
    tmp_path: Path, hashed: list[int]
) -> None:
    models, data = tmp_path / "models", tmp_path / "data"
    model = touch_model(models / "m.safetensors", b"some weights")
    registry = ModelRegistry(models, hashes_file=data / HASHES_FILE)
    expected = hashlib.sha256(b"some weights").hexdigest()
    hashed.clear()
    assert registry.short_hash(registry.resolve("m")) == expected[:10]
    cache = json.loads((data / HASHES_FILE).read_text())
    assert cache[str(model.resolve())]["sha256"] == expected
    assert not (models / MODELS_FOLDER_HASHES_FILE).exists()  # the models folder is left alone
    # Another registry of the process (the bot's, another device's) reads it from memory.
    other = ModelRegistry(models, hashes_file=data / HASHES_FILE)
    for _ in range(3):
        assert other.short_hash(other.resolve("m")) == expected[:10]
    assert len(hashed) == 1
    # A changed file (new mtime/size) is hashed again.
    model.write_bytes(b"other weights!")
    os.utime(model, (1, 1))
    rehashed = hashlib.sha256(b"other weights!").hexdigest()[:10]
    assert registry.short_hash(registry.resolve("m")) == rehashed
    assert len(hashed) == 3  # the changed file, and this test's own expected digest


def test_a_read_only_models_folder_hashes_each_file_once(tmp_path: Path, hashed: list[int]) -> None:
    """compose mounts /models read-only: /use-settings with a hash installed nowhere looked
    through every checkpoint, each time, reading each one whole."""
    for name in ("a", "b", "c"):
        touch_model(tmp_path / f"{name}.safetensors", name.encode())
    (tmp_path / MODELS_FOLDER_HASHES_FILE).mkdir()  # not writable, as on a read-only mount
    registry = ModelRegistry(tmp_path)  # no hashes file either: memory alone
    for _ in range(3):
        for name in registry.names():
            assert registry.short_hash(registry.resolve(name)) != "0123456789"
    assert len(hashed) == 3


def test_hashes_kept_before_are_read_not_recomputed(
    tmp_path: Path, hashed: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    models, data = tmp_path / "models", tmp_path / "data"
    old, new = touch_model(models / "old.safetensors"), touch_model(models / "new.safetensors")

    def entry(file: Path, digest: str, **more: int) -> dict[str, dict[str, object]]:
        stat = file.stat()
        kept = {"mtime": stat.st_mtime, "size": stat.st_size, "sha256": digest, **more}
        return {str(file.resolve()): kept}

    # The models folder's cache of earlier versions, and the data dir's of an earlier run: a
    # digest no file has proves it is read.
    (models / MODELS_FOLDER_HASHES_FILE).write_text(json.dumps(entry(old, "a" * 64)))
    data.mkdir()
    stat = new.stat()
    kept = entry(new, "b" * 64, ino=stat.st_ino, ctime_ns=stat.st_ctime_ns)
    (data / HASHES_FILE).write_text(json.dumps(kept))
    registry = ModelRegistry(models, hashes_file=data / HASHES_FILE)
    assert registry.short_hash(registry.resolve("old")) == "a" * 10
    assert registry.short_hash(registry.resolve("new")) == "b" * 10
    assert hashed == []


def test_diffusers_folders_hash_their_unet(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    touch_model(folder / "model_index.json", b"{}")
    touch_model(folder / "unet" / "diffusion_pytorch_model.safetensors", b"unet")
    registry = ModelRegistry(tmp_path)
    assert registry.short_hash(registry.resolve("f")) == hashlib.sha256(b"unet").hexdigest()[:10]


def test_engines_built_for_the_bot_keep_model_hashes_across_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engines of the bot, `easel worker` and `easel render` (bot/app.py's factory) keep
    the hashes in the data folder: a restart does not read each checkpoint again."""
    from bot.engines import engine_factory_for
    from bot.settings import load_settings
    from inference.engine import Engine

    read: list[Path] = []
    digest = file_hashes._digest

    def reading(file: Path) -> str:
        read.append(file)
        return digest(file)

    monkeypatch.setattr(file_hashes, "_digest", reading)
    touch_model(tmp_path / "models" / "m.safetensors")
    monkeypatch.setenv("EASEL_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("EASEL_DATA_DIR", str(tmp_path / "data"))
    for _ in range(2):  # two runs: the second process starts with nothing in memory
        monkeypatch.setattr(file_hashes, "_known", {})
        engine = engine_factory_for(load_settings(None))("cpu")
        assert isinstance(engine, Engine)
        registry = engine.registry
        assert registry.short_hash(registry.resolve("m")) != "0123456789"
    assert len(read) == 1
