"""A broker worker's folder for its jobs' input pictures (``JobFiles``): one a worker under a
shared root, emptied of what ended workers left when one starts, a running one's kept; the root
``easel worker`` gives: tests/unit/test_light_imports.py; real worker processes:
tests/distributed/test_worker_job_files.py. A root it cannot use ends ``easel worker`` with one
line naming it."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from bot.cli.main import main
from bot.jobs.broker.job_files import JobFiles
from tests.unit.test_cli import isolated, one_error_line, umask_restored

__all__ = ["isolated", "umask_restored"]  # autouse: no stray settings, runs in tmp_path


def test_a_start_removes_what_an_ended_worker_left_not_a_running_ones(tmp_path: Path) -> None:
    root = tmp_path / "job-inputs"
    ended, running = JobFiles.take(root), JobFiles.take(root)
    (ended.folder / "init_image").write_bytes(b"a member's upload")
    (running.folder / "init_image").write_bytes(b"another's upload")
    os.close(ended._lock)  # ended abruptly: the system frees its lock, nothing else happens

    started = JobFiles.take(root)

    assert not ended.folder.exists()
    assert (running.folder / "init_image").read_bytes() == b"another's upload"
    assert sorted(p for p in root.iterdir() if p.is_dir()) == sorted(
        [running.folder, started.folder]
    )
    assert (root.stat().st_mode & 0o777, started.folder.stat().st_mode & 0o777) == (0o700, 0o700)
    running.close()
    started.close()
    assert [p.name for p in root.iterdir()] == ["starting.lock"]


def test_easel_worker_names_a_job_inputs_folder_it_cannot_use_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another user's folder (a ``sudo easel worker`` left it) refuses its lock file; here the
    lock is a folder, which no user (root included) opens as a file. Said before the broker
    is asked: nothing listens on its port."""
    root = Path("data/job-inputs")
    (root / "starting.lock").mkdir(parents=True)
    monkeypatch.setenv("EASEL_DATA_DIR", "data")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv("EASEL_QUEUE_URL", f"nats://127.0.0.1:{closed.getsockname()[1]}")

    assert main(["worker"]) == 2
    assert one_error_line(capsys) == (
        f"easel worker: error: {root} cannot hold this worker's job input pictures "
        f"(Is a directory: {root / 'starting.lock'}): give the worker's user that folder, "
        "or remove it"
    )
