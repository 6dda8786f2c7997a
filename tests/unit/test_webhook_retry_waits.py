"""The tests' short waits after a 5xx on a webhook call (tests/support/discord_retries.py)
leave an interaction's first response waiting as discord.py does: Discord refuses that
answer after 3 s, so a shortened wait there would let a test pass on one Discord refuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from discord.http import Route
from discord.webhook.async_ import AsyncWebhookAdapter

from tests.support import discord_retries


class _Answer:
    def __init__(self, status: int) -> None:
        self.status = status
        self.headers = {"content-type": "application/json"}

    async def text(self, encoding: str) -> str:
        return "{}"


class _Session:
    """Answers each call with the next status, as aiohttp's session would."""

    def __init__(self, statuses: list[int]) -> None:
        self._statuses = statuses

    @asynccontextmanager
    async def request(self, method: str, url: str, **_: Any) -> AsyncIterator[_Answer]:
        yield _Answer(self._statuses.pop(0))


async def _waits_between_tries(path: str, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits discord.py's webhook adapter takes on ``path`` answered 502, 502, then 200."""
    waits: list[float] = []

    class RecordedSleeps:
        """``asyncio`` as discord_retries sees it, its sleeps noted and not taken."""

        def __getattr__(self, name: str) -> Any:
            return getattr(asyncio, name)

        @staticmethod
        async def sleep(delay: float, result: object = None) -> object:
            waits.append(delay)
            return result

    monkeypatch.setattr(discord_retries, "asyncio", RecordedSleeps())
    route = Route("POST", path, webhook_id=1, webhook_token="token")
    await AsyncWebhookAdapter().request(route, _Session([502, 502, 200]))  # type: ignore[arg-type]
    return waits


async def test_a_first_response_waits_as_discord_py_does(monkeypatch: pytest.MonkeyPatch) -> None:
    path = "/interactions/{webhook_id}/{webhook_token}/callback"
    assert await _waits_between_tries(path, monkeypatch) == [1, 3]


async def test_a_follow_up_waits_a_hundredth(monkeypatch: pytest.MonkeyPatch) -> None:
    path = "/webhooks/{webhook_id}/{webhook_token}"
    assert await _waits_between_tries(path, monkeypatch) == pytest.approx([0.01, 0.03])
