"""Threads: public and private ones, who sees them, their members, and interactions in them."""

from __future__ import annotations

import pytest

from tests.fake_discord import FakeDiscord, StoredMessage
from tests.fake_discord.fixtures import running_bot
from tests.fake_discord.payloads import (
    PERMISSION_MANAGE_THREADS,
    PERMISSION_VIEW_CHANNEL,
)
from tests.fake_discord_selftest.studio import StudioBot

OUTSIDER = 7102
THREAD_MANAGER = 7103


def answered(message: StoredMessage) -> bool:
    return bool(message.content)


async def test_a_private_thread_is_seen_by_its_members_and_thread_managers(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    fake = fake_discord
    fake.add_member(OUTSIDER, "outsider", roles=(fake.member_role_id,))
    fake.add_member(
        THREAD_MANAGER,
        "manager",
        roles=(fake.member_role_id,),
        permissions=fake.permissions_in(fake.channel_id, fake.user_id) | PERMISSION_MANAGE_THREADS,
    )
    adults = fake.add_text_channel("adults", nsfw=True)
    secret = fake.add_thread("secret", parent=adults, private=True, members=[fake.bot_user_id])

    # Its parent's permissions, for the members added to it and those who manage threads.
    assert fake.permissions_in(secret, fake.user_id) & PERMISSION_VIEW_CHANNEL  # its owner
    assert fake.permissions_in(secret, THREAD_MANAGER) & PERMISSION_VIEW_CHANNEL
    assert fake.permissions_in(secret, fake.owner_id)  # the guild owner: every permission
    assert fake.permissions_in(adults, OUTSIDER) & PERMISSION_VIEW_CHANNEL
    assert fake.permissions_in(secret, OUTSIDER) == 0
    with pytest.raises(ValueError, match="cannot see"):
        await fake.invoke_command(
            "threadcheck", {"user_id": str(OUTSIDER)}, user=OUTSIDER, channel=secret
        )

    # Run in the thread: the interaction's channel is the thread (type 12, its parent), the
    # bot cached it from THREAD_CREATE, and REST says who is in it.
    asked = await fake.invoke_command("threadcheck", {"user_id": str(OUTSIDER)}, channel=secret)
    assert (await asked.wait_for_original(answered)).content == (
        f"type=12 parent={adults} cached=True nsfw=True 404 10007"
    )
    fake.set_thread_member(secret, OUTSIDER)
    assert fake.permissions_in(secret, OUTSIDER) & PERMISSION_VIEW_CHANNEL
    # An injected outage answers the next call only, with Discord's server error.
    fake.fail("GET", "/channels/{channel}/thread-members/{user_id}", status=503)
    for answer in ("503 0", "member since"):
        asked = await fake.invoke_command("threadcheck", {"user_id": str(OUTSIDER)}, channel=secret)
        assert answer in (await asked.wait_for_original(answered)).content
    with pytest.raises(ValueError, match="not a route"):
        fake.fail("GET", "/channels/{channel}/thread-member")
    fake.set_thread_member(secret, OUTSIDER, member=False)
    assert fake.permissions_in(secret, OUTSIDER) == 0

    # Messages posted in the thread are the thread's.
    said = await fake.post_user_message("in the thread", channel=secret)
    assert said.channel_id == secret and said.jump_url.endswith(f"/{secret}/{said.id}")


async def test_threads_the_bot_sees_arrive_with_the_guild_at_login(
    fake_discord: FakeDiscord,
) -> None:
    fake = fake_discord
    public = fake.add_thread("open")
    without_the_bot = fake.add_thread("closed", private=True)
    async with running_bot(fake, StudioBot()) as client:
        guild = client.get_guild(fake.guild_id)
        assert guild is not None
        thread = guild.get_thread(public)
        assert thread is not None and thread.parent_id == fake.channel_id
        assert not thread.is_private()
        assert guild.get_thread(without_the_bot) is None
        asked = await fake.invoke_command(
            "threadcheck", {"user_id": str(fake.user_id)}, channel=public
        )
        content = (await asked.wait_for_original(answered)).content
        assert content.startswith(f"type=11 parent={fake.channel_id} cached=True nsfw=False ")
        assert "member since" in content
