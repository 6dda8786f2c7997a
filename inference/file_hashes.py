"""SHA-256 of model files (checkpoints, LoRAs, VAEs...) for the web UI's hashes, each file read
once per process.

An SDXL checkpoint takes about 9 s to hash, so a digest is kept in this process's memory and in
``EASEL_DATA_DIR/model-hashes.json`` (written there, not in the models folder, which Docker
mounts read-only), by the file's resolved path and version (``file_versions.file_stamp``:
device, inode, modification and change times, size), as the model cache keeps what it loaded:
a file replaced under the same name is hashed again, even one copied with its modification
time kept (``cp -p``, ``rsync -a``: every SDXL fp16 checkpoint has the same size). Entries that
earlier versions wrote there (by size, modification time in seconds, inode and change time) are
still honoured, and the cache the models folder held before (``.easel-hashes.json``, by size
and modification time) is still read for the files the data folder's does not know yet. Each
write drops the entries of files gone from their folder (deleted or renamed models), so the
file holds what the models folders hold, not every file ever hashed. Pure Python (no torch).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

from inference.file_versions import Stamp, stamp_of

log = logging.getLogger(__name__)

# In EASEL_DATA_DIR: the digests this process and earlier ones computed.
HASHES_FILE = "model-hashes.json"
# In the models folder: where older versions kept them (read, never written now).
MODELS_FOLDER_HASHES_FILE = ".easel-hashes.json"
# Appended to a file's path in the caches for its tensor-data digest (``tensors_only``).
_TENSORS_ONLY = "#tensors"
_CHUNK = 1 << 20

# (resolved path, its stamp): the file as it was hashed.
_Key = tuple[str, Stamp]
# Every registry of the process shares these: the bot's (/use-settings), each device's engine.
_known: dict[_Key, str] = {}
_lock = threading.Lock()
# One read-modify-replace of a hashes file at a time: two threads storing different files'
# digests would each write the file without the other's.
_store_lock = threading.Lock()
# One hash of a file at a time: a second caller waits for the first's digest.
_file_locks: dict[str, threading.Lock] = {}


def file_sha256(
    file: Path, hashes_file: Path | None, models_dir: Path, *, tensors_only: bool = False
) -> str:
    """``file``'s SHA-256 (hex), from memory, ``hashes_file`` (None: none kept on disk) or
    the models folder's old cache, else read once and kept in memory and ``hashes_file``.
    ``tensors_only``: of a ``.safetensors`` file's tensor data alone, after its header (the web
    UI's LoRA hash, kohya's "addnet" hash, which edited metadata leaves alone)."""
    resolved = _cached_as(file, tensors_only)
    with _lock_of(resolved):
        key, digest = _recalled(file, resolved, hashes_file, models_dir)
        if digest is None:
            digest = _tensors_digest(file) if tensors_only else _digest(file)
            if hashes_file is not None:
                _store(hashes_file, key, digest)
            with _lock:
                _known[key] = digest
        return digest


def recalled_file_sha256(
    file: Path, hashes_file: Path | None, models_dir: Path, *, tensors_only: bool = False
) -> str | None:
    """``file``'s SHA-256 (``tensors_only``: as for ``file_sha256``) when memory or a cache
    holds it (the file itself is not read), else None: the file is then read on the background
    hasher's thread (one for the process, each file once), so that a later call finds it. For
    a member's request, which must not hold a thread for seconds per checkpoint."""
    resolved = _cached_as(file, tensors_only)
    file_lock = _lock_of(resolved)
    if not file_lock.acquire(blocking=False):  # being read now
        return None
    try:
        _, digest = _recalled(file, resolved, hashes_file, models_dir)
    finally:
        file_lock.release()
    if digest is None:
        _HASHER.hash_later(file, hashes_file, models_dir, tensors_only)
    return digest


def _cached_as(file: Path, tensors_only: bool) -> str:
    """The name ``file``'s digest is kept under: its resolved path, marked for a
    ``tensors_only`` digest (never in the models folder's old cache, which has no such mark)."""
    return str(file.resolve()) + (_TENSORS_ONLY if tensors_only else "")


def _lock_of(resolved: str) -> threading.Lock:
    with _lock:
        return _file_locks.setdefault(resolved, threading.Lock())


def _recalled(
    file: Path, resolved: str, hashes_file: Path | None, models_dir: Path
) -> tuple[_Key, str | None]:
    """The key of ``file`` as it is now, and its digest from memory or a cache file (kept in
    memory, and in ``hashes_file`` when it came from the models folder's), else None."""
    stat = file.stat()
    key = (resolved, stamp_of(stat))
    known = _known.get(key)
    if known is not None:
        return key, known
    kept = {} if hashes_file is None else _read(hashes_file)
    digest = _kept(key, stat, kept)
    # The models folder's cache, for the files the data folder's does not know yet.
    if digest is None and resolved not in kept:
        digest = _kept_before(resolved, stat, _read(models_dir / MODELS_FOLDER_HASHES_FILE))
        if digest is not None and hashes_file is not None:
            _store(hashes_file, key, digest)
    if digest is not None:
        with _lock:
            _known[key] = digest
    return key, digest


class NotSafetensorsError(OSError):
    """A file named ``.safetensors`` whose header does not fit in it (a wrong or crafted
    file): it has no tensor-data hash, as a file that cannot be read has none."""


class _BackgroundHasher:
    """One daemon thread reading the files ``recalled_file_sha256`` did not know, one after
    the other; a file asked for again while it waits is queued once."""

    def __init__(self) -> None:
        self._waiting: dict[str, tuple[Path, Path | None, Path, bool]] = {}
        self.running = False

    def hash_later(
        self, file: Path, hashes_file: Path | None, models_dir: Path, tensors_only: bool
    ) -> None:
        with _lock:
            self._waiting.setdefault(
                _cached_as(file, tensors_only), (file, hashes_file, models_dir, tensors_only)
            )
            if self.running:
                return
            self.running = True
        threading.Thread(target=self._run, name="easel-model-hashes", daemon=True).start()

    def _run(self) -> None:
        try:
            self._hash_waiting()
        except BaseException:  # the next ``hash_later`` starts a thread again
            with _lock:
                self.running = False
            raise

    def _hash_waiting(self) -> None:
        while True:
            with _lock:
                if not self._waiting:
                    # In the same hold as the check: a file queued after it starts a thread.
                    self.running = False
                    return
                _, (file, hashes_file, models_dir, tensors_only) = self._waiting.popitem()
            try:
                file_sha256(file, hashes_file, models_dir, tensors_only=tensors_only)
            except OSError as error:  # removed meanwhile, say: a later call tries again
                log.warning("cannot hash the model file %s: %s", file, error)
            except Exception:  # one file's surprise must not stop every later hash
                log.exception("hashing the model file %s failed", file)


_HASHER = _BackgroundHasher()


def _digest(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _tensors_digest(file: Path) -> str:
    """The SHA-256 of what follows a ``.safetensors`` header (8 bytes giving the length of
    the JSON after them). ``NotSafetensorsError`` when that length does not fit in the file."""
    with file.open("rb") as stream:
        header_length = int.from_bytes(stream.read(8), "little")
        size = os.fstat(stream.fileno()).st_size
        if size < 8 or 8 + header_length > size:
            raise NotSafetensorsError(
                f"{file.name} is not a safetensors file: its header says {header_length:,} "
                f"bytes, the file holds {max(size - 8, 0):,} after the length"
            )
        stream.seek(8 + header_length)
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _entry(key: _Key, digest: str) -> dict[str, object]:
    return {"stamp": list(key[1]), "sha256": digest}


def _entry_before(stat: os.stat_result, digest: str) -> dict[str, object]:
    """The entry earlier versions wrote for the file as ``stat`` finds it."""
    return {
        "size": stat.st_size,
        "mtime": stat.st_mtime,
        "ino": stat.st_ino,
        "ctime_ns": stat.st_ctime_ns,
        "sha256": digest,
    }


def _kept(key: _Key, stat: os.stat_result, cache: dict[str, object]) -> str | None:
    """The digest the data folder's ``cache`` holds for the file as ``key`` (and ``stat``, for
    an entry of an earlier version's) describes it."""
    entry = cache.get(key[0])
    if not isinstance(entry, dict):
        return None
    digest = str(entry.get("sha256"))
    return digest if entry in (_entry(key, digest), _entry_before(stat, digest)) else None


def _kept_before(path: str, stat: os.stat_result, cache: dict[str, object]) -> str | None:
    """The digest the models folder's old ``cache`` holds for the file at ``path`` (same size
    and mtime: all it recorded)."""
    entry = cache.get(path)
    size, mtime = stat.st_size, stat.st_mtime
    if isinstance(entry, dict) and (entry.get("size"), entry.get("mtime")) == (size, mtime):
        digest = entry.get("sha256")
        if isinstance(digest, str):
            return digest
    return None


def _store(hashes_file: Path, key: _Key, digest: str) -> None:
    partial = hashes_file.with_name(f"{hashes_file.name}.{os.getpid()}-{threading.get_ident()}")
    with _store_lock:
        cache = _still_there(_read(hashes_file))
        cache[key[0]] = _entry(key, digest)
        try:
            hashes_file.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(cache, indent=1, sort_keys=True), encoding="utf-8")
            partial.replace(hashes_file)  # whole, for another process reading it meanwhile
        except OSError as error:  # kept in memory all the same: this process hashes it once
            log.warning("cannot write the model hash cache %s: %s", hashes_file, error)


def _still_there(cache: dict[str, object]) -> dict[str, object]:
    """``cache`` without the entries of files gone from their folder, each folder listed once
    (``_names_now``)."""
    in_folder: dict[str, list[tuple[str, str]]] = {}
    for cached_as in cache:
        # Strings, not Paths: Path's parsing doubled a write of 3,300 entries (75 to 150 ms).
        folder, name = os.path.split(cached_as.removesuffix(_TENSORS_ONLY))
        in_folder.setdefault(folder, []).append((cached_as, name))
    gone: set[str] = set()
    for folder, files in in_folder.items():
        kinds = tuple({"." + name.rpartition(".")[2] for _, name in files if "." in name})
        names = _names_now(folder, kinds)
        if names is not None:
            gone.update(cached_as for cached_as, name in files if name not in names)
    return {cached_as: entry for cached_as, entry in cache.items() if cached_as not in gone}


def _names_now(folder: str, kinds: tuple[str, ...]) -> frozenset[str] | None:
    """What ``folder`` holds, where that tells which of its files cached (of ``kinds``, their
    suffixes) are gone: it holds a file of those kinds, or it is gone and its parent holds one
    (a deleted sub-folder of LoRAs: nothing). None where it cannot tell: a share not mounted
    now (its mount point empty or holding a marker file, or missing with its parent) or a
    folder that cannot be read keeps its entries, each 9 s of a checkpoint to read again."""
    try:
        names = _names_in(folder)
    except FileNotFoundError:
        try:
            in_parent = _names_in(str(Path(folder).parent))
        except OSError:
            return None
        return frozenset() if _holds(in_parent, kinds) else None
    except OSError:
        return None
    return names if _holds(names, kinds) else None


def _holds(names: frozenset[str], kinds: tuple[str, ...]) -> bool:
    return bool(kinds) and any(name.endswith(kinds) for name in names)


def _names_in(folder: str) -> frozenset[str]:
    with os.scandir(folder) as entries:
        return frozenset(entry.name for entry in entries)


def _read(cache_file: Path) -> dict[str, object]:
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
