"""Injected outages (``FakeDiscord.fail``): refused before Discord acts, or after (landed)."""

from __future__ import annotations

import aiohttp

from tests.fake_discord import FakeDiscord

POST_MESSAGE = ("POST", "/channels/{channel}/messages")


async def post_message(fake: FakeDiscord, content: str) -> int:
    url = f"{fake.api_base}/channels/{fake.channel_id}/messages"
    headers = {"Authorization": f"Bot {fake.token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json={"content": content}, headers=headers) as response,
    ):
        return response.status


def contents(fake: FakeDiscord) -> list[str]:
    return [m.content for m in fake.messages.values()]


async def test_an_outage_refuses_the_call_before_discord_acts(fake_discord: FakeDiscord) -> None:
    fake_discord.fail(*POST_MESSAGE, status=502)

    assert await post_message(fake_discord, "refused") == 502
    assert contents(fake_discord) == []
    assert await post_message(fake_discord, "next") == 200
    assert contents(fake_discord) == ["next"]


async def test_a_landed_outage_acts_and_loses_only_the_answer(fake_discord: FakeDiscord) -> None:
    fake_discord.fail(*POST_MESSAGE, times=2, status=502, landed=True)

    assert await post_message(fake_discord, "first") == 502
    assert await post_message(fake_discord, "second") == 502
    assert await post_message(fake_discord, "third") == 200
    assert contents(fake_discord) == ["first", "second", "third"]
    assert [c.status for c in fake_discord.calls_to(*POST_MESSAGE)] == [502, 502, 200]
    assert fake_discord.take_violations() == []
