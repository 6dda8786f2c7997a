"""Easel itself, built by its composition root, running against the fake Discord."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from bot.app import EaselBot, build
from bot.discord_endpoints import point_discord_at
from bot.settings import DISCORD_API_BASE_DEFAULT, DISCORD_GATEWAY_URL_DEFAULT, Settings
from inference.segment import write_tiny_clipseg
from inference.worker import EngineFactory
from tests.conftest import ErrorLogs
from tests.fake_discord import FakeDiscord
from tests.fake_discord.fixtures import running_bot

StartEasel = Callable[[], AbstractAsyncContextManager[EaselBot]]


def easel_settings(
    fake: FakeDiscord, data_dir: Path, models_dir: Path, wildcards_dir: Path | None = None
) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        EASEL_WILDCARDS_DIR=str(wildcards_dir or data_dir.parent / "wildcards"),
        DISCORD_TOKEN=fake.token,
        DISCORD_API_BASE=fake.api_base,
        DISCORD_GATEWAY_URL=fake.gateway_url,
        EASEL_DEV_GUILD_ID=str(fake.guild_id),
        EASEL_DATA_DIR=str(data_dir),
        EASEL_MODELS_DIR=str(models_dir),
        EASEL_DEVICES="cpu",
    )


@pytest.fixture
def discord_endpoints_restored() -> Iterator[None]:
    """For a test of ``app.run``, which points discord.py at the fake for good (a process runs
    it once): discord.py's own endpoints put back after it."""
    yield
    point_discord_at(DISCORD_API_BASE_DEFAULT, DISCORD_GATEWAY_URL_DEFAULT)


@pytest.fixture
def easel_settings_for_test(
    fake_discord: FakeDiscord, tmp_path: Path, tiny_models_dir: Path
) -> Settings:
    return easel_settings(fake_discord, tmp_path / "data", tiny_models_dir, tmp_path / "wildcards")


@pytest.fixture(scope="module")
def region_models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_models_dir: Path) -> Path:
    """The tiny checkpoint beside a tiny random CLIPSeg in ``clipseg/``."""
    directory = tmp_path_factory.mktemp("region-models")
    (directory / "tiny").symlink_to(tiny_models_dir / "tiny", target_is_directory=True)
    write_tiny_clipseg(directory / "clipseg")
    return directory


@pytest.fixture
def start_easel(
    fake_discord: FakeDiscord, easel_settings_for_test: Settings, error_logs: ErrorLogs
) -> Callable[..., AbstractAsyncContextManager[EaselBot]]:
    """``async with start_easel() as bot`` runs Easel (real engine unless one is given).

    Every start uses the same data folder, so leaving the block and entering again is a restart.
    """

    @asynccontextmanager
    async def start(engine_factory: EngineFactory | None = None) -> AsyncIterator[EaselBot]:
        bot = build(easel_settings_for_test, engine_factory)
        async with running_bot(fake_discord, bot):
            yield bot

    return start
