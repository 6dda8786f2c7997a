"""A checkpoint, refiner or VAE replaced under its name while the engine holds it loaded: the
next job renders the new weights and its infotext gives their hash (a fresh engine's picture
and text), the old weights freed before the new ones load. A copy under way is refused by the
registry's look-up (within a second: its rescan); between a job's look-up and its load, the
loaded weights serve it, and a copy begun during a load refuses the job, never read half-written.
A replacement written in the last 2 s is left to settle, the loaded weights serving meanwhile
(tests/inference/test_cut_short_weights.py): the replacements here are older (``settled``)."""

from __future__ import annotations

import dataclasses
import functools
import gc
import hashlib
import io
import logging
import os
import shutil
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from inference.engine import Engine
from inference.file_versions import PerFileVersion, file_stamp
from inference.infotext import parse_infotext
from inference.model_cache import LastLoaded
from inference.model_upscale import load_upscaler
from inference.tiny import (
    write_tiny_checkpoint,
    write_tiny_model,
    write_tiny_upscaler,
    write_tiny_vae,
)
from inference.types import RenderedImage, RenderFailed, RenderRequest
from tests.inference.conftest import mapped_under

REQUEST = RenderRequest("a lighthouse", seed=7, steps=2, width=64, height=64, model="m")
# The same request rendered by two engines on the CPU comes out within this (float rounding);
# the replaced weights change the picture by far more.
SAME_WEIGHTS = 2
OTHER_WEIGHTS = 20


def pixels(image: RenderedImage) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image.png)).convert("RGB"), dtype=np.int16)


def difference(a: RenderedImage, b: RenderedImage) -> int:
    return int(np.abs(pixels(a) - pixels(b)).max())


def short_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


def settled(path: Path) -> None:
    """Date the file at ``path``, or every file under it, a minute back, as a copy that ended
    a while ago: a loaded model's new version is loaded at once only then (one younger than
    ``file_versions.RECENTLY_WRITTEN_NS`` is left to settle, its loaded weights serving)."""
    past = time.time_ns() - 60_000_000_000
    for file in [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]:
        os.utime(file, ns=(past, past))


def replace(new: Path, old: Path) -> None:
    """The README's way: copied next to it (a while ago), then moved over it."""
    partial = old.with_name(old.name + ".partial")
    shutil.copy(new, partial)
    settled(partial)
    partial.replace(old)


def copy_under_way(new: Path, old: Path) -> None:
    """``rm old && cp new old`` half-way."""
    old.unlink()
    old.write_bytes(new.read_bytes()[: new.stat().st_size // 2])


def infotext(image: RenderedImage) -> Mapping[str, object]:
    return parse_infotext(image.infotext)[2]


def renders_the_new_weights(
    models: Path, request: RenderRequest, swap: Callable[[], None], field: str
) -> tuple[Engine, str]:
    """Render ``request``, ``swap`` the files, render it again: the second picture is a
    fresh engine's, not the first's, and its infotext's ``field`` (a hash) is the fresh
    engine's, not the first's. The engine, and that field's value."""
    engine = Engine(models)
    [old] = engine.render(request)
    swap()
    [again] = engine.render(request)
    [fresh] = Engine(models).render(request)
    assert infotext(again)[field] == infotext(fresh)[field] != infotext(old)[field]
    assert difference(again, fresh) <= SAME_WEIGHTS < OTHER_WEIGHTS < difference(again, old)
    return engine, str(infotext(again)[field])


def test_a_replaced_checkpoint_renders_its_new_weights_with_their_hash(tmp_path: Path) -> None:
    models = tmp_path / "models"
    checkpoint = write_tiny_checkpoint(models / "m.safetensors", seed=0)
    newer = write_tiny_checkpoint(tmp_path / "new" / "m.safetensors", seed=5)
    swap = functools.partial(replace, newer, checkpoint)
    engine, model_hash = renders_the_new_weights(models, REQUEST, swap, "Model hash")
    assert model_hash == short_sha(checkpoint)
    assert len(engine.models.loaded) == 1  # the old weights were dropped


def test_a_diffusers_folder_swapped_by_a_link_is_loaded_again(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    write_tiny_model(tmp_path / "v1", seed=0)
    write_tiny_model(tmp_path / "v2", seed=5)
    (models / "m").symlink_to(tmp_path / "v1")

    def swap() -> None:
        settled(tmp_path / "v2")
        (models / "m.new").symlink_to(tmp_path / "v2")
        (models / "m.new").replace(models / "m")

    renders_the_new_weights(models, REQUEST, swap, "Model hash")


@pytest.mark.parametrize("component", ["vae", "text_encoder"])
def test_a_diffusers_folder_whose_component_alone_is_replaced_is_loaded_again(
    tmp_path: Path, component: str
) -> None:
    """A VAE or text encoder moved over its file inside the folder (the folder and its UNet
    as they were): the next job renders the new weights, as a fresh engine does."""
    models = tmp_path / "models"
    write_tiny_model(models / "m", seed=0)
    write_tiny_model(tmp_path / "v2", seed=5)
    engine = Engine(models)
    [old] = engine.render(REQUEST)
    assert mapped_under(tmp_path) == set()  # a component ``cp``-ed over ends nothing
    [weights] = (tmp_path / "v2" / component).glob("*.safetensors")
    replace(weights, models / "m" / component / weights.name)
    [again] = engine.render(REQUEST)
    [fresh] = Engine(models).render(REQUEST)
    assert difference(again, fresh) <= SAME_WEIGHTS < OTHER_WEIGHTS < difference(again, old)


def with_a_refiner(tmp_path: Path) -> tuple[Path, Path, Path, RenderRequest]:
    """A models folder with an SDXL model and a refiner: the folder, the refiner's file, a
    newer version of it elsewhere, and a request refined by it."""
    models = tmp_path / "models"
    write_tiny_model(models / "xl", family="sdxl")
    refiner = write_tiny_checkpoint(
        models / "Stable-diffusion" / "refiner.safetensors", family="sdxl-refiner", seed=3
    )
    newer = write_tiny_checkpoint(
        tmp_path / "new" / "refiner.safetensors", family="sdxl-refiner", seed=11
    )
    request = dataclasses.replace(
        REQUEST,
        model="xl",
        steps=6,
        sampler="Euler",
        options={"refiner": "refiner", "refiner_switch": 0.5},
    )
    return models, refiner, newer, request


def test_a_replaced_refiner_renders_its_new_weights_with_their_hash(tmp_path: Path) -> None:
    models, refiner, newer, request = with_a_refiner(tmp_path)
    swap = functools.partial(replace, newer, refiner)
    _, named = renders_the_new_weights(models, request, swap, "Refiner")
    assert named == f"refiner [{short_sha(refiner)}]"


def test_a_replaced_vae_decodes_with_its_new_weights_and_hash(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_tiny_model(models / "m", seed=0)
    vae = write_tiny_vae(models / "vae" / "v.safetensors", seed=1)
    newer = write_tiny_vae(tmp_path / "new" / "v.safetensors", seed=9)
    request = dataclasses.replace(REQUEST, options={"vae": "v"})
    swap = functools.partial(replace, newer, vae)
    _, vae_hash = renders_the_new_weights(models, request, swap, "VAE hash")
    assert vae_hash == short_sha(vae)


def test_a_replacement_still_being_copied_leaves_the_loaded_weights_serving(
    tmp_path: Path,
) -> None:
    """A copy under way at the model's name (no ``mv``) begun between a job's look-up and its
    load: that job renders with the weights loaded and says their hash (a later job's look-up
    refuses it as still copying, refunded); once whole, the next job loads it."""
    models = tmp_path / "models"
    checkpoint = write_tiny_checkpoint(models / "m.safetensors", seed=0)
    newer = write_tiny_checkpoint(tmp_path / "new" / "m.safetensors", seed=5).read_bytes()
    engine = Engine(models)
    [old] = engine.render(REQUEST)
    loaded = engine.models.loaded["m"]
    entry = engine.registry.resolve("m")  # a batch looked it up, then the copy began
    copy_under_way(tmp_path / "new" / "m.safetensors", checkpoint)
    assert engine.models.load(entry) is loaded
    checkpoint.write_bytes(newer)
    settled(checkpoint)
    [after] = engine.render(REQUEST)
    assert engine.models.loaded["m"] is not loaded
    assert infotext(after)["Model hash"] == short_sha(checkpoint) != infotext(old)["Model hash"]


def changed_as_the_first_load_ends(
    tmp_path: Path, change: Callable[[Path, Path], None]
) -> tuple[Engine, Path, list[str]]:
    """An engine over a models folder with the checkpoint ``m``, whose first load from disk
    ends with ``change(newer, checkpoint)`` (after its weights were read, before its hash): the
    engine, the checkpoint, and the names of the loads (each added as it ends)."""
    models = tmp_path / "models"
    checkpoint = write_tiny_checkpoint(models / "m.safetensors", seed=0)
    newer = write_tiny_checkpoint(tmp_path / "new" / "m.safetensors", seed=5)
    engine = Engine(models)
    read_from_disk = engine.models.load_pipeline
    loads: list[str] = []

    def changed_as_the_first_ends(entry: Any) -> Any:
        pipeline = read_from_disk(entry)
        loads.append(entry.name)
        if len(loads) == 1:
            change(newer, checkpoint)
        return pipeline

    engine.models.load_pipeline = changed_as_the_first_ends
    return engine, checkpoint, loads


def test_a_model_replaced_while_it_loads_is_read_again(tmp_path: Path) -> None:
    """The hash is of the weights that rendered: a file replaced during the load is loaded
    again."""
    engine, checkpoint, loads = changed_as_the_first_load_ends(tmp_path, replace)
    [image] = engine.render(REQUEST)
    [fresh] = Engine(checkpoint.parent).render(REQUEST)
    assert loads == ["m", "m"]
    assert infotext(image)["Model hash"] == short_sha(checkpoint) == infotext(fresh)["Model hash"]
    assert difference(image, fresh) <= SAME_WEIGHTS


def test_a_file_copied_over_with_its_mtime_kept_has_another_stamp(tmp_path: Path) -> None:
    """``cp -p`` (``rsync -a``) of a file of the same size: only the change time tells."""
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    old.write_bytes(b"a" * 64)
    new.write_bytes(b"b" * 64)
    os.utime(new, ns=(old.stat().st_atime_ns, old.stat().st_mtime_ns))
    before = file_stamp(old)
    shutil.copy2(new, old)  # in place: the same inode, size and mtime
    assert file_stamp(old) != before
    assert file_stamp(tmp_path / "gone.bin") is None


def test_a_header_copied_over_with_its_size_and_mtime_kept_is_read_again(
    tmp_path: Path,
) -> None:
    """What the registry keeps of a file (its family, kind, completeness) is kept by the file's
    whole stamp: a header replaced by ``cp -p`` with the same size is read again."""
    header = tmp_path / "header.safetensors"
    header.write_bytes(b"LoRA")
    newer = tmp_path / "newer.safetensors"
    newer.write_bytes(b"VAE.")
    os.utime(newer, ns=(header.stat().st_atime_ns, header.stat().st_mtime_ns))
    kinds = PerFileVersion(lambda path, size: path.read_bytes())
    assert kinds(header, header.stat()) == b"LoRA"
    shutil.copy2(newer, header)  # in place: the same inode, size and mtime
    assert kinds(header, header.stat()) == b"VAE."
    assert kinds(header, header.stat()) == b"VAE."


def test_unchanged_files_keep_the_loaded_model(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_tiny_checkpoint(models / "m.safetensors", seed=0)
    write_tiny_vae(models / "vae" / "v.safetensors", seed=1)
    engine = Engine(models)
    request = dataclasses.replace(REQUEST, options={"vae": "v"})
    engine.render(request)
    loaded = engine.models.loaded["m"]
    vae = engine.models.vae_for(loaded, models / "vae" / "v.safetensors")
    engine.render(request)
    assert engine.models.loaded["m"] is loaded
    assert engine.models.vae_for(loaded, models / "vae" / "v.safetensors") is vae
    assert mapped_under(tmp_path) == set()  # a checkpoint or VAE ``cp``-ed over ends nothing


def test_an_upscaler_copied_over_with_its_mtime_kept_is_loaded_again(tmp_path: Path) -> None:
    """Upscalers and face restorers (``LastLoaded``) are kept by the file's whole stamp: one
    replaced by a file of the same size and mtime (``rsync -a``) is not served stale."""
    upscaler = write_tiny_upscaler(tmp_path / "models", seed=0)
    other = write_tiny_upscaler(tmp_path / "new", seed=4)
    assert upscaler.stat().st_size == other.stat().st_size
    kept = LastLoaded(load_upscaler)
    first = kept.get("tiny", upscaler, "cpu", lambda: None)
    mtime_ns = upscaler.stat().st_mtime_ns
    upscaler.write_bytes(other.read_bytes())  # in place: the same inode
    os.utime(upscaler, ns=(mtime_ns, mtime_ns))
    second = kept.get("tiny", upscaler, "cpu", lambda: None)
    assert second is not first
    assert kept.get("tiny", upscaler, "cpu", lambda: None) is second


@pytest.mark.parametrize("whole", [True, False], ids=["moved-in", "still-copying"])
def test_a_checkpoint_replaced_during_a_batch_fails_none_of_its_members(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whole: bool
) -> None:
    """Replaced between the batch's look-up and its load (only that window: a later look-up
    refuses a copy under way): every member's picture renders, each named by the hash of the
    weights that rendered it (the new file's once it is whole, else those loaded before)."""
    models = tmp_path / "models"
    checkpoint = write_tiny_checkpoint(models / "m.safetensors", seed=0)
    newer = write_tiny_checkpoint(tmp_path / "new" / "m.safetensors", seed=5)
    engine = Engine(models)
    [first] = engine.render(REQUEST)
    resolve = engine.registry.resolve

    def replaced_after_the_look_up(*args: Any) -> Any:
        entry = resolve(*args)
        if whole:
            replace(newer, checkpoint)
        else:
            copy_under_way(newer, checkpoint)
        return entry

    monkeypatch.setattr(engine.registry, "resolve", replaced_after_the_look_up)
    members = [dataclasses.replace(REQUEST, seed=seed) for seed in (1, 2)]
    rendered = engine.render_batch(members)
    expected = short_sha(newer) if whole else infotext(first)["Model hash"]
    assert [infotext(image)["Model hash"] for [image] in rendered] == [expected, expected]


@pytest.mark.parametrize("which", ["model", "refiner"])
def test_the_replaced_weights_are_freed_before_the_new_ones_load(
    tmp_path: Path, which: str
) -> None:
    """Never both versions in memory (two SDXL copies on one card): no reference to the old
    pipeline is left when its new version is read from disk."""
    if which == "model":
        models = tmp_path / "models"
        replaced = write_tiny_checkpoint(models / "m.safetensors", seed=0)
        newer = write_tiny_checkpoint(tmp_path / "new" / "m.safetensors", seed=5)
        request = REQUEST
    else:
        models, replaced, newer, request = with_a_refiner(tmp_path)
    engine = Engine(models)
    read_from_disk = engine.models.load_pipeline
    read: dict[str, weakref.ref[Any]] = {}
    old_alive: list[bool] = []

    def reading(entry: Any) -> Any:
        if entry.name in read:
            gc.collect()
            old_alive.append(read[entry.name]() is not None)
        pipeline = read_from_disk(entry)
        read[entry.name] = weakref.ref(pipeline)
        return pipeline

    engine.models.load_pipeline = reading
    engine.render(request)
    replace(newer, replaced)
    engine.render(request)
    assert old_alive == [False]


def test_a_copy_begun_while_the_model_loads_is_refused_not_read_half_written(
    tmp_path: Path,
) -> None:
    """The file is being copied over as its load ends: it is not read again half-written (an
    internal error for the member), the job is refused as still copying (refunded)."""
    engine, _, loads = changed_as_the_first_load_ends(tmp_path, copy_under_way)
    with pytest.raises(RenderFailed, match=r"model m cannot be loaded now: .*still copying\?"):
        engine.render(REQUEST)
    assert loads == ["m"]


def test_a_reload_tells_the_operator_which_file_versions_changed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``chmod`` changes only the change time: the reload's warning says so, and that the
    content is likely the same (a file system whose inode numbers move reloads every job); a
    real replacement names its modification time, without that hint."""
    models = tmp_path / "models"
    checkpoint = write_tiny_checkpoint(models / "m.safetensors", seed=0)
    settled(checkpoint)  # a chmod leaves a young file young: its new version waits
    newer = write_tiny_checkpoint(tmp_path / "new" / "m.safetensors", seed=5)
    engine = Engine(models)
    engine.render(REQUEST)
    caplog.set_level(logging.WARNING, logger="inference.model_cache")

    def told() -> str:
        [line] = [r.getMessage() for r in caplog.records if "changed on disk" in r.getMessage()]
        caplog.clear()
        return line

    checkpoint.chmod(0o600)
    engine.render(REQUEST)
    line = told()
    assert "model m changed on disk (change time)" in line
    assert "likely not its content" in line
    replace(newer, checkpoint)
    engine.render(REQUEST)
    line = told()
    assert "modification time" in line and "likely not its content" not in line
