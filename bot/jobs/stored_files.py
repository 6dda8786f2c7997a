"""What Easel stores under ``EASEL_DATA_DIR`` (pictures, uploads): named in the database by
their path inside it (``stored_name``, ``stored_file``: the folder may move, or be restored
elsewhere), and deleted only ever inside the folder it belongs to, whatever a database row or
a file name says. Blocking file work: run it with ``asyncio.to_thread``."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from collections.abc import Collection, Iterable
from pathlib import Path, PurePosixPath

from bot.jobs.broker.wire import picture_paths, with_picture_paths
from inference.types import RenderRequest

# The folders of ``EASEL_DATA_DIR`` whose files the database names by their path inside it.
STORED_FOLDERS = ("images", "inputs")
# What ``stored_file`` reads for a name outside them: no file of Easel's is named so (a job's
# folder is its id, an upload a random hex name), so it reads as missing.
_OUTSIDE = "named-outside-the-data-folder"
# Parts that make a name other than plain: it is resolved to tell where it leads.
_NOT_PLAIN = frozenset({"", ".", ".."})

log = logging.getLogger(__name__)


def stored_name(data_dir: Path, path: str | Path) -> str:
    """How the database names ``path``: a file under ``data_dir``'s ``images/`` or ``inputs/``
    by its path there (``images/<job id>/0.png``), so that the data folder may move; any other
    path as it is given."""
    try:
        inside = Path(path).absolute().relative_to(data_dir.absolute())
    except ValueError:
        return str(path)
    if len(inside.parts) > 1 and inside.parts[0] in STORED_FOLDERS:
        return inside.as_posix()
    return str(path)


def stored_file(data_dir: Path, stored: str) -> Path:
    """The file the database names ``stored`` (``stored_name``'s), to read: one that resolves
    inside ``data_dir``'s ``images/`` or ``inputs/``. Any other (a ``..`` part, a row older
    than schema 33 that its migration did not recognise, a tampered database) is read as a
    missing file: a read is as strict as a delete (``remove_inside``). A plain name (every one
    Easel writes) is taken as it is written, without a look at the disk."""
    path = _named_file(data_dir, stored)
    if plainly_inside(stored) or _lies_inside(data_dir, path):
        return path
    log.warning("a stored file named outside the data folder is read as missing: %r", stored)
    return data_dir / STORED_FOLDERS[0] / _OUTSIDE


def plainly_inside(stored: str) -> bool:
    """Whether ``stored`` (as the database names files) is a plain name inside ``images/`` or
    ``inputs/``: relative, with no empty, ``.`` or ``..`` part and no NUL. It lies inside
    whatever the disk holds (only someone who may already write the data folder could put a
    link there); any other name is resolved (``stored_file``; ``easel doctor``'s query, which
    asks the database for the names this is false for)."""
    folder, *rest = stored.split("/")
    return (
        folder in STORED_FOLDERS
        and bool(rest)
        and "\0" not in stored
        and _NOT_PLAIN.isdisjoint(rest)
    )


def named_outside(data_dir: Path, names: Iterable[str]) -> list[str]:
    """Those of ``names`` (as the database names files, none of them plain: ``plainly_inside``)
    that ``stored_file`` reads as missing: outside ``data_dir``'s ``images/`` and ``inputs/``
    (``easel doctor``)."""
    return [name for name in names if not _lies_inside(data_dir, _named_file(data_dir, name))]


def _lies_inside(data_dir: Path, path: Path) -> bool:
    try:
        resolved = path.resolve()
    except (OSError, ValueError, RuntimeError):  # a NUL byte; a link loop (RuntimeError: 3.11)
        return False
    return any((data_dir / folder).resolve() in resolved.parents for folder in STORED_FOLDERS)


def _named_file(data_dir: Path, stored: str) -> Path:
    """The file the database names ``stored``, wherever it is: under ``data_dir`` where it is
    named inside it; any other name as it is written. Deletes check where it lies themselves;
    reads take ``stored_file``."""
    name = PurePosixPath(stored)
    if not name.is_absolute() and len(name.parts) > 1 and name.parts[0] in STORED_FOLDERS:
        return data_dir.joinpath(*name.parts)
    return Path(stored)


def stored_request(data_dir: Path, request: RenderRequest) -> RenderRequest:
    """``request`` naming its pictures as the database names them (``stored_name``)."""
    named = picture_paths(request)
    return with_picture_paths(
        request, {field: stored_name(data_dir, path) for field, path in named.items()}
    )


def journaled_request(data_dir: Path, request_json: str) -> RenderRequest:
    """A journaled request (``stored_request``'s) naming the files of its pictures."""
    request = RenderRequest.from_json(request_json)
    named = picture_paths(request)
    return with_picture_paths(
        request, {field: str(stored_file(data_dir, path)) for field, path in named.items()}
    )


def remove_inside(root: Path, paths: Iterable[str]) -> int:
    """Delete each file of ``paths`` (as the database names them: ``stored_file``, ``root``
    being ``images/`` or ``inputs/``) that lies inside ``root``, and its folder once empty
    (``root`` itself stays); returns how many files were deleted."""
    removed = 0
    resolved_root = root.resolve()
    for text in paths:
        path = _named_file(root.parent, text).resolve()
        if resolved_root not in path.parents:
            continue
        if path.is_file():
            path.unlink()
            removed += 1
        folder = path.parent
        if folder != resolved_root and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return removed


def files_left(data_dir: Path, paths: Iterable[str]) -> list[str]:
    """Those of ``paths`` (as the database names them) whose file is still there."""
    return [text for text in paths if _named_file(data_dir, text).is_file()]


def remove_unused_uploads(inputs_dir: Path, written_before: float, in_use: Collection[str]) -> int:
    """Delete the uploads no job in the journal reads, last written before ``written_before``
    (a Unix time: an upload is saved just before its job is journaled); returns how many."""
    if not inputs_dir.is_dir():
        return 0
    used = {_named_file(inputs_dir.parent, text).resolve() for text in in_use}
    unused = [
        str(path)
        for path in inputs_dir.iterdir()
        if path.is_file() and path.stat().st_mtime < written_before and path.resolve() not in used
    ]
    return remove_inside(inputs_dir, unused)


def pictures_by_folder(
    images_dir: Path, paths: Iterable[str], job_ids: Iterable[str] = ()
) -> dict[Path, set[str]]:
    """The result folders (``images/<job id>/``, resolved) that ``paths`` lie in, and those of
    ``job_ids`` that exist (a folder no ``images`` row names: its pictures' record refused, a
    crash's), each with the paths of the pictures it holds, written as ``paths`` write theirs
    (a job reads another job's picture by the path that job's row gave it; a folder of
    ``job_ids`` as the database names it: ``stored_name``). ``paths`` are the database's
    names (``stored_file``); a path outside ``images/`` is left out."""
    root = images_dir.resolve()
    folders: dict[Path, set[str]] = {}

    def pictures_in(folder: Path, written_as: Path) -> set[str]:
        named = folders.get(folder)
        if named is None:
            named = folders[folder] = set()
            # Gone already (its job's /forget-me, a delivery given up): nothing to name.
            with contextlib.suppress(FileNotFoundError):
                named.update(str(written_as / entry.name) for entry in os.scandir(folder))
        return named

    for text in paths:
        folder = _named_file(images_dir.parent, text).resolve().parent
        if folder.parent == root:
            pictures_in(folder, Path(text).parent).add(text)
    for job_id in job_ids:
        folder = (root / job_id).resolve()
        if folder.parent == root and folder.is_dir():
            pictures_in(folder, Path(stored_name(images_dir.parent, images_dir / job_id)))
    return folders


def folders_of(data_dir: Path, paths: Iterable[str]) -> set[Path]:
    """The folders ``paths`` (as the database names them) lie in, resolved."""
    return {_named_file(data_dir, text).resolve().parent for text in paths}


class ResultFolders:
    """A listing of ``images/`` (a folder per job kept: 600,000 at 30 days, too many to hold at
    once) read a chunk at a time, each chunk on a worker thread. One chunk is read at a time,
    and ``close`` waits for the one being read (a caller cancelled meanwhile would otherwise
    close the listing under it)."""

    def __init__(self, images_dir: Path) -> None:
        self._listing = os.scandir(images_dir)
        self._reading = threading.Lock()

    def next_old(self, written_before: float, at_most: int) -> list[Path]:
        """The next ``at_most`` result folders (``images/<job id>/``) last written before
        ``written_before``; fewer once the listing is over."""
        folders: list[Path] = []
        with self._reading:
            for entry in self._listing:
                if entry.is_dir(follow_symlinks=False) and _written_before(entry, written_before):
                    folders.append(Path(entry.path))
                    if len(folders) == at_most:
                        break
        return folders

    def close(self) -> None:
        with self._reading:
            self._listing.close()


def _written_before(entry: os.DirEntry[str], moment: float) -> bool:
    """Whether ``entry`` was last written before ``moment``; a folder gone since the listing
    read it (a /forget-me, a delivery given up, a chunk later) was not."""
    try:
        return entry.stat(follow_symlinks=False).st_mtime < moment
    except FileNotFoundError:
        return False


def remove_result_folders(folders: Iterable[Path], kept: Collection[Path]) -> int:
    """Delete the result ``folders`` of jobs no longer in the journal (or that the next
    pruning round removes: ``retention``'s start on a full disk), except those in
    ``kept`` (resolved: a job in the journal reads one of their pictures, a variation of
    it). Returns how many pictures went; a folder removed meanwhile by another path is
    skipped."""
    removed = 0
    for folder in folders:
        if folder.resolve() in kept:
            continue
        try:
            pictures = sum(1 for entry in folder.iterdir() if entry.is_file())
            shutil.rmtree(folder)
        except FileNotFoundError:
            continue
        removed += pictures
    return removed
