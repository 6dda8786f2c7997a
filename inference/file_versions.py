"""What was read from a file, kept for the file's version (``FileStamp``): the registry's
completeness checks (``safetensors_problem``, ``pickle_problem``, ``gguf_problem``) are asked
about every add-on file again and again. One entry per path, replaced when the file changes and
dropped when the registry no longer lists it (``forget_files``): bounded by the files there are,
never evicting one that is still asked about (a least-recently-used cache smaller than the
folder rereads every header at every pass).

Pure Python, read from several threads (a dict's get, set and pop are atomic).
"""

from __future__ import annotations

import logging
import os
import stat as stat_mode
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

Value = TypeVar("Value")

# What was read from a file or a folder is kept only once its stamp (mtime) was this old: a
# change within the same tick of a coarse file-system clock (2 s on FAT) as the read leaves
# its mtime as it was. The registry's listings (``Stamps.settled``) and the wildcard text
# files (``inference.prompts.wildcards._TextFile``) both keep their reads by it.
LISTING_SETTLED_NS = 3_000_000_000

# A weights file whose mtime is this near is watched before it loads (it may still be being
# written), and a loaded model's new version waits to be this old (``written_lately``). 2 s: a
# coarse file-system clock (FAT's) puts a write up to that far in the past.
RECENTLY_WRITTEN_NS = 2_000_000_000
# How long such a file is watched for a change of size or mtime: a copy running, even a slow
# one over a network, writes more often than that.
WRITE_WATCH_S = 0.5

log = logging.getLogger(__name__)


# A file's version as a cache keeps what it loaded by: device, inode, mtime and change time
# (ns), size. A file replaced under its name (``mv``, ``os.replace``, a symbolic link moved)
# has another inode; one written in place another size or mtime, and, even copied with its
# mtime kept (``cp -p``, ``rsync -a``), another change time. None: missing or unreadable.
Stamp = tuple[int, int, int, int, int]
FileStamp = Stamp | None


def file_stamp(path: Path) -> FileStamp:
    """``path``'s version now (links followed): one ``stat``."""
    try:
        return stamp_of(path.stat())
    except OSError:
        return None


def stamp_of(stat: os.stat_result) -> Stamp:
    """The version of the file ``stat`` describes (``FileStamp``)."""
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size


def written_lately(files: Sequence[Path], model: Path | None = None) -> str | None:
    """Why one of ``files`` (a loaded model's, changed on disk) is not to be loaded again
    yet, said without waiting: it was written within ``RECENTLY_WRITTEN_NS`` (a copy writing
    it in place keeps it so); None when none was. The per-job check of a loaded model: its
    weights serve the jobs meanwhile, and the reload once they have settled watches nothing
    (``being_written``). The file is named from ``model``'s folder (the model's own file or
    folder; by default ``files[0]``)."""
    recent = _recently_written(files)
    if not recent:
        return None
    name = _name_in([files[0] if model is None else model], next(iter(recent)))
    return f"{name} was written in the last {RECENTLY_WRITTEN_NS / 1e9:g} s (a copy under way?)"


def being_written(files: Sequence[Path]) -> str | None:
    """Why one of ``files`` (weights about to load; a model's own file or folder first) is
    not to be loaded now: written within ``RECENTLY_WRITTEN_NS``, it changed size or mtime
    over ``WRITE_WATCH_S`` (a copy under way: its load would read half a file, or end the
    process when the copy cuts short a mapped file); None when they have settled. Waits
    ``WRITE_WATCH_S`` only when one was written that recently; folders are not watched."""
    recent = _recently_written(files)
    if not recent:
        return None
    time.sleep(WRITE_WATCH_S)
    for file, seen in recent.items():
        try:
            stat = file.stat()
        except OSError:
            continue
        if (stat.st_size, stat.st_mtime_ns) != seen:
            return (
                f"{_name_in(files, file)} is still being written ({stat.st_size:,} bytes so "
                "far): try again once the copy has finished (copy a new file beside the old "
                "one and rename it into place: Easel never sees it half written)"
            )
    return None


def _recently_written(files: Sequence[Path]) -> dict[Path, tuple[int, int]]:
    """The size and mtime of each of ``files`` (regular files; one stat each) written within
    ``RECENTLY_WRITTEN_NS`` of now."""
    now = time.time_ns()
    recent: dict[Path, tuple[int, int]] = {}
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            continue  # gone: its load says so
        # Either way from now: a network mount's clock may run ahead of this host's.
        if stat_mode.S_ISREG(stat.st_mode) and abs(now - stat.st_mtime_ns) < RECENTLY_WRITTEN_NS:
            recent[file] = (stat.st_size, stat.st_mtime_ns)
    return recent


def _name_in(files: Sequence[Path], file: Path) -> str:
    """``file`` named from the folder of ``files[0]`` (a model's own file or folder): which
    of a diffusers folder's parts."""
    top = files[0].parent
    return str(file.relative_to(top) if file.is_relative_to(top) else file.name)


# Every cache, for ``forget_files``.
_ALL: list[PerFileVersion[Any]] = []


class PerFileVersion(Generic[Value]):
    """``read(path, size)`` of each file, kept per path for the version it was read from."""

    def __init__(self, read: Callable[[Path, int], Value]) -> None:
        self._read = read
        self._kept: dict[Path, tuple[Stamp, Value]] = {}
        _ALL.append(self)

    def __call__(self, path: Path, stat: os.stat_result) -> Value:
        """The value for the file at ``path`` as ``stat`` found it (read again once its
        ``FileStamp`` changed: even a file copied over with its size and mtime kept)."""
        kept = self._kept.get(path)
        if kept is not None and kept[0] == stamp_of(stat):
            return kept[1]
        return self.keep(path, stat, self._read(path, stat.st_size))

    def keep(self, path: Path, stat: os.stat_result, value: Value) -> Value:
        """Keep ``value`` for the file at ``path`` as ``stat`` found it, and give it."""
        self._kept[path] = (stamp_of(stat), value)
        return value

    def forget(self, paths: Iterable[Path]) -> None:
        for path in paths:
            self._kept.pop(path, None)


def forget_files(paths: Iterable[Path]) -> None:
    """Drop what every cache kept of ``paths`` (no longer listed: removed, renamed)."""
    paths = tuple(paths)
    for cache in _ALL:
        cache.forget(paths)


def unreadable(path: Path, error: OSError) -> str:
    return f"{path.name} cannot be read: {error.strerror or error}"


def problem_of(
    problems: PerFileVersion[str | None], path: Path, stat: os.stat_result | None = None
) -> str | None:
    """What ``problems`` reads of the file at ``path`` as ``stat`` found it (None: as it is
    now, statted here) (why it would not load; None: whole), or why it cannot be read."""
    if stat is None:
        try:
            stat = path.stat()
        except OSError as error:
            return unreadable(path, error)
    try:
        return problems(path, stat)
    except Exception as error:
        # A file no check foresaw (a hostile header, a reader's oversight) is left out, said
        # once (kept for its version): never every listing of its folder failing.
        log.info("reading %s failed", path, exc_info=True)
        return problems.keep(path, stat, f"{path.name} cannot be read: {error!r}")
