"""A device lost under Easel (every render raises CUDA's "illegal memory access"), over the
fake Discord: nobody is told of a failure, the jobs stay queued, /healthz says why it is
unhealthy, the bot stops with ``DEVICE_LOST_EXIT_STATUS``, and a restart on a sound device
renders and posts the jobs."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bot.jobs.queue.values import INTERNAL_FAILURE
from bot.settings import Settings
from inference.device_loss import DEVICE_LOST_EXIT_STATUS
from tests.conftest import ErrorLogs
from tests.e2e.conftest import StartEasel
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, bot_process, calls_held, restarted_here
from tests.fake_discord import FakeDiscord
from tests.integration.test_device_lost import ILLEGAL_ACCESS, LostDeviceEngine
from tests.support.metrics import fetch
from tests.support.pictures import has_picture

JOBS = 2


@pytest.fixture
def easel_settings_for_test(easel_settings_for_test: Settings) -> Settings:
    """The e2e settings with the metrics server (/healthz) on a free loopback port."""
    return easel_settings_for_test.model_copy(update={"metrics_addr": "127.0.0.1:0"})


def job_statuses(database: Path) -> list[str]:
    with sqlite3.connect(database) as conn:
        return [str(status) for (status,) in conn.execute("SELECT status FROM jobs")]


async def test_a_lost_device_tells_nobody_keeps_the_jobs_fails_health_and_a_restart_posts(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    error_logs: ErrorLogs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error_logs.expect(r"device cpu lost: CUDA error: an illegal memory access")
    error_logs.expect(r"no device left to render on")
    async with start_easel(lambda _device: LostDeviceEngine()) as bot:
        assert bot.metrics_server is not None
        health = f"http://127.0.0.1:{bot.metrics_server.port}/healthz"
        # The stop the lost device starts waits here, so /healthz is read while it runs.
        stop_held = calls_held(bot.queue, "stop", monkeypatch)
        handles = [
            await fake_discord.invoke_command("imagine", {"prompt": f"lake {n}", **QUICK})
            for n in range(JOBS)
        ]
        for handle in handles:
            await handle.wait_for_ack()
        async with asyncio.timeout(RENDER_TIMEOUT_S):
            # The health check's answer, polled as a container's health check does.
            while (answer := await asyncio.to_thread(fetch, health))[0] == 200:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert answer == (503, f"device cpu lost: {ILLEGAL_ACCESS}\n")
        assert bot.exit_status == DEVICE_LOST_EXIT_STATUS
        stop_held.set()
        async with asyncio.timeout(30):
            while not bot.is_closed():  # noqa: ASYNC110 (it stops itself: its gateway closes)
                await asyncio.sleep(0.05)
    texts = [message.content for message in fake_discord.messages.values()]
    assert not any(INTERNAL_FAILURE[:30] in text or "failed" in text for text in texts), texts
    assert job_statuses(easel_settings_for_test.database_path) == ["queued"] * JOBS

    async with start_easel():  # the restart, on a sound device (the tiny model)
        posted = [
            await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
            for handle in handles
        ]
    assert [len(message.attachments) for message in posted] == [1] * JOBS
    assert job_statuses(easel_settings_for_test.database_path) == ["done"] * JOBS


async def test_easel_run_exits_with_the_lost_device_status_and_a_restart_posts_the_job(
    fake_discord: FakeDiscord, tiny_models_dir: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    lost = ("-m", "tests.e2e.lost_device_main")
    async with bot_process(fake_discord, data_dir, tiny_models_dir, *lost) as bot:
        await fake_discord.wait_until_identified(timeout=60)
        handle = await fake_discord.invoke_command("imagine", {"prompt": "a lake", **QUICK})
        await handle.wait_for_ack()
        async with asyncio.timeout(60):  # it stops by itself: no signal is sent
            status = await bot.wait()
    assert status == DEVICE_LOST_EXIT_STATUS
    assert job_statuses(data_dir / "easel.sqlite3") == ["queued"]

    async with restarted_here(fake_discord, data_dir, tiny_models_dir):
        posted = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    assert len(posted.attachments) == 1
    assert job_statuses(data_dir / "easel.sqlite3") == ["done"]
