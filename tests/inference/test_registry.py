from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from inference import file_hashes
from inference import registry as registry_module
from inference.file_hashes import HASHES_FILE, MODELS_FOLDER_HASHES_FILE
from inference.metadata import safetensors_problem
from inference.registry import ModelRegistry
from inference.types import RenderInputError
from tests.support.checkpoint_files import stand_in_checkpoint


def touch_model(path: Path, content: bytes = b"weights") -> Path:
    if path.suffix == ".safetensors":
        return stand_in_checkpoint(path, content)
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
    """Of two checkpoints of one name neither a pickle, the one in the folder searched first
    (the models folder, then ``Stable-diffusion``); a pickle comes after any other of its
    name, in whichever folder (``test_a_pickle_never_hides_a_safetensors_file_of_its_name``)."""
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


@pytest.mark.parametrize("allow_pickle", [False, True], ids=["pickles-refused", "pickles-allowed"])
@pytest.mark.parametrize("usable", ["m.safetensors", "Stable-diffusion/m.safetensors"])
def test_a_pickle_never_hides_a_safetensors_file_of_its_name(
    tmp_path: Path, allow_pickle: bool, usable: str
) -> None:
    """``m.ckpt`` sorts before ``m.safetensors`` in its folder, and the models folder is
    searched before ``Stable-diffusion/``: the safetensors file has the name all the same."""
    touch_model(tmp_path / "m.ckpt")
    safetensors = touch_model(tmp_path / usable)
    registry = ModelRegistry(tmp_path, allow_pickle=allow_pickle)
    assert registry.names() == ["m"]
    assert registry.resolve("m").path == safetensors
    assert registry.resolve(None).path == safetensors


def test_a_checkpoint_is_awaited_where_it_would_take_a_name_once_whole(tmp_path: Path) -> None:
    """``awaited``: one still being copied that would take the name once whole (its copy may
    end in place, changing no folder); not one hidden by the file that has the name, nor a
    pickle where pickles are refused."""
    _real_safetensors(tmp_path / "Stable-diffusion" / "m.safetensors")
    _copied_halfway(_real_safetensors(tmp_path / "m.safetensors"))  # searched first
    _real_safetensors(tmp_path / "b.safetensors")
    _copied_halfway(_real_safetensors(tmp_path / "checkpoints" / "b.safetensors"))  # hidden
    touch_model(tmp_path / "p.ckpt", b"PK")  # cut short
    registry = ModelRegistry(tmp_path)
    assert [registry.awaited(name) for name in ("m", "b", "p", None)] == [True, False, False, False]
    assert ModelRegistry(tmp_path, allow_pickle=True).awaited("p")
    _copied_halfway(_real_safetensors(tmp_path / "a.safetensors"))  # first by name once whole
    assert ModelRegistry(tmp_path).awaited(None)


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
    expected = hashlib.sha256(model.read_bytes()).hexdigest()
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
    stand_in_checkpoint(model, b"other weights!")
    os.utime(model, (1, 1))
    rehashed = hashlib.sha256(model.read_bytes()).hexdigest()[:10]
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
    unet = touch_model(folder / "unet" / "diffusion_pytorch_model.safetensors", b"unet")
    registry = ModelRegistry(tmp_path)
    digest = hashlib.sha256(unet.read_bytes()).hexdigest()
    assert registry.short_hash(registry.resolve("f")) == digest[:10]


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


def _copied_halfway(path: Path) -> bytes:
    """Cut the real ``.safetensors`` file at ``path`` in half, as a copy still running leaves
    it; returns its whole bytes."""
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    return whole


def _real_safetensors(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.zeros(64)}, str(path))
    return path


def test_a_checkpoint_still_copying_is_offered_once_whole_and_told_once_meanwhile(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every job that picked a half-copied file failed with a traceback: it is left out of
    every list, the operator is told once, and the next lookup after the copy ends offers it."""
    touch_model(tmp_path / "ready.safetensors")
    copying = _real_safetensors(tmp_path / "copying.safetensors")
    whole = _copied_halfway(copying)
    registry = ModelRegistry(tmp_path)
    with caplog.at_level("INFO", logger="inference.registry"):
        for _ in range(3):
            assert registry.names() == ["ready"]
            # Refused with why, not as a model never installed.
            with pytest.raises(
                RenderInputError, match=r"model 'copying' cannot be loaded now: copying\.safe"
            ):
                registry.resolve("copying")
        told = [r for r in caplog.records if "not offered" in r.getMessage()]
        assert [r.getMessage() for r in told] == [
            f"model copying is not offered: copying.safetensors is incomplete "
            f"({len(whole) // 2} of {len(whole)} bytes): still copying?"
        ]
        assert registry.unusable() == {"copying": told[0].getMessage().split(": ", 1)[1]}
        copying.write_bytes(whole)
        assert registry.names() == ["copying", "ready"]
        assert registry.resolve("copying").path == copying
    assert "model copying: copying.safetensors is whole now" in caplog.messages
    assert registry.unusable() == {}


def test_a_file_that_is_not_safetensors_inside_is_left_out_and_named(tmp_path: Path) -> None:
    (tmp_path / "garbage.safetensors").write_bytes(bytes(range(256)) * 64)
    registry = ModelRegistry(tmp_path)
    assert registry.names() == []
    assert registry.unusable() == {
        "garbage": "garbage.safetensors announces a 506097522914230528-byte header, over the limit"
    }


# A diffusers pipeline's index: the components it loads, and the safety checker it holds.
_PIPELINE_INDEX = json.dumps(
    {
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
        "feature_extractor": [None, None],
    }
).encode()


def test_a_diffusers_folder_with_a_cut_weight_file_is_left_out(tmp_path: Path) -> None:
    folder = tmp_path / "trunc"
    touch_model(folder / "model_index.json", _PIPELINE_INDEX)
    _real_safetensors(folder / "vae" / "diffusion_pytorch_model.safetensors")
    unet = _real_safetensors(folder / "unet" / "diffusion_pytorch_model.safetensors")
    registry = ModelRegistry(tmp_path)
    assert registry.names() == ["trunc"]
    _copied_halfway(unet)
    assert registry.names() == []
    assert "unet/diffusion_pytorch_model.safetensors is incomplete" in registry.unusable()["trunc"]


def test_only_the_weights_a_pipeline_loads_are_checked(tmp_path: Path) -> None:
    """A half-written fp16 variant next to whole plain weights, or a broken file of a
    component Easel never loads (the safety checker), hides no model: diffusers loads it."""
    folder = tmp_path / "whole"
    touch_model(folder / "model_index.json", _PIPELINE_INDEX)
    _real_safetensors(folder / "vae" / "diffusion_pytorch_model.safetensors")
    unet = _real_safetensors(folder / "unet" / "diffusion_pytorch_model.safetensors")
    variant = folder / "unet" / "diffusion_pytorch_model.fp16.safetensors"
    variant.write_bytes(unet.read_bytes()[: unet.stat().st_size // 2])
    (folder / "safety_checker").mkdir()
    (folder / "safety_checker" / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    registry = ModelRegistry(tmp_path)
    assert registry.names() == ["whole"]
    assert registry.unusable() == {}


def test_a_file_longer_than_its_header_says_is_left_out(tmp_path: Path) -> None:
    """safetensors refuses it ("file not fully covered"): it is not offered, and says why."""
    longer = _real_safetensors(tmp_path / "longer.safetensors")
    size = longer.stat().st_size
    with longer.open("ab") as stream:
        stream.write(bytes(16))
    registry = ModelRegistry(tmp_path)
    assert registry.names() == []
    assert registry.unusable() == {
        "longer": f"longer.safetensors has 16 bytes past the end its header gives ({size} "
        "bytes): not a whole safetensors file"
    }


def test_a_name_offered_from_another_folder_is_not_reported_unusable(tmp_path: Path) -> None:
    """A new copy still being copied next to the whole one another folder offers: members
    have the model, so it is not among those they lack."""
    whole = _real_safetensors(tmp_path / "Stable-diffusion" / "x.safetensors")
    _real_safetensors(tmp_path / "x.safetensors")
    _copied_halfway(tmp_path / "x.safetensors")
    registry = ModelRegistry(tmp_path)
    assert registry.names() == ["x"]
    assert registry.resolve("x").path == whole
    assert registry.unusable() == {}


class _Clock:
    """Nanoseconds that move only when told (``ModelRegistry``'s ``clock``)."""

    def __init__(self) -> None:
        self.now_ns = 0

    def __call__(self) -> int:
        return self.now_ns


def _settled(folder: Path) -> None:
    """Date ``folder``'s last change a minute back, as a folder nobody touched lately."""
    long_ago = time.time_ns() - 60_000_000_000
    os.utime(folder, ns=(long_ago, long_ago))


def _header_checks_counted(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files whose headers the registry checks from now on, one entry a check."""
    checked: list[Path] = []

    def counted_problem(path: Path, stat: os.stat_result | None = None) -> str | None:
        checked.append(path)
        return safetensors_problem(path, stat)

    monkeypatch.setattr(registry_module, "safetensors_problem", counted_problem)
    return checked


def test_lookups_share_one_scan_until_a_folder_changes_or_it_is_a_second_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Admission and autocomplete look models up several times a command: a burst reads
    every checkpoint's header once a second, not at every lookup; a model dropped in or
    removed shows at once, one completed in place within ``SCAN_MAX_AGE_NS``."""
    checked = _header_checks_counted(monkeypatch)
    touch_model(tmp_path / "ready.safetensors")
    copying = _real_safetensors(tmp_path / "copying.safetensors")
    whole = _copied_halfway(copying)
    _settled(tmp_path)
    clock = _Clock()
    registry = ModelRegistry(tmp_path, clock=clock)
    for _ in range(50):
        assert registry.names() == ["ready"]
        assert registry.resolve("ready").name == "ready"
    assert len(checked) == 2  # one scan: both files once
    copying.write_bytes(whole)  # in place: no folder changes
    clock.now_ns += registry_module.SCAN_MAX_AGE_NS - 1
    assert registry.names() == ["ready"]
    clock.now_ns += 1
    assert registry.names() == ["copying", "ready"]
    assert len(checked) == 4
    touch_model(tmp_path / "new.safetensors")  # the folder changes: seen at once
    assert registry.names() == ["copying", "new", "ready"]
    (tmp_path / "ready.safetensors").unlink()
    assert registry.names() == ["copying", "new"]


def test_kept_held_names_answer_from_memory_until_a_folder_changes_or_a_copy_is_awaited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a plain /imagine's default is picked among before its acknowledgement
    (``GuildPolicy``): the kept scan's names, however old, with no walk nor header read; None
    (list them on a thread) once a checkpoint is added or removed anywhere in the folders'
    trees, or while one whose copy ends in place is awaited."""
    checked = _header_checks_counted(monkeypatch)
    touch_model(tmp_path / "ready.safetensors")
    touch_model(tmp_path / "Stable-diffusion" / "other.safetensors")
    _settled(tmp_path / "Stable-diffusion")
    _settled(tmp_path)
    clock = _Clock()
    registry = ModelRegistry(tmp_path, clock=clock)
    assert registry.kept_held_names() is None  # nothing scanned yet
    assert registry.names() == ["other", "ready"]
    clock.now_ns += 10 * registry_module.SCAN_MAX_AGE_NS
    assert registry.kept_held_names() == ["other", "ready"]
    assert len(checked) == 2  # that one scan's
    (tmp_path / "Stable-diffusion" / "other.safetensors").unlink()  # in a subfolder
    assert registry.kept_held_names() is None
    _settled(tmp_path / "Stable-diffusion")
    assert registry.names() == ["ready"]
    assert registry.kept_held_names() == ["ready"]
    _copied_halfway(_real_safetensors(tmp_path / "copying.safetensors"))
    _settled(tmp_path)
    assert registry.names() == ["ready"]
    assert registry.kept_held_names() is None  # ``copying`` may be whole by now
    # Held though it would not load now: a server default being copied is refused as such.
    assert registry.held_names() == ["copying", "ready"]


def test_a_lora_whose_name_no_tag_can_carry_is_left_out_and_the_operator_told_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``<lora:a:b:0.8>`` reads as LoRA ``a`` at weight ``b``: a file named ``a:b`` (or with a
    ``>``) could be listed to members but never applied."""
    for name in ("good", "a:b", "x>y"):
        stand_in_checkpoint(tmp_path / "Lora" / f"{name}.safetensors")
    stand_in_checkpoint(tmp_path / "embeddings" / "e:1.safetensors")  # a word, not a tag
    caplog.set_level("WARNING", logger="inference.registry")
    registry = ModelRegistry(tmp_path)
    assert list(registry.network_files("lora")) == ["good"]
    assert list(registry.network_files("embedding")) == ["e:1"]
    assert list(ModelRegistry(tmp_path).network_files("lora")) == ["good"]  # told once
    told = sorted(record.getMessage() for record in caplog.records)
    assert told == [
        f"lora {name} at {tmp_path / 'Lora' / name}.safetensors is not offered: its name holds "
        f"{stop!r}, where a <lora:name:weight> tag's name ends, so no prompt could apply it: "
        "rename the file"
        for name, stop in (("a:b", ":"), ("x>y", ">"))
    ]


def test_checkpoints_in_subfolders_are_found_as_the_web_ui_sorts_them(tmp_path: Path) -> None:
    """``Stable-diffusion/SDXL/x.safetensors`` is offered by its file's name (as a LoRA in a
    subfolder is); a diffusers folder there is one model, never searched inside; hidden and
    sidecar config folders, and the models folder's own subfolders (the add-ons'), are not
    searched; a symbolic link looping back is not followed."""
    web_ui = tmp_path / "Stable-diffusion"
    touch_model(web_ui / "top.safetensors")
    touch_model(web_ui / "SDXL" / "inner.safetensors")
    touch_model(web_ui / "SD15" / "anime" / "deep.safetensors")
    touch_model(tmp_path / "checkpoints" / "sd15" / "other.safetensors")
    pipeline = web_ui / "diffusers" / "pipe"
    (pipeline / "unet").mkdir(parents=True)
    (pipeline / "model_index.json").write_text("{}")
    touch_model(pipeline / "unet" / "diffusion_pytorch_model.safetensors")
    touch_model(web_ui / ".cache" / "hidden.safetensors")
    touch_model(web_ui / "SDXL" / "inner.config" / "text_encoder" / "model.safetensors")
    touch_model(tmp_path / "ControlNet" / "canny.safetensors")  # an add-on folder
    (web_ui / "SDXL" / "loop").symlink_to(web_ui, target_is_directory=True)
    too_deep = web_ui.joinpath(*["d"] * (registry_module.CHECKPOINT_SUBFOLDER_DEPTH + 1))
    touch_model(too_deep / "buried.safetensors")
    registry = ModelRegistry(tmp_path)
    assert registry.names() == ["deep", "inner", "other", "pipe", "top"]
    assert registry.resolve("inner").path == web_ui / "SDXL" / "inner.safetensors"
    assert registry.resolve("pipe").format == "diffusers"


def test_a_link_that_never_resolves_is_passed_over_and_every_other_file_listed(
    tmp_path: Path,
) -> None:
    """A link pointing at itself (as one the bot's user may not look through) names no file:
    the checkpoints, LoRAs and embeddings beside it are still offered."""
    touch_model(tmp_path / "Stable-diffusion" / "a.safetensors")
    stand_in_checkpoint(tmp_path / "Lora" / "style.safetensors")
    for folder in ("Stable-diffusion", "Lora"):
        (tmp_path / folder / "self").symlink_to("self")
    registry = ModelRegistry(tmp_path)
    assert registry.names() == ["a"]
    assert list(registry.network_files("lora")) == ["style"]


def test_a_top_level_checkpoint_keeps_its_name_beside_a_copy_in_a_subfolder(
    tmp_path: Path,
) -> None:
    """``Archive/juggernaut`` sorts before ``juggernaut``: the one a working install (and its
    EASEL_DEFAULT_MODEL) named still answers to the name."""
    web_ui = tmp_path / "Stable-diffusion"
    touch_model(web_ui / "juggernaut.safetensors")
    touch_model(web_ui / "Archive" / "juggernaut.safetensors", b"older")
    touch_model(web_ui / "Archive" / "Deeper" / "zeta.safetensors", b"deeper")
    touch_model(web_ui / "old" / "zeta.safetensors")
    registry = ModelRegistry(tmp_path)
    assert registry.resolve("juggernaut").path == web_ui / "juggernaut.safetensors"
    assert registry.resolve("zeta").path == web_ui / "old" / "zeta.safetensors"


def test_a_diffusers_folder_without_its_model_index_offers_none_of_its_parts(
    tmp_path: Path,
) -> None:
    """A pipeline still being copied (model_index.json not there yet), or a transformer's
    shards alone: its components' weights (``model``, ``diffusion_pytorch_model``) are no
    checkpoints."""
    pipeline = tmp_path / "Stable-diffusion" / "SDXL" / "copying"
    for component, weights in (("unet", "diffusion_pytorch_model"), ("text_encoder", "model")):
        touch_model(pipeline / component / "config.json", b"{}")
        touch_model(pipeline / component / f"{weights}.safetensors")
    shards = tmp_path / "unet" / "flux"
    touch_model(shards / "config.json", b"{}")
    touch_model(shards / "diffusion_pytorch_model-00001-of-00002.safetensors")
    touch_model(tmp_path / "unet" / "flux_dev.safetensors")
    assert ModelRegistry(tmp_path).names() == ["flux_dev"]


def test_a_linked_subfolder_is_searched_and_a_link_back_up_is_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``Stable-diffusion/SDXL -> /mnt/disk/sdxl`` (models on another disk) is searched, as the
    web UI does, and so is a LoRA folder's; a link leading back into a folder the search is in
    (two folders linking to each other) or above it is not followed."""
    disk = tmp_path / "disk"
    touch_model(disk / "sdxl" / "far.safetensors")
    stand_in_checkpoint(disk / "loras" / "far_style.safetensors")
    models = tmp_path / "models"
    web_ui = models / "Stable-diffusion"
    touch_model(web_ui / "x" / "near.safetensors")
    (web_ui / "SDXL").symlink_to(disk / "sdxl", target_is_directory=True)
    (web_ui / "x" / "to_y").symlink_to(disk / "y", target_is_directory=True)
    (disk / "y").mkdir()
    (disk / "y" / "to_x").symlink_to(web_ui / "x", target_is_directory=True)
    (disk / "sdxl" / "up").symlink_to(tmp_path, target_is_directory=True)
    (models / "Lora").mkdir()
    (models / "Lora" / "shared").symlink_to(disk / "loras", target_is_directory=True)
    (disk / "loras" / "back").symlink_to(models / "Lora", target_is_directory=True)
    caplog.set_level("WARNING", logger="inference.registry")
    registry = ModelRegistry(models)
    assert registry.names() == ["far", "near"]
    assert registry.resolve("far").path == web_ui / "SDXL" / "far.safetensors"
    assert list(registry.network_files("lora")) == ["far_style"]
    assert not caplog.records  # each file listed once: none hidden by itself further down


def test_a_checkpoint_added_to_a_subfolder_is_seen_at_once(tmp_path: Path) -> None:
    """A kept scan holds while no directory it listed changed: one in a subfolder counts."""
    sub = tmp_path / "Stable-diffusion" / "SDXL"
    touch_model(sub / "a.safetensors")
    for folder in (tmp_path, tmp_path / "Stable-diffusion", sub):
        _settled(folder)
    clock = _Clock()
    registry = ModelRegistry(tmp_path, clock=clock)
    assert registry.names() == ["a"]
    touch_model(sub / "b.safetensors")
    assert registry.names() == ["a", "b"]


def test_a_lora_or_vae_in_the_checkpoint_folders_is_left_out_and_told_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A LoRA or VAE dropped among the checkpoints would fail the first job that picked it:
    it is not offered, the operator is told once where it goes, and its header is read once
    per file version; a checkpoint, and a file the header says nothing certain of, stay."""
    (tmp_path / "Stable-diffusion").mkdir()
    lora_name = "lora_unet_down_blocks_0_proj_in.lora_down.weight"
    save_file({lora_name: torch.zeros(2, 2)}, tmp_path / "l.safetensors")
    peft_lora = {"unet.conv_in.lora_A.weight": torch.zeros(2, 2)}
    save_file(peft_lora, tmp_path / "Stable-diffusion" / "p.safetensors")
    vae = {"decoder.conv_in.weight": torch.zeros(2, 2), "encoder.conv_in.weight": torch.zeros(2)}
    save_file(vae, tmp_path / "v.safetensors")
    checkpoint = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 4, 1, 1),
        "first_stage_model.decoder.conv_in.weight": torch.zeros(2, 2),
    }
    save_file(checkpoint, tmp_path / "sd.safetensors")
    touch_model(tmp_path / "stand_in.safetensors")
    read: list[Path] = []
    real_header = registry_module.safetensors_header

    def counted_header(path: Path) -> dict[str, Any]:
        read.append(path)
        return real_header(path)

    monkeypatch.setattr(registry_module, "safetensors_header", counted_header)
    registry = ModelRegistry(tmp_path)
    with caplog.at_level("WARNING", logger="inference.registry"):
        for _ in range(3):
            assert registry.names() == ["sd", "stand_in"]
            registry._kept_scan = None  # scan again, as a second later
    assert registry.misplaced() == {
        "l": f"l.safetensors looks like a LoRA, not a checkpoint: move it to {tmp_path / 'lora'}/",
        "p": f"p.safetensors looks like a LoRA, not a checkpoint: move it to {tmp_path / 'lora'}/",
        "v": f"v.safetensors looks like a VAE, not a checkpoint: move it to {tmp_path / 'vae'}/",
    }
    assert registry.unusable() == {}
    told = [r.getMessage() for r in caplog.records if "not a checkpoint" in r.getMessage()]
    assert len(told) == 3
    assert sorted(set(read)) == sorted(read)  # each header once
    with pytest.raises(RenderInputError):
        registry.resolve("l")
