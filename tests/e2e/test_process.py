"""``python -m bot`` as a real process against the fake Discord: SIGTERM loses no job."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.e2e.helpers import has_picture
from tests.fake_discord import FakeDiscord

STOP_LIMIT_S = 30  # the contract: SIGTERM stops the bot within 30 s
JOBS = 3


@asynccontextmanager
async def bot_process(
    fake: FakeDiscord, data_dir: Path, models_dir: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {
        **os.environ,
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_BASE": fake.api_base,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "EASEL_DEV_GUILD_ID": str(fake.guild_id),
        "EASEL_DATA_DIR": str(data_dir),
        "EASEL_MODELS_DIR": str(models_dir),
        "EASEL_DEVICES": "cpu",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", env=env, cwd=data_dir.parent
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


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

    async with bot_process(fake_discord, data_dir, tiny_models_dir):
        results = [await handle.wait_for_original(has_picture, timeout=90) for handle in handles]
    assert [len(message.attachments) for message in results] == [1] * JOBS
    assert len({message.id for message in results}) == JOBS
