"""One ``easel run`` per data folder: a second start on it refuses in one line naming the
folder and the running one's pid and host, and leaves the running one's job alone; a holder
killed with SIGKILL leaves no lock behind, and a start that fails none either; a folder with
no free inode is locked all the same."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from bot import app
from bot.discord_endpoints import point_discord_at
from bot.settings import DISCORD_API_BASE_DEFAULT, DISCORD_GATEWAY_URL_DEFAULT
from bot.single_instance import DataDirInUse, hold_data_dir
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, bot_process, imagine
from tests.e2e.test_hard_starts import needs_mount_namespaces
from tests.fake_discord import FakeDiscord
from tests.support.engines import HeldEngine, InstantEngine
from tests.support.pictures import has_picture

START_LIMIT_S = 60  # a process's imports and start, on a busy CI machine


@pytest.fixture(autouse=True)
def discord_endpoints_restored() -> Iterator[None]:
    """``app.run`` points discord.py at the fake for good (a process runs it once)."""
    yield
    point_discord_at(DISCORD_API_BASE_DEFAULT, DISCORD_GATEWAY_URL_DEFAULT)


async def stopped(running: asyncio.Task[int]) -> int:
    """``app.run`` in this process, stopped as a supervisor stops it (SIGTERM)."""
    os.kill(os.getpid(), signal.SIGTERM)
    async with asyncio.timeout(30):
        return await running


async def test_a_second_start_on_the_same_data_folder_refuses_and_leaves_the_running_job(
    fake_discord: FakeDiscord,
    tiny_models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, engine = fake_discord, HeldEngine()
    monkeypatch.setattr(app, "engine_factory_for", lambda _settings: lambda _device: engine)
    data_dir = tmp_path / "data"
    running = asyncio.create_task(app.run(easel_settings(fake, data_dir, tiny_models_dir)))
    with engine:
        await fake.wait_until_identified(timeout=START_LIMIT_S)
        handle = await fake.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        await handle.wait_for_ack()
        assert await asyncio.to_thread(engine.started.wait, 30)
        async with bot_process(
            fake, data_dir, tiny_models_dir, log=asyncio.subprocess.PIPE
        ) as second:
            async with asyncio.timeout(START_LIMIT_S):
                _, said = await second.communicate()
        assert second.returncode == 2, said
        assert "Traceback" not in said.decode()
        assert said.decode().splitlines()[-1] == (  # after the log's lines of the start
            f"easel run: error: another Easel is running on EASEL_DATA_DIR={data_dir.resolve()} "
            f"(pid {os.getpid()} on host {socket.gethostname()}): stop it first, or give this "
            "one another folder"
        )
        engine.released.set()
        posted = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    assert len(posted.attachments) == 1
    assert [request.prompt for request in engine.rendered] == ["a cat"]
    assert await stopped(running) == 0
    hold_data_dir(data_dir).release()  # the stop let the lock go


async def test_a_start_after_the_holder_was_killed_is_not_refused(
    fake_discord: FakeDiscord,
    tiny_models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, data_dir = fake_discord, tmp_path / "data"
    async with bot_process(fake, data_dir, tiny_models_dir) as crashed:
        await fake.wait_until_identified(timeout=START_LIMIT_S)
        with pytest.raises(DataDirInUse, match=f"pid {crashed.pid}"):
            hold_data_dir(data_dir)
        crashed.kill()  # SIGKILL: nothing of its own runs
        await crashed.wait()
    engine = InstantEngine()
    monkeypatch.setattr(app, "engine_factory_for", lambda _settings: lambda _device: engine)
    running = asyncio.create_task(app.run(easel_settings(fake, data_dir, tiny_models_dir)))
    try:
        await fake.wait_until_identified(timeout=START_LIMIT_S, times=2)
        assert (await imagine(fake, "a dog")).attachments
    finally:
        assert await stopped(running) == 0


async def test_a_refused_start_leaves_no_log_handler_and_a_failed_one_no_lock(
    fake_discord: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir, logged_to = tmp_path / "data", list(logging.getLogger().handlers)
    settings = easel_settings(fake_discord, data_dir, tmp_path)
    data_dir.mkdir()
    held = hold_data_dir(data_dir)
    with pytest.raises(DataDirInUse):
        await app.run(settings)
    assert logging.getLogger().handlers == logged_to
    held.release()

    def broken_build(*_: object) -> NoReturn:
        raise RuntimeError("a start that fails before it connects")

    monkeypatch.setattr(app, "build", broken_build)
    with pytest.raises(RuntimeError):
        await app.run(settings)
    hold_data_dir(data_dir).release()  # not left held by the failed start


# A folder on a tmpfs of a mount namespace of its own, its inodes all taken; then the command.
NO_FREE_INODES_SCRIPT = """set -e
mount -t tmpfs -o size=1m,nr_inodes=8 tmpfs "$1"
i=0; while touch "$1/f$i" 2>/dev/null; do i=$((i+1)); done
shift
exec "$@"
"""
TAKES_THE_LOCK_TWICE = (
    "import sys; from pathlib import Path; "
    "from bot.single_instance import DataDirInUse, hold_data_dir; "
    "held = hold_data_dir(Path(sys.argv[1]))\n"
    "try: hold_data_dir(Path(sys.argv[1]))\n"
    "except DataDirInUse as refusal: print(refusal)"
)


@needs_mount_namespaces
def test_a_data_folder_without_a_free_inode_is_locked_all_the_same(tmp_path: Path) -> None:
    """What a start must do before retention makes room: nothing there to create."""
    namespace = ("unshare", "--user", "--map-root-user", "--mount", "sh", "-c")
    script = (NO_FREE_INODES_SCRIPT, "sh", str(tmp_path))
    took = subprocess.run(
        [*namespace, *script, sys.executable, "-c", TAKES_THE_LOCK_TWICE, str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        timeout=START_LIMIT_S,
    )
    assert (took.returncode, took.stderr) == (0, "")
    assert took.stdout.splitlines() == [
        f"another Easel is running on EASEL_DATA_DIR={tmp_path} (pid unknown): stop it first, "
        "or give this one another folder"
    ]
