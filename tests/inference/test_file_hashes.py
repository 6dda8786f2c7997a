"""The model-hash cache (``inference.file_hashes``): a replaced file is hashed again whatever
its size and modification time, and digests stored at once are all kept on disk; a LoRA's
hashes as Easel writes them and as ``/use-settings`` reads them back."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest

from bot.infotext_import import installed_in, request_from_infotext_text
from inference import file_hashes
from inference.file_hashes import HASHES_FILE, NotSafetensorsError, file_sha256
from inference.file_versions import file_stamp
from inference.passes.networks import hash_list, short_hashes
from inference.registry import ModelRegistry
from tests.support.checkpoint_files import stand_in_checkpoint


def test_a_file_replaced_keeping_its_size_and_mtime_is_hashed_again(tmp_path: Path) -> None:
    model, hashes_file = tmp_path / "m.safetensors", tmp_path / "data" / HASHES_FILE
    model.write_bytes(b"weights A")
    assert file_sha256(model, hashes_file, tmp_path) == hashlib.sha256(b"weights A").hexdigest()
    # As `cp -p` or `rsync -a` replace it: a new file, same size, the old modification time.
    stat = model.stat()
    copy = tmp_path / "m.safetensors.partial"
    copy.write_bytes(b"weights B")
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    copy.replace(model)
    assert (model.stat().st_size, model.stat().st_mtime) == (stat.st_size, stat.st_mtime)
    assert file_sha256(model, hashes_file, tmp_path) == hashlib.sha256(b"weights B").hexdigest()


def test_a_digest_is_kept_by_the_model_cache_s_file_stamp_and_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hashes file keeps each digest by the stamp the model cache keeps its weights by
    (``file_stamp``: device included); the next process reads it back, not the file."""
    model, hashes_file = tmp_path / "m.safetensors", tmp_path / "data" / HASHES_FILE
    model.write_bytes(b"weights A")
    digest = file_sha256(model, hashes_file, tmp_path)
    [entry] = json.loads(hashes_file.read_text(encoding="utf-8")).values()
    assert entry == {"stamp": list(file_stamp(model) or ()), "sha256": digest}
    monkeypatch.setattr(file_hashes, "_known", {})  # another process
    monkeypatch.setattr(file_hashes, "_digest", lambda file: pytest.fail(f"{file} read again"))
    assert file_sha256(model, hashes_file, tmp_path) == digest


def test_digests_stored_at_the_same_time_are_all_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashes_file = tmp_path / HASHES_FILE
    models = {name: tmp_path / f"{name}.safetensors" for name in ("a", "b")}
    for model in models.values():
        model.write_bytes(b"weights")
    read = file_hashes._read
    # Each store waits, after reading the file, for the other to have read it too (half a
    # second at most): without a lock both then write what they read plus their own digest.
    both_read = threading.Barrier(2, timeout=0.5)

    def read_then_wait(cache_file: Path) -> dict[str, object]:
        cache = read(cache_file)
        with contextlib.suppress(threading.BrokenBarrierError):
            both_read.wait()
        return cache

    monkeypatch.setattr(file_hashes, "_read", read_then_wait)
    stores = [
        threading.Thread(
            target=file_hashes._store,
            args=(hashes_file, (str(model), (1, 1, 1, 1, 1)), name * 64),
        )
        for name, model in models.items()
    ]
    for store in stores:
        store.start()
    for store in stores:
        store.join()
    kept = sorted(json.loads(hashes_file.read_text(encoding="utf-8")))
    assert kept == [str(models["a"]), str(models["b"])]


def _cached(hashes_file: Path) -> list[str]:
    """The names the hashes file keeps digests under, file names alone (a LoRA's tensor digest
    marked)."""
    return sorted(Path(name).name for name in json.loads(hashes_file.read_text(encoding="utf-8")))


def test_a_removed_models_digests_go_at_the_next_write(tmp_path: Path) -> None:
    """Kept, they would stay for good (each written again with every new digest)."""
    hashes_file = tmp_path / "data" / HASHES_FILE
    models = tmp_path / "models"
    old, kept, new = (_lora(models, name, name.encode()) for name in ("old", "kept", "new"))
    for lora in (old, kept):
        file_sha256(lora, hashes_file, models)
        file_sha256(lora, hashes_file, models, tensors_only=True)
    assert _cached(hashes_file) == [
        "kept.safetensors",
        "kept.safetensors#tensors",
        "old.safetensors",
        "old.safetensors#tensors",
    ]
    old.unlink()
    file_sha256(new, hashes_file, models)
    assert _cached(hashes_file) == [
        "kept.safetensors",
        "kept.safetensors#tensors",
        "new.safetensors",
    ]


def test_the_digests_of_a_share_not_mounted_are_kept(tmp_path: Path) -> None:
    """A share not mounted now: its folders are missing, its mount point empty, or holding a
    marker file. Its models may come back as they were, each taking seconds to hash again."""
    hashes_file = tmp_path / "data" / HASHES_FILE
    models = tmp_path / "models"
    shares = ("nfs", "mount", "marked")
    unmounted, emptied, marked = (_lora(models / share, "away", b"w") for share in shares)
    for lora in (unmounted, emptied, marked):
        file_sha256(lora, hashes_file, models)
        lora.unlink()
    unmounted.parent.rmdir()  # models/nfs is left, empty
    (marked.parent / "NOT_MOUNTED").write_text("mount the share here")
    file_sha256(_lora(models, "new", b"new weights"), hashes_file, models)
    assert _cached(hashes_file) == ["away.safetensors"] * 3 + ["new.safetensors"]


def test_a_deleted_sub_folders_digests_go_at_the_next_write(tmp_path: Path) -> None:
    """Its parent still holds models: the sub-folder went, not a share."""
    hashes_file = tmp_path / "data" / HASHES_FILE
    models = tmp_path / "models"
    kept = _lora(models, "kept", b"k")
    pack = kept.parent / "pack"
    pack.mkdir()
    packed = _lora(tmp_path, "packed", b"p").rename(pack / "packed.safetensors")
    for lora in (kept, packed):
        file_sha256(lora, hashes_file, models)
    assert _cached(hashes_file) == ["kept.safetensors", "packed.safetensors"]
    packed.unlink()
    pack.rmdir()
    file_sha256(_lora(models, "new", b"n"), hashes_file, models)
    assert _cached(hashes_file) == ["kept.safetensors", "new.safetensors"]


def test_a_hash_search_reads_no_file_itself_and_each_once_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/use-settings with a hash of no known file: the member's call reads no checkpoint (it
    must answer within Discord's 3 s); the background hasher reads each once for later calls."""
    for name in ("a", "b", "c"):
        stand_in_checkpoint(tmp_path / f"{name}.safetensors", name.encode())
    registry = ModelRegistry(tmp_path, hashes_file=tmp_path / "data" / HASHES_FILE)
    read: list[str] = []
    digest = file_hashes._digest

    def reading(file: Path) -> str:
        read.append(threading.current_thread().name)
        return digest(file)

    monkeypatch.setattr(file_hashes, "_digest", reading)
    text = "a cat\nSteps: 3, Sampler: Euler, Seed: 1, Model hash: {hash}"
    installed = installed_in(registry, None, wait_for_hashes=False)
    unknown = request_from_infotext_text(text.format(hash="9999999999"), installed)
    # One sentence of the two cases, then the hashes still read: no clause inside another.
    assert unknown.unhonoured[0] == (
        "the model (hash 9999999999) is not installed or not allowed here; 'a' is used "
        "instead. If it is one of the models here whose hash is still being read (3 left), "
        "try again in a minute"
    )
    deadline = time.monotonic() + 60
    while file_hashes._HASHER.running and time.monotonic() < deadline:
        time.sleep(0.01)
    b_hash = hashlib.sha256((tmp_path / "b.safetensors").read_bytes()).hexdigest()[:10]
    for _ in range(2):
        found = request_from_infotext_text(text.format(hash=b_hash), installed)
        assert found.request.model == "b"
    assert read == ["easel-model-hashes"] * 3


def _wait_for_the_hasher() -> None:
    deadline = time.monotonic() + 60
    while file_hashes._HASHER.running and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.mark.parametrize(
    "header_length", [2**63, 1_000], ids=["past an offset's range", "past the file's end"]
)
def test_a_safetensors_header_longer_than_its_file_has_no_tensor_hash(
    tmp_path: Path, header_length: int
) -> None:
    """A wrong or crafted LoRA: an OSError (what callers read as "no hash"), not a ValueError
    from ``seek`` nor the hash of nothing."""
    lora = tmp_path / "bad.safetensors"
    lora.write_bytes(header_length.to_bytes(8, "little") + b"{}")
    with pytest.raises(OSError, match="not a safetensors file"):
        file_sha256(lora, None, tmp_path, tensors_only=True)


@pytest.mark.parametrize("failure", [ValueError, RuntimeError])
def test_the_background_hasher_goes_on_after_a_file_it_cannot_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: type[Exception]
) -> None:
    """One file failing in any way leaves the hasher to hash the files asked for later."""
    digest = file_hashes._digest

    def failing_on_bad(file: Path) -> str:
        if file.name == "bad.safetensors":
            raise failure("surprise")
        return digest(file)

    monkeypatch.setattr(file_hashes, "_digest", failing_on_bad)
    (tmp_path / "bad.safetensors").write_bytes(b"bad")
    (tmp_path / "good.safetensors").write_bytes(b"good")
    assert file_hashes.recalled_file_sha256(tmp_path / "bad.safetensors", None, tmp_path) is None
    _wait_for_the_hasher()
    assert not file_hashes._HASHER.running
    assert file_hashes.recalled_file_sha256(tmp_path / "good.safetensors", None, tmp_path) is None
    _wait_for_the_hasher()
    good = file_hashes.recalled_file_sha256(tmp_path / "good.safetensors", None, tmp_path)
    assert good == hashlib.sha256(b"good").hexdigest()


def _lora(folder: Path, name: str, data: bytes) -> Path:
    """A whole ``.safetensors`` LoRA whose one tensor (bytes) is ``data``."""
    tensor = {"dtype": "U8", "shape": [len(data)], "data_offsets": [0, len(data)]}
    header = json.dumps({"__metadata__": {"ss_output_name": name}, "w": tensor}).encode()
    (folder / "Lora").mkdir(parents=True, exist_ok=True)
    lora = folder / "Lora" / f"{name}.safetensors"
    lora.write_bytes(len(header).to_bytes(8, "little") + header + data)
    return lora


def test_easels_own_lora_hashes_pasted_back_tell_no_other_file(tmp_path: Path) -> None:
    """The ``Lora hashes`` Easel writes (``short_hashes(tensor_data=True)``: of the tensor
    data) are among those the reader knows the installed LoRA by; another hash is told."""
    _lora(tmp_path, "detail", b"w" * 99)
    registry = ModelRegistry(tmp_path)
    written = hash_list(
        short_hashes(registry, ["detail"], registry.network_files("lora"), tensor_data=True)
    )
    assert written is not None
    text = "a cat, <lora:detail:0.6>\nSteps: 20, Sampler: Euler, Seed: 1, Lora hashes: {}"
    installed = installed_in(registry, None)
    pasted_back = request_from_infotext_text(text.format(f'"{written}"'), installed)
    assert not [note for note in pasted_back.unhonoured if "LoRA 'detail'" in note]
    other = request_from_infotext_text(text.format('"detail: 99aa99aa99aa"'), installed)
    assert [note for note in other.unhonoured if "LoRA 'detail'" in note]


def test_a_lora_removed_or_not_safetensors_inside_is_not_known(tmp_path: Path) -> None:
    """Removed after the folder was listed: no hash (nothing compared), not an error the
    member sees as Easel's fault. A header that does not fit in the file: not listed."""
    removed = _lora(tmp_path, "removed", b"w")
    (tmp_path / "Lora" / "crafted.safetensors").write_bytes((2**63).to_bytes(8, "little"))
    installed = installed_in(ModelRegistry(tmp_path), None)
    assert sorted(installed.loras) == ["removed"]
    removed.unlink()
    assert installed.lora_hashes("removed") is None


def test_a_lora_crafted_after_it_was_listed_has_no_hash(tmp_path: Path) -> None:
    """Its header no longer fits in the file: the hasher says so (an ``OSError``) and the
    paste-back compares nothing, rather than failing."""
    lora = _lora(tmp_path, "crafted", b"w")
    installed = installed_in(ModelRegistry(tmp_path), None)
    assert installed.loras == ["crafted"]
    lora.write_bytes((2**63).to_bytes(8, "little"))
    with pytest.raises(NotSafetensorsError):
        file_sha256(lora, None, tmp_path, tensors_only=True)
    assert installed.lora_hashes("crafted") is None


def test_a_file_queued_as_the_hasher_finishes_is_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file asked for between the hasher's last look at its queue and its thread's end
    starts a thread of its own, rather than waiting for some later file to be asked for."""
    for name in ("a", "b"):
        (tmp_path / f"{name}.safetensors").write_bytes(name.encode())
    hash_waiting = file_hashes._BackgroundHasher._hash_waiting
    asked_late: list[bool] = []

    def then_asked(hasher: file_hashes._BackgroundHasher) -> None:
        hash_waiting(hasher)
        if not asked_late:  # the thread switch this test widens: once
            file_hashes.recalled_file_sha256(tmp_path / "b.safetensors", None, tmp_path)
            asked_late.append(True)

    monkeypatch.setattr(file_hashes._BackgroundHasher, "_hash_waiting", then_asked)
    assert file_hashes.recalled_file_sha256(tmp_path / "a.safetensors", None, tmp_path) is None
    deadline = time.monotonic() + 60
    while not (asked_late and not file_hashes._HASHER.running) and time.monotonic() < deadline:
        time.sleep(0.01)
    late = file_hashes.recalled_file_sha256(tmp_path / "b.safetensors", None, tmp_path)
    assert late == hashlib.sha256(b"b").hexdigest()
