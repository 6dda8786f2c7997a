"""A server's channel list and threads (AUD24): a thread or forum post of an allowed channel
is allowed with it, from the command to the result's delivery; the list itself takes
channels, and its refusal of a thread names the channel to add. Easel's commands are
installed to servers only."""

from __future__ import annotations

import asyncio

from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    deliver_after_token_expiry,
    images_today,
    reply_to,
)
from tests.fake_discord import FakeDiscord
from tests.support.pictures import has_picture

GUILD_INSTALL = 0


async def _allow(fake: FakeDiscord, channel: int) -> None:
    added = await reply_to(
        fake, "easel-admin channel", {"action": "add", "channel": channel}, user=fake.owner_id
    )
    assert added.content.startswith("Added"), added.content


async def test_a_thread_of_an_allowed_channel_is_allowed(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    thread = fake.add_thread("ideas")
    elsewhere = fake.add_text_channel("elsewhere")
    thread_elsewhere = fake.add_thread("other ideas", parent=elsewhere)
    async with start_easel():
        await _allow(fake, fake.channel_id)
        handle = await fake.invoke_command("imagine", {"prompt": "a cat", **QUICK}, channel=thread)
        await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        # A thread of a channel not on the list stays refused, naming the allowed one.
        refused = await reply_to(
            fake, "imagine", {"prompt": "a cat", **QUICK}, channel=thread_elsewhere
        )
        assert refused.is_ephemeral
        assert "Easel is not enabled in this channel" in refused.content, refused.content


async def test_a_late_delivery_in_a_thread_of_an_allowed_channel_is_posted(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """The delivery's rules of now read the thread's channel too: posted in the thread, not
    withheld as made where Easel is not enabled."""
    fake = fake_discord
    thread = fake.add_thread("ideas")
    async with start_easel() as bot:
        await _allow(fake, fake.channel_id)
        posted = await deliver_after_token_expiry(fake, bot, "a lighthouse", thread)
        message_id = await asyncio.wait_for(posted, RENDER_TIMEOUT_S)
        assert isinstance(message_id, int)
        assert fake.messages[message_id].channel_id == thread
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 1


async def test_the_channel_list_refuses_a_thread_naming_its_channel(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    thread = fake.add_thread("ideas")
    async with start_easel():
        refused = await reply_to(
            fake, "easel-admin channel", {"action": "add", "channel": thread}, user=fake.owner_id
        )
        assert refused.is_ephemeral
        assert f"<#{thread}> is a thread" in refused.content, refused.content
        assert f"add <#{fake.channel_id}> instead" in refused.content, refused.content


async def test_commands_are_installed_to_servers_only(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A member's own install (user install) is refused by Discord itself: no command of
    Easel's is offered there."""
    fake = fake_discord
    async with start_easel():
        registered = [*fake.registered_commands(), *fake.registered_commands(guild=True)]
        assert registered
        for command in registered:
            assert command.get("integration_types") == [GUILD_INSTALL], command["name"]
