"""``python -m bot`` as a real process against the fake Discord: SIGTERM loses no job, and
ends the process within its budget even when a device hangs inside a render step."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, NoReturn

import pytest

from bot import app
from bot.app import EaselBot
from bot.discord_endpoints import point_discord_at
from bot.process_end import SETTINGS_EXIT_STATUS, STUCK_DEVICE_EXIT_STATUS
from bot.settings import DISCORD_API_BASE_DEFAULT, DISCORD_GATEWAY_URL_DEFAULT, Settings
from cogs.region import RegionOffers
from tests.distributed.nats_server import read_until
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import bot_process, has_picture, restarted_here
from tests.fake_discord import FakeDiscord
from tests.support.engines import StuckEngine
from tests.support.exits import Exited, exit_process

STOP_LIMIT_S = 30  # the contract: SIGTERM stops the bot within 30 s
JOBS = 3
# ``tests.e2e.stuck_device_main``'s stop budget, and what its exit may take past it.
STUCK_BUDGET_S = 3.0
EXIT_MARGIN_S = 3.0
HANGING_PROMPT = "a render that never ends"  # hangs in a step (stuck_device_main.HANGS)


async def test_sigterm_finishes_or_requeues_running_jobs_and_a_restart_delivers_all(
    fake_discord: FakeDiscord, tiny_models_dir: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    async with bot_process(fake_discord, data_dir, tiny_models_dir) as bot:
        # Commands are synced in setup_hook, before the bot connects to the gateway.
        await fake_discord.wait_until_identified(timeout=60)
        assert fake_discord.registered_commands(guild=True)
        handles = [
            await fake_discord.invoke_command(
                "imagine", {"prompt": f"job {n}", "seed": n, "steps": 40, "size": "64x64"}
            )
            for n in range(JOBS)
        ]
        for handle in handles:
            await handle.wait_for_ack()
        bot.send_signal(signal.SIGTERM)
        async with asyncio.timeout(STOP_LIMIT_S):
            assert await bot.wait() == 0

    async with restarted_here(fake_discord, data_dir, tiny_models_dir):
        results = [await handle.wait_for_original(has_picture, timeout=90) for handle in handles]
    assert [len(message.attachments) for message in results] == [1] * JOBS
    assert len({message.id for message in results}) == JOBS


@asynccontextmanager
async def stuck_in_a_step(
    fake: FakeDiscord, data_dir: Path, models_dir: Path, budget_s: float, log: IO[str] | int
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Easel with its stop's budget ``budget_s``, its device hanging inside a step of the
    render of the one job it was given (``tests.e2e.stuck_device_main``)."""
    main = ("-m", "tests.e2e.stuck_device_main", str(budget_s))
    async with bot_process(fake, data_dir, models_dir, *main, log=log) as bot:
        await fake.wait_until_identified(timeout=60)
        hanging = {"prompt": HANGING_PROMPT, "seed": 1, "steps": 4, "size": "64x64"}
        await (await fake.invoke_command("imagine", hanging)).wait_for_ack()
        await read_until(bot, "stuck in a step", 60)
        yield bot


def running_jobs(data_dir: Path) -> list[tuple[str, int]]:
    """Each job the journal says is running, with the render attempts counted against it."""
    with sqlite3.connect(data_dir / "easel.sqlite3") as conn:
        rows = conn.execute("SELECT id, attempts FROM jobs WHERE status = 'running'").fetchall()
    return [(str(job_id), int(attempts)) for job_id, attempts in rows]


async def test_a_device_stuck_in_a_step_does_not_hold_the_exit_past_the_stop_and_loses_no_job(
    fake_discord: FakeDiscord, tiny_models_dir: Path, tmp_path: Path
) -> None:
    data_dir, log_path = tmp_path / "data", tmp_path / "easel.log"
    with log_path.open("w") as log:
        async with stuck_in_a_step(
            fake_discord, data_dir, tiny_models_dir, STUCK_BUDGET_S, log
        ) as bot:
            stopping_at = time.monotonic()
            bot.send_signal(signal.SIGTERM)
            async with asyncio.timeout(STUCK_BUDGET_S + EXIT_MARGIN_S):
                status = await bot.wait()
            took_s = time.monotonic() - stopping_at
    assert status == STUCK_DEVICE_EXIT_STATUS
    assert took_s > STUCK_BUDGET_S - 1  # it waited for the step while the stop's clock ran
    # The database was closed (SQLite removes its write-ahead log then), the job journaled
    # running, its attempt kept: it may be what hangs the device, so it renders alone next.
    assert not (data_dir / "easel.sqlite3-wal").exists()
    [(job_id, attempts)] = running_jobs(data_dir)
    assert attempts == 1
    [said] = [line for line in log_path.read_text().splitlines() if "still busy" in line]
    assert f"cpu in job {job_id}" in said
    assert f"exiting with status {STUCK_DEVICE_EXIT_STATUS}" in said

    async with restarted_here(fake_discord, data_dir, tiny_models_dir):
        result = await fake_discord.wait_for_channel_message(
            lambda message: has_picture(message) and HANGING_PROMPT in message.content,
            timeout=90,
        )
    assert len(result.attachments) == 1


async def test_a_stop_while_the_warm_start_still_loads_a_model_ends_at_0_and_loses_no_job(
    fake_discord: FakeDiscord, tiny_models_dir: Path, tmp_path: Path
) -> None:
    """A restart during a warm start's model load (a slow disk) is no stuck device: the
    process ends within its stop without the load, with status 0 (not the stuck device's
    "failed" unit), and the job that waited for the load is queued at the next start."""
    data_dir, log_path = tmp_path / "data", tmp_path / "easel.log"
    main = ("-m", "tests.e2e.stuck_device_main", str(STUCK_BUDGET_S), "load")
    with log_path.open("w") as log:
        async with bot_process(fake_discord, data_dir, tiny_models_dir, *main, log=log) as bot:
            await fake_discord.wait_until_identified(timeout=60)
            waiting = {"prompt": "a job behind the load", "seed": 1, "steps": 2, "size": "64x64"}
            handle = await fake_discord.invoke_command("imagine", waiting)
            await handle.wait_for_ack()
            await read_until(bot, "stuck in a load", 60)
            bot.send_signal(signal.SIGTERM)
            async with asyncio.timeout(STUCK_BUDGET_S + EXIT_MARGIN_S):
                status = await bot.wait()
    assert status == 0
    said = log_path.read_text()
    assert "stopped while cpu was still loading model " in said
    assert ": not waited for (no job was running there)" in said
    assert "still busy" not in said and "render step" not in said
    assert running_jobs(data_dir) == []  # it never started: journaled queued

    async with restarted_here(fake_discord, data_dir, tiny_models_dir):
        result = await handle.wait_for_original(has_picture, timeout=90)
    assert len(result.attachments) == 1


async def test_a_second_stop_signal_ends_the_stop_at_once_and_loses_no_job(
    fake_discord: FakeDiscord, tiny_models_dir: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    log = asyncio.subprocess.STDOUT  # the log, read from the process's output
    async with stuck_in_a_step(fake_discord, data_dir, tiny_models_dir, 60.0, log) as bot:
        bot.send_signal(signal.SIGTERM)
        # Heard first (two signals sent at once may be handled in either order).
        await read_until(bot, "stopping:", EXIT_MARGIN_S)
        bot.send_signal(signal.SIGINT)  # whoever sent it will not wait out the stop
        await read_until(bot, "SIGINT again while stopping", EXIT_MARGIN_S)
        async with asyncio.timeout(EXIT_MARGIN_S):
            status = await bot.wait()
    assert status == -signal.SIGINT  # ended by it, as a shell expects of Ctrl-C
    assert len(running_jobs(data_dir)) == 1

    async with restarted_here(fake_discord, data_dir, tiny_models_dir):
        result = await fake_discord.wait_for_channel_message(
            lambda message: has_picture(message) and HANGING_PROMPT in message.content,
            timeout=90,
        )
    assert len(result.attachments) == 1


def interrupted_exit(status: int) -> NoReturn:
    """``exit_process``, with a Ctrl-C just as the process ends: no KeyboardInterrupt may
    escape there (it would leave the process waiting for the stuck thread)."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
    except KeyboardInterrupt:
        raise AssertionError("a SIGINT as the process ended raised KeyboardInterrupt") from None
    exit_process(status)


def run_with_a_stuck_device(
    fake_discord: FakeDiscord,
    tiny_models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    exit_with: Callable[[int], NoReturn],
) -> tuple[StuckEngine, asyncio.Task[int]]:
    """``app.run`` in this process, its device's engine one deaf to a render's stop, its
    stop's budget ``STUCK_BUDGET_S``; the engine, and the run."""
    stuck = StuckEngine()
    monkeypatch.setattr(app, "STOP_BUDGET_S", STUCK_BUDGET_S)
    monkeypatch.setattr(app, "CLOSING_RESERVE_S", 0.5)
    monkeypatch.setattr(app, "engine_factory_for", lambda _settings: lambda _device: stuck)
    settings = easel_settings(fake_discord, tmp_path / "data", tiny_models_dir)
    return stuck, asyncio.create_task(app.run(settings, exit_process=exit_with))


async def exit_status_once_stuck(
    fake_discord: FakeDiscord,
    stuck: StuckEngine,
    running: asyncio.Task[int],
    caplog: pytest.LogCaptureFixture,
    stop: Callable[[], Awaitable[object]],
) -> int:
    """The status ``running`` (``run_with_a_stuck_device``) exits with when ``stop()`` ends
    it once a render, asked for once it is connected, is stuck in ``stuck``'s step; ``app``'s
    warnings in ``caplog``."""
    try:
        await fake_discord.wait_until_identified(timeout=60)
        hanging = {"prompt": HANGING_PROMPT, "seed": 1, "steps": 2, "size": "64x64"}
        await (await fake_discord.invoke_command("imagine", hanging)).wait_for_ack()
        assert await asyncio.to_thread(stuck.started.wait, 60)
        with caplog.at_level(logging.WARNING, logger=app.__name__):
            await stop()
            async with asyncio.timeout(STUCK_BUDGET_S + EXIT_MARGIN_S):
                with pytest.raises(Exited) as exited:
                    await running
    finally:
        stuck.released.set()
        point_discord_at(DISCORD_API_BASE_DEFAULT, DISCORD_GATEWAY_URL_DEFAULT)
    return exited.value.status


@pytest.mark.parametrize(
    ("stop_fails", "exit_with"),
    [(False, exit_process), (True, exit_process), (False, interrupted_exit)],
    ids=["closed", "stop-failed", "ctrl-c-at-the-exit"],
)
async def test_run_in_a_process_that_goes_on_ends_a_stuck_stop_through_the_exit_it_is_given(
    fake_discord: FakeDiscord,
    tiny_models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    stop_fails: bool,
    exit_with: Callable[[int], NoReturn],
) -> None:
    """``app.run`` inside pytest (as test_first_start's and test_hard_starts' are): a device
    stuck past the stop ends it through ``exit_process``, not ``os._exit``; its warning says
    the database is closed only when it is."""
    built: list[EaselBot] = []
    build = app.build

    def recorded(settings: Settings) -> EaselBot:
        built.append(build(settings))
        return built[-1]

    monkeypatch.setattr(app, "build", recorded)
    if stop_fails:  # after Discord's close, before the database's
        monkeypatch.setattr(RegionOffers, "close", lambda _self: 1 / 0)
    stuck, running = run_with_a_stuck_device(
        fake_discord, tiny_models_dir, tmp_path, monkeypatch, exit_with
    )

    async def sigterm() -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    try:
        status = await exit_status_once_stuck(fake_discord, stuck, running, caplog, sigterm)
    finally:
        for bot in built:
            if not bot.journal_closed:  # the failed stop left it open
                await bot._db.close()  # type: ignore[union-attr]
    assert status == STUCK_DEVICE_EXIT_STATUS
    [said] = [line for line in caplog.messages if "still busy" in line]
    assert ("the database was not closed" in said) is stop_fails
    assert ("the database is closed" in said) is not stop_fails


async def test_a_token_reset_while_a_device_is_stuck_ends_with_the_refused_tokens_status_and_line(
    fake_discord: FakeDiscord,
    tiny_models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The gateway closed 4004 (the token reset) while a device is stuck in a step: the
    process ends as a start with a refused token does (status 2, its one line, no
    traceback), not as a stuck device's (3) or a crash's."""
    stuck, running = run_with_a_stuck_device(
        fake_discord, tiny_models_dir, tmp_path, monkeypatch, exit_process
    )

    async def token_reset() -> None:  # Discord closes the gateway as for a refused IDENTIFY
        await fake_discord.drop_gateway_connection(4004, resumable=False)

    status = await exit_status_once_stuck(fake_discord, stuck, running, caplog, token_reset)
    assert status == SETTINGS_EXIT_STATUS
    [refused] = [r for r in caplog.records if "DISCORD_TOKEN was refused" in r.getMessage()]
    assert refused.getMessage().endswith("into .env: exiting with status 2")
    assert not any(r.exc_info for r in caplog.records if r.name == app.__name__)
