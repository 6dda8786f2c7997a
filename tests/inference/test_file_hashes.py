"""The model-hash cache (``inference.file_hashes``): a replaced file is hashed again whatever
its size and modification time, and digests stored at once are all kept on disk."""

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
from inference.file_hashes import HASHES_FILE, file_sha256
from inference.registry import ModelRegistry


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


def test_digests_stored_at_the_same_time_are_all_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashes_file = tmp_path / HASHES_FILE
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
            target=file_hashes._store, args=(hashes_file, (name, 1, 1.0, 1, 1), name * 64)
        )
        for name in ("a", "b")
    ]
    for store in stores:
        store.start()
    for store in stores:
        store.join()
    assert sorted(json.loads(hashes_file.read_text(encoding="utf-8"))) == ["a", "b"]


def test_a_hash_search_reads_no_file_itself_and_each_once_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/use-settings with a hash of no known file: the member's call reads no checkpoint (it
    must answer within Discord's 3 s); the background hasher reads each once for later calls."""
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.safetensors").write_bytes(name.encode())
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
    assert "3 model(s) whose hash is being read now" in unknown.unhonoured[0]
    deadline = time.monotonic() + 60
    while file_hashes._HASHER.running and time.monotonic() < deadline:
        time.sleep(0.01)
    b_hash = hashlib.sha256(b"b").hexdigest()[:10]
    for _ in range(2):
        found = request_from_infotext_text(text.format(hash=b_hash), installed)
        assert found.request.model == "b"
    assert read == ["easel-model-hashes"] * 3
