"""Fixtures for the fake Discord's self-tests: the fake itself and a studio bot running on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.fake_discord import FakeDiscord
from tests.fake_discord.fixtures import fake_discord, running_bot
from tests.fake_discord_selftest.studio import StudioBot

__all__ = ["fake_discord", "studio_bot"]


@pytest_asyncio.fixture
async def studio_bot(fake_discord: FakeDiscord) -> AsyncIterator[StudioBot]:
    async with running_bot(fake_discord, StudioBot()) as client:
        assert isinstance(client, StudioBot)
        yield client
