"""Pytest fixtures: a started ``FakeDiscord`` and a helper that runs a discord.py client on it.

Import from ``tests/conftest.py``: ``from tests.fake_discord.fixtures import fake_discord``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import discord
import pytest
import pytest_asyncio

from bot.discord_endpoints import point_discord_at
from bot.settings import DISCORD_API_BASE_DEFAULT, DISCORD_GATEWAY_URL_DEFAULT

from .server import FakeDiscord

DEFAULT_READY_TIMEOUT_S = 10.0


@pytest_asyncio.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A running fake; the test fails at teardown if the bot broke any Discord rule.

    A test that provokes violations on purpose consumes them with ``fake.take_violations()``.
    """
    async with FakeDiscord() as fake:
        yield fake
    if fake.violations:
        listed = "\n  ".join(fake.violations)
        pytest.fail(f"the bot broke Discord's rules:\n  {listed}", pytrace=False)


@contextlib.asynccontextmanager
async def running_bot(
    fake: FakeDiscord, client: discord.Client, *, ready_timeout: float = DEFAULT_READY_TIMEOUT_S
) -> AsyncIterator[discord.Client]:
    """Logs ``client`` in to ``fake`` and connects it in this event loop until ``on_ready``.

    discord.py waits ``guild_ready_timeout`` (2 s by default) after the last GUILD_CREATE
    before it is ready: build test clients with ``guild_ready_timeout=0.05`` to start fast.
    """
    point_discord_at(fake.api_base, fake.gateway_url)
    connection: asyncio.Task[None] | None = None
    try:
        await client.login(fake.token)
        connection = asyncio.create_task(client.connect(reconnect=True))
        ready = asyncio.create_task(client.wait_until_ready())
        done, _ = await asyncio.wait(
            {connection, ready}, timeout=ready_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            ready.cancel()
            if connection.done():
                connection.result()  # raises why the client stopped
            raise TimeoutError(f"the client was not ready within {ready_timeout} s")
        yield client
    finally:
        await client.close()
        if connection is not None:
            await connection
        point_discord_at(DISCORD_API_BASE_DEFAULT, DISCORD_GATEWAY_URL_DEFAULT)
