"""Several guilds, hidden channels and DMs: Discord's permission model and contexts."""

from __future__ import annotations

import pytest

from tests.fake_discord import CommandNotShown, FakeDiscord, Overwrite, StoredMessage
from tests.fake_discord.fixtures import running_bot
from tests.fake_discord.payloads import (
    ALL_PERMISSIONS,
    PERMISSION_ATTACH_FILES,
    PERMISSION_SEND_MESSAGES,
    PERMISSION_VIEW_CHANNEL,
)
from tests.fake_discord.state import command_contexts
from tests.fake_discord_selftest.studio import StudioBot

MODERATOR = 7001
OUTSIDER = 7002


def has_text(message: StoredMessage) -> bool:
    return bool(message.content)


async def test_channel_permissions_follow_discords_order(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    fake.add_member(MODERATOR, "mod", roles=(fake.member_role_id, fake.moderator_role_id))
    hidden = fake.add_text_channel("mods", visible_to=[fake.moderator_role_id])

    assert fake.permissions_in(hidden, fake.user_id) == 0
    assert fake.permissions_in(hidden, MODERATOR) & PERMISSION_VIEW_CHANNEL
    assert fake.permissions_in(hidden, fake.bot_user_id) & PERMISSION_VIEW_CHANNEL
    assert fake.permissions_in(hidden, fake.owner_id) == ALL_PERMISSIONS  # owner bypasses

    # @everyone denies, a role allows, the member's own overwrite has the last word.
    quiet = fake.add_text_channel(
        "quiet",
        overwrites=[
            Overwrite(fake.guild_id, deny=PERMISSION_SEND_MESSAGES),
            Overwrite(fake.moderator_role_id, allow=PERMISSION_SEND_MESSAGES),
        ],
    )
    assert not fake.permissions_in(quiet, fake.user_id) & PERMISSION_SEND_MESSAGES
    # Without Send Messages, what depends on it goes too.
    assert not fake.permissions_in(quiet, fake.user_id) & PERMISSION_ATTACH_FILES
    assert fake.permissions_in(quiet, MODERATOR) & PERMISSION_SEND_MESSAGES
    fake.set_overwrite(quiet, MODERATOR, deny=PERMISSION_SEND_MESSAGES)
    assert not fake.permissions_in(quiet, MODERATOR) & PERMISSION_SEND_MESSAGES


async def test_interactions_and_the_bots_cache_agree_on_hidden_channels(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    fake = fake_discord
    fake.add_member(MODERATOR, "mod", roles=(fake.member_role_id, fake.moderator_role_id))
    hidden = fake.add_text_channel("mods", visible_to=[fake.moderator_role_id])  # bot online

    as_mod = await fake.invoke_command("whereami", {"channel_id": str(hidden)}, user=MODERATOR)
    assert (await as_mod.wait_for_original()).content == (
        f"guild={fake.guild_id} view=True app_view=True cached_view=True"
    )
    # The tester cannot see the channel, so the client gives them nothing to run there...
    with pytest.raises(ValueError, match="cannot see"):
        await fake.invoke_command("whereami", channel=hidden)
    # ...and discord.py, from the CHANNEL_CREATE's overwrites, computes the same.
    as_tester = await fake.invoke_command("whereami", {"channel_id": str(hidden)})
    assert (await as_tester.wait_for_original()).content.endswith("cached_view=False")


async def test_the_bot_gets_missing_access_for_a_channel_it_cannot_view(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    fake = fake_discord
    closed = fake.add_text_channel(
        "closed", overwrites=[Overwrite(fake.guild_id, deny=PERMISSION_VIEW_CHANNEL)]
    )
    secret = await fake.post_user_message("secret", user=fake.owner_id, channel=closed)
    public = await fake.post_user_message("hello")

    refused = await fake.invoke_command(
        "peek", {"channel_id": str(closed), "message_id": str(secret.id)}
    )
    assert (await refused.wait_for_original(has_text)).content == "403 50001"
    read = await fake.invoke_command(
        "peek", {"channel_id": str(fake.channel_id), "message_id": str(public.id)}
    )
    assert (await read.wait_for_original(has_text)).content == "read: hello"
    assert not any(m.channel_id == closed for m in fake.messages.values() if m.id != secret.id)


async def test_a_second_guild_arrives_at_login_and_shares_members(
    fake_discord: FakeDiscord,
) -> None:
    fake = fake_discord
    other = fake.add_guild("Other server")
    fake.add_member(fake.user_id, "tester", roles=(other.member_role_id,), guild=other.guild_id)
    fake.add_member(OUTSIDER, "outsider", guild=other.guild_id)

    async with running_bot(fake, StudioBot()) as client:
        assert {g.id for g in client.guilds} == {fake.guild_id, other.guild_id}
        assert client.get_channel(other.channel_id) is not None
        there = await fake.invoke_command("whereami", channel=other.channel_id)
        assert (await there.wait_for_original()).content.startswith(f"guild={other.guild_id} ")
        # A member of only the other guild is no member of the first.
        with pytest.raises(LookupError, match="not a member"):
            await fake.invoke_command("whereami", user=OUTSIDER)
        # The owner of the other guild has every permission there, and none in the first.
        assert fake.permissions_in(other.channel_id, other.owner_id) == ALL_PERMISSIONS
        assert fake.permissions_in(fake.channel_id, other.owner_id) == 0


async def test_commands_in_a_dm_follow_their_contexts(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    fake = fake_discord
    dm = fake.dm_channel_of(fake.user_id)

    handle = await fake.invoke_command("whereami", channel=dm)
    assert (await handle.wait_for_original()).content.startswith("dm ")
    assert handle.payload["context"] == 1
    assert "member" not in handle.payload and "guild_id" not in handle.payload
    assert handle.payload["user"]["id"] == str(fake.user_id)
    with pytest.raises(CommandNotShown, match="serveronly"):
        await fake.invoke_command("serveronly", channel=dm)
    # Someone else's DM with the bot is not a place the tester can act in.
    fake.add_member(OUTSIDER, "outsider")
    with pytest.raises(ValueError, match="cannot see"):
        await fake.invoke_command("whereami", channel=fake.dm_channel_of(OUTSIDER))


def test_command_contexts_default_like_discord() -> None:
    assert command_contexts({"contexts": None}) == [0, 1, 2]
    assert command_contexts({"contexts": None, "dm_permission": False}) == [0]
    assert command_contexts({"contexts": [0, 1]}) == [0, 1]
    assert command_contexts({"contexts": None, "guild_id": "1"}) == [0]
