"""The data folder's lock: held on the folder itself, so that neither a file another user owns
nor a full disk keeps a start from taking it; the holder's file is for the message alone; a
folder that cannot be opened is one line naming it; a file system without locks is a warning."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from bot import single_instance
from bot.settings import SettingsError
from bot.single_instance import HOLDER_FILE_NAME, DataDirInUse, hold_data_dir

Opener = Callable[..., int]


def refusing(opens: Callable[[str], bool]) -> Opener:
    """``os.open`` refusing (as for a file or folder of another user) the paths ``opens``
    picks, opening the others."""
    real_open = os.open

    def open_or_refuse(path: str | os.PathLike[str], flags: int, *args: int) -> int:
        if opens(os.fspath(path)):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_open(path, flags, *args)

    return open_or_refuse


def this_process() -> str:
    return f"pid {os.getpid()} on host {socket.gethostname()}"


def test_a_second_hold_refuses_naming_the_folder_and_the_holder(tmp_path: Path) -> None:
    held = hold_data_dir(tmp_path)
    (tmp_path / "link").symlink_to(tmp_path)
    for other_name in (tmp_path, tmp_path / "link"):
        with pytest.raises(DataDirInUse) as refusal:
            hold_data_dir(other_name)
        assert str(refusal.value) == (
            f"another Easel is running on EASEL_DATA_DIR={tmp_path.resolve()} "
            f"({this_process()}): stop it first, or give this one another folder"
        )
    held.release()
    hold_data_dir(tmp_path).release()


def test_files_the_start_cannot_write_do_not_keep_it_from_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user's files there (one ``sudo easel run``): only the folder opens."""
    monkeypatch.setattr(os, "open", refusing(lambda path: path != str(tmp_path)))
    held = hold_data_dir(tmp_path)
    with pytest.raises(DataDirInUse, match=r"\(pid unknown\)"):
        hold_data_dir(tmp_path)
    held.release()


def test_a_dead_holders_file_is_never_read_as_the_new_holders(tmp_path: Path) -> None:
    stale = tmp_path / HOLDER_FILE_NAME
    stale.write_text("1 elsewhere\n")
    stale.chmod(0o400)
    held = hold_data_dir(tmp_path)
    with pytest.raises(DataDirInUse, match=f"\\({this_process()}\\)"):
        hold_data_dir(tmp_path)
    held.release()


def test_a_folder_that_cannot_be_opened_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "open", refusing(lambda path: path == str(tmp_path)))
    with pytest.raises(SettingsError) as refusal:
        hold_data_dir(tmp_path)
    assert str(refusal.value) == (
        f"EASEL_DATA_DIR={str(tmp_path)!r}: cannot open the folder to lock it (Permission denied)"
    )


def test_a_file_system_without_locks_warns_and_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(single_instance.fcntl, "flock", no_locks)
    with caplog.at_level("WARNING", logger="bot.single_instance"):
        hold_data_dir(tmp_path).release()
    assert [record.getMessage() for record in caplog.records] == [
        f"the folder cannot be locked ({os.strerror(errno.ENOLCK)}): nothing stops a second "
        f"Easel on EASEL_DATA_DIR={tmp_path.resolve()}"
    ]
