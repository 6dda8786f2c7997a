"""Deleting what Easel stored under ``EASEL_DATA_DIR`` (pictures, uploads): only ever inside
the folder it belongs to, whatever a database row or a file name says. Blocking file work: run
it with ``asyncio.to_thread``."""

from __future__ import annotations

import shutil
from collections.abc import Collection, Iterable
from pathlib import Path


def remove_inside(root: Path, paths: Iterable[str]) -> int:
    """Delete each file of ``paths`` that lies inside ``root``, and its folder once empty
    (``root`` itself stays); returns how many files were deleted."""
    removed = 0
    resolved_root = root.resolve()
    for text in paths:
        path = Path(text).resolve()
        if resolved_root not in path.parents:
            continue
        if path.is_file():
            path.unlink()
            removed += 1
        folder = path.parent
        if folder != resolved_root and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return removed


def remove_unused_uploads(inputs_dir: Path, written_before: float, in_use: Collection[str]) -> int:
    """Delete the uploads no job in the journal reads, last written before ``written_before``
    (a Unix time: an upload is saved just before its job is journaled); returns how many."""
    if not inputs_dir.is_dir():
        return 0
    used = {Path(text).resolve() for text in in_use}
    unused = [
        str(path)
        for path in inputs_dir.iterdir()
        if path.is_file() and path.stat().st_mtime < written_before and path.resolve() not in used
    ]
    return remove_inside(inputs_dir, unused)


def remove_unused_results(
    images_dir: Path, written_before: float, jobs: Collection[str], in_use: Collection[str]
) -> int:
    """Delete the result folders (``images/<job id>/``) of jobs no longer in the journal,
    unless a job in the journal reads one of their pictures (a variation of it); only those
    last written before ``written_before``, so a job journaled after ``jobs`` was read keeps
    its pictures. Returns how many pictures went."""
    if not images_dir.is_dir():
        return 0
    root = images_dir.resolve()
    kept = {Path(text).resolve().parent for text in in_use} | {root / job for job in jobs}
    removed = 0
    for folder in images_dir.iterdir():
        if (
            folder.is_symlink()
            or not folder.is_dir()
            or folder.resolve() in kept
            or folder.stat().st_mtime >= written_before
        ):
            continue
        removed += sum(1 for entry in folder.iterdir() if entry.is_file())
        shutil.rmtree(folder)
    return removed
