"""Discord's gateway lost under a running Easel, over the fake Discord: /healthz stays 200 while
discord.py reconnects within the grace, answers 503 once the connection has been down past
it (discord.py's ``is_ready()`` stays true all along), and 200 again after a RESUME; the
gateway metrics follow."""

from __future__ import annotations

import asyncio
from typing import Any

import discord.gateway
import pytest

from bot import gateway_health
from bot.settings import Settings
from tests.conftest import ErrorLogs
from tests.e2e.conftest import StartEasel
from tests.fake_discord import FakeDiscord
from tests.support.metrics import Samples, fetch, scrape, scraped_until, value

WAIT_S = 60.0  # generous: a loaded machine, and discord.py's backoff (2 s, 4 s, 8 s, ...)


@pytest.fixture
def easel_settings_for_test(easel_settings_for_test: Settings) -> Settings:
    """The e2e settings with the metrics server (/healthz) on a free loopback port."""
    return easel_settings_for_test.model_copy(update={"metrics_addr": "127.0.0.1:0"})


async def test_healthz_fails_once_the_gateway_is_down_past_its_grace_and_heals_on_resume(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    error_logs: ErrorLogs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error_logs.expect(r"Attempting a reconnect")  # discord.py's own line for a failed try
    failed_tries = 0

    async def unreachable(*_args: Any, **_kwargs: Any) -> Any:
        nonlocal failed_tries
        failed_tries += 1
        raise OSError(111, "Connection refused")

    # Long at first: "within the grace" is then a state, not a race with the clock.
    monkeypatch.setattr(gateway_health, "GATEWAY_GRACE_S", 3600.0)
    async with start_easel() as bot:
        assert bot.metrics_server is not None
        port = bot.metrics_server.port
        health = f"http://127.0.0.1:{port}/healthz"
        before = await scraped_until(
            port, lambda s: value(s, "easel_gateway_connected") == 1, WAIT_S
        )
        assert await asyncio.to_thread(fetch, health) == (200, "ok\n")

        with monkeypatch.context() as gateway_away:
            gateway_away.setattr(
                discord.gateway.DiscordWebSocket, "from_client", classmethod(unreachable)
            )
            await fake_discord.drop_gateway_connection()
            down = await scraped_until(
                port, lambda s: value(s, "easel_gateway_connected") == 0, WAIT_S
            )
            async with asyncio.timeout(WAIT_S):
                # The drop and each failed try are a "disconnect" each: one, then another.
                while not failed_tries:  # noqa: ASYNC110 (discord.py's tries, each failing)
                    await asyncio.sleep(0.05)
            assert bot.is_ready()  # what /healthz used to trust
            assert await asyncio.to_thread(fetch, health) == (200, "ok\n")  # within the grace
            monkeypatch.setattr(gateway_health, "GATEWAY_GRACE_S", 0.0)  # past it now
            status, text = await asyncio.to_thread(fetch, health)
            assert status == 503
            assert text.startswith("Discord gateway disconnected for ") and text.endswith(" s\n")
            after_tries = await scrape(port)
        # Reachable again: discord.py's next try RESUMEs.
        await fake_discord.wait_for_resume(timeout=WAIT_S)
        up = await scraped_until(port, lambda s: value(s, "easel_gateway_connected") == 1, WAIT_S)
        assert await asyncio.to_thread(fetch, health) == (200, "ok\n")

    def disconnects(samples: Samples) -> float:
        return value(samples, "easel_gateway_disconnects_total")

    # One drop, counted once however many reconnects failed.
    assert disconnects(down) - disconnects(before) == 1
    assert disconnects(after_tries) == disconnects(down)
    assert disconnects(up) == disconnects(down)
