"""Starts on a bad day: Discord not yet reachable (a reboot), a full disk (the data folder on a
small tmpfs of a mount namespace of its own), and what the data folder's files let other local
users read."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import discord
import pytest

from bot import app
from bot.cli.health import check_health
from bot.discord_endpoints import point_discord_at
from bot.settings import DISCORD_API_BASE_DEFAULT, DISCORD_GATEWAY_URL_DEFAULT
from db import jobs as journal
from db.database import connect
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import bot_process, has_picture
from tests.fake_discord import FakeDiscord
from tests.integration.test_stored_data import DAY, Data

STOP_LIMIT_S = 30  # the contract: SIGTERM stops the bot within 30 s


@pytest.fixture(autouse=True)
def discord_endpoints_restored() -> Iterator[None]:
    """``app.run`` points discord.py at the fake for good (a process runs it once)."""
    yield
    point_discord_at(DISCORD_API_BASE_DEFAULT, DISCORD_GATEWAY_URL_DEFAULT)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LogLines(logging.Handler):
    """The messages of ``bot.app``'s records, and an event set at each one that ``wanted``."""

    def __init__(self, wanted: str) -> None:
        super().__init__(logging.DEBUG)
        self.wanted, self.seen, self.lines = wanted, asyncio.Event(), list[str]()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        if self.wanted in self.lines[-1]:
            self.seen.set()

    async def next_one(self) -> None:
        self.seen.clear()
        async with asyncio.timeout(30):
            await self.seen.wait()


@pytest.fixture
def unreachable_log() -> Iterator[LogLines]:
    lines = LogLines("Discord unreachable")
    logger = logging.getLogger("bot.app")
    logger.addHandler(lines)
    yield lines
    logger.removeHandler(lines)


# What a proxy in front of Discord answers a 502 with: a page, not a reason.
PROXY_PAGE = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    "</body>\r\n</html>\r\n"
)


async def test_healthz_says_why_discord_is_not_reached_in_one_short_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the first login try hangs, /healthz says it is connecting (review R_L5, 7);
    once Discord answers a 502 with a proxy's HTML page, it says the status and reason, not
    the page (finding 3); an error of many lines gives its first, cut to a length."""
    metrics_port = free_port()
    fake = FakeDiscord(port=free_port())  # never started: the login is stubbed
    settings = easel_settings(fake, tmp_path / "data", tmp_path / "models").model_copy(
        update={"metrics_addr": f"127.0.0.1:{metrics_port}"}
    )
    tries: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()

    async def login(_client: discord.Client, _token: str) -> None:
        answered = asyncio.get_running_loop().create_future()
        await tries.put(answered)
        await answered

    monkeypatch.setattr(discord.Client, "login", login)
    monkeypatch.setattr(app, "LOGIN_RETRY_FIRST_S", 0.0)
    bot = app.build(settings)
    logging_in = asyncio.create_task(bot.login("token"))
    try:

        async def said_after(error: Exception) -> str:
            (await tries.get()).set_exception(error)
            waiting = await tries.get()  # the next try hangs: the reason stays
            _, said = await asyncio.to_thread(check_health, "127.0.0.1", metrics_port)
            await tries.put(waiting)
            return said

        first = await tries.get()
        _, said = await asyncio.to_thread(check_health, "127.0.0.1", metrics_port)
        assert said.endswith(": 503 waiting for Discord: connecting"), said
        await tries.put(first)
        bad_gateway = SimpleNamespace(status=502, reason="Bad Gateway")
        said = await said_after(discord.DiscordServerError(bad_gateway, PROXY_PAGE))
        assert said.endswith(": 503 waiting for Discord: 502 Bad Gateway"), said
        long_line = "x" * 500
        said = await said_after(aiohttp.ClientConnectionError(f"{long_line}\nsecond line"))
        reason = said.split(": 503 waiting for Discord: ")[1]
        assert "\n" not in said and reason == "x" * (app.UNREACHABLE_REASON_CHARS - 1) + "…"
    finally:
        logging_in.cancel()
        await bot.close()


async def test_discord_unreachable_at_start_is_tried_again_until_it_answers(
    tmp_path: Path, unreachable_log: LogLines
) -> None:
    """Tried again for as long as it takes; meanwhile /healthz is up and says why it is not
    ready (a container's health check tells "waiting for Discord" from dead), until then."""
    port, metrics_port = free_port(), free_port()
    fake = FakeDiscord(port=port)  # not started yet
    settings = easel_settings(fake, tmp_path / "data", tmp_path / "models").model_copy(
        update={"metrics_addr": f"127.0.0.1:{metrics_port}"}
    )
    running = asyncio.create_task(app.run(settings))
    await unreachable_log.next_one()
    await unreachable_log.next_one()  # tried again, not ended
    assert not running.done()
    first, second = [line for line in unreachable_log.lines if "Discord unreachable" in line]
    assert f"127.0.0.1:{port}" in first
    assert first.endswith("retrying in 1 s") and second.endswith("retrying in 2 s")
    healthy, said = await asyncio.to_thread(check_health, "127.0.0.1", metrics_port)
    assert not healthy and ": 503 waiting for Discord: " in said and f"127.0.0.1:{port}" in said
    async with fake:
        await fake.wait_until_identified(timeout=60)
        assert fake.registered_commands(guild=True)
        # Logged in: "ok" once ready (a moment after the identify), no longer waiting.
        _, said = await asyncio.to_thread(check_health, "127.0.0.1", metrics_port)
        assert said.endswith(("/healthz: ok", "/healthz: 503 starting or stopping")), said
        os.kill(os.getpid(), signal.SIGTERM)
        async with asyncio.timeout(STOP_LIMIT_S):
            assert await running == 0


async def test_a_stop_while_discord_is_unreachable_ends_the_start_at_once(
    tmp_path: Path, unreachable_log: LogLines
) -> None:
    never_started = FakeDiscord(port=free_port())
    settings = easel_settings(never_started, tmp_path / "data", tmp_path / "models")
    running = asyncio.create_task(app.run(settings))
    await unreachable_log.next_one()
    asked = time.monotonic()
    os.kill(os.getpid(), signal.SIGTERM)
    async with asyncio.timeout(STOP_LIMIT_S):
        assert await running == 0
    assert time.monotonic() - asked < 2


def private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


async def test_the_database_and_pictures_are_private_to_easels_user(
    fake_discord: FakeDiscord, tmp_path: Path, tiny_models_dir: Path
) -> None:
    data_dir = tmp_path / "data"
    old_umask = os.umask(0o022)  # a default that lets every local user read
    try:
        async with bot_process(fake_discord, data_dir, tiny_models_dir) as bot:
            await fake_discord.wait_until_identified(timeout=60)
            made = await fake_discord.invoke_command(
                "imagine", {"prompt": "a cat", "seed": 1, "steps": 2, "size": "64x64"}
            )
            await made.wait_for_original(has_picture, timeout=120)
            bot.send_signal(signal.SIGTERM)
            async with asyncio.timeout(STOP_LIMIT_S):
                assert await bot.wait() == 0
    finally:
        os.umask(old_umask)
    pictures = list((data_dir / "images").rglob("*.png"))
    assert pictures
    stored = [data_dir, data_dir / "easel.sqlite3", data_dir / "images", *pictures]
    stored += [picture.parent for picture in pictures]
    assert [path for path in stored if not private(path)] == []


# Free space at start past what the data takes: less than one of the pictures filling the rest.
SLACK_BYTES = 256 * 1024
# ``bot_process`` runs ``python ARGS``: these run the command after them instead.
EXEC_REST = ("-c", "import os, sys; os.execvp(sys.argv[1], sys.argv[1:])")
FULL_DISK_SCRIPT = """set -e
mount --bind "$1" "$2"
mount -t tmpfs -o size="$3" tmpfs "$1"
cp -a "$2/." "$1/"
cat /dev/zero > "$4" 2>/dev/null || true
shift 4
exec "$@"
"""


def mount_namespaces() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "--user", "--map-root-user", "--mount", "true"]
    return subprocess.run(probe, check=False, capture_output=True).returncode == 0


needs_mount_namespaces = pytest.mark.skipif(
    not mount_namespaces(), reason="needs unshare and user namespaces for a small tmpfs"
)


# A process that dies with the database open, after reading it.
DIES_READING = (
    "import os, sqlite3, sys; sqlite3.connect(sys.argv[1]).execute('SELECT 1 FROM jobs'); "
    "os._exit(0)"
)


async def journal_of_a_full_disk(data_dir: Path, finished_at: float, *, crashed: bool) -> str:
    """Three jobs delivered at ``finished_at`` with their pictures and uploads, and a job the
    last process left running (as when the disk filled under a render); returns the folder of
    the first job's pictures. ``crashed``: the database's log and shared-memory files left
    as a process that died with it open leaves them (else closed cleanly, there are none)."""
    conn = await connect(data_dir / "easel.sqlite3")
    try:
        data = Data(conn, data_dir)
        queue = data.queue()
        await queue.start()
        made = [await data.finished_job(queue, finished_at + n) for n in range(3)]
        await queue.stop()
        running = await data.waiting_job(time.time())
        await journal.mark_running(conn, [running], time.time())
    finally:
        await conn.close()
    if crashed:
        reader = await asyncio.create_subprocess_exec(
            sys.executable, "-c", DIES_READING, data_dir / "easel.sqlite3"
        )
        assert await reader.wait() == 0
        assert (data_dir / "easel.sqlite3-shm").is_file()
    return str(data.images / made[0])


def used_bytes(folder: Path) -> int:
    return sum(path.lstat().st_blocks * 512 for path in folder.rglob("*"))


@asynccontextmanager
async def easel_on_a_full_disk(
    fake: FakeDiscord, tmp_path: Path, retention_days: int, *, crashed: bool
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Path]]:
    """``easel run`` on a tmpfs holding the journal above, its last bytes filled by a picture
    of the first job, the jobs finished 10 days ago; and the file its log goes to."""
    data_dir, stash, log = tmp_path / "data", tmp_path / "stash", tmp_path / "easel.log"
    stash.mkdir()
    ten_days_ago = time.time() - 10 * DAY
    filler = await journal_of_a_full_disk(data_dir, ten_days_ago, crashed=crashed)
    filler += "/filler.png"
    size = used_bytes(data_dir) + SLACK_BYTES
    namespace = ("unshare", "--user", "--map-root-user", "--mount", "sh", "-c")
    script = (FULL_DISK_SCRIPT, "sh", str(data_dir), str(stash), str(size), filler)
    easel = (*namespace, *script, sys.executable, "-m", "bot")
    with (
        pytest.MonkeyPatch.context() as environment,
        log.open("w") as log_file,
    ):
        environment.setenv("EASEL_RETENTION_DAYS", str(retention_days))
        async with bot_process(fake, data_dir, tmp_path, *EXEC_REST, *easel, log=log_file) as bot:
            yield bot, log


@needs_mount_namespaces
@pytest.mark.parametrize("crashed", [True, False], ids=["after-a-crash", "after-a-stop"])
async def test_a_start_on_a_full_disk_prunes_old_pictures_first_and_starts(
    fake_discord: FakeDiscord, tmp_path: Path, crashed: bool
) -> None:
    """The operator lowered EASEL_RETENTION_DAYS under the jobs' age and started again."""
    async with easel_on_a_full_disk(fake_discord, tmp_path, 1, crashed=crashed) as (bot, log):
        await fake_discord.wait_until_identified(timeout=120)
        bot.send_signal(signal.SIGTERM)
        async with asyncio.timeout(STOP_LIMIT_S):
            assert await bot.wait() == 0
    lines = log.read_text()
    # Three pictures, the one filling the disk, and the three jobs' uploads.
    assert "pruned before starting, 4 picture(s) and 3 upload(s) of jobs older" in lines
    assert "Traceback" not in lines
    # The job left running is of a server this fake has not: cancelled, and its end not posted.
    fake_discord.take_violations()


@needs_mount_namespaces
@pytest.mark.parametrize("crashed", [True, False], ids=["after-a-crash", "after-a-stop"])
async def test_a_start_on_a_disk_it_cannot_free_says_so_in_one_line(
    fake_discord: FakeDiscord, tmp_path: Path, crashed: bool
) -> None:
    """Nothing is past the retention. After a crash the database opens and the first write
    fails; after a clean stop, opening it does (SQLite's shared-memory file has no room)."""
    async with easel_on_a_full_disk(fake_discord, tmp_path, 30, crashed=crashed) as (bot, log):
        async with asyncio.timeout(120):
            status = await bot.wait()
    lines = log.read_text()
    assert status == 2, lines
    assert "Traceback" not in lines
    last = lines.splitlines()[-1]
    assert last.startswith(f"easel run: error: EASEL_DATA_DIR={tmp_path / 'data'} is full ("), last
    assert re.search(r"is full \(\d+ bytes free; .+\): free space there", last), last
    assert "lower EASEL_RETENTION_DAYS (now 30)" in last
