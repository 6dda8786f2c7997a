"""A result rendered just before its maker was banned from the server is posted nowhere: the
ban cancels only unfinished jobs, and a done job's delivery can come seconds later (a channel
post waits behind the raid's rate limit)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import discord

from bot.bans import StoppedMembers
from bot.jobs.queue import FinishedJob
from cogs.results.posting import DiscordResults
from inference.types import RenderRequest

GUILD, CHANNEL, RAIDER, MEMBER = 5, 50, 77, 78


class Channel:
    """discord.Client's partial messageable: records what is sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, content: str, **_: Any) -> object:
        self.sent.append(content)
        return SimpleNamespace(id=900 + len(self.sent))


def done(user_id: int, guild_id: int) -> FinishedJob:
    """A finished job whose interaction token is gone: it is posted in its channel."""
    return FinishedJob(
        job_id=f"{user_id:08x}{guild_id:08x}",
        kind="imagine",
        succeeded=True,
        error=None,
        request=RenderRequest(prompt="a barn"),
        user_id=user_id,
        guild_id=guild_id,
        channel_id=CHANNEL,
        application_id=None,
        interaction_token=None,
        interaction_created_at=None,
        images=(),
        composed=b"a picture",
    )


async def test_a_result_finished_before_its_makers_ban_is_not_posted() -> None:
    channel = Channel()
    client = SimpleNamespace(
        get_partial_messageable=lambda _channel_id: channel, get_guild=lambda _guild_id: None
    )
    results = DiscordResults(cast(discord.Client, client))
    results.stopped_members = StoppedMembers()
    results.stopped_members.add(GUILD, RAIDER)
    assert await results.deliver(done(RAIDER, GUILD)) is None
    # Another member's result there, and the banned member's in another server, are posted.
    assert await results.deliver(done(MEMBER, GUILD)) == 901
    assert await results.deliver(done(RAIDER, GUILD + 1)) == 902
    assert [f"<@{RAIDER}>" in content for content in channel.sent] == [False, True]
