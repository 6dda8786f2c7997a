"""/easel-admin through the fake Discord: who may use it, and what its rules refuse."""

from __future__ import annotations

from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, StartEasel, has_picture, imagine, reply_to
from tests.fake_discord import FakeDiscord


async def test_admin_commands_are_refused_for_members(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel() as bot:
        [admin] = [
            c for c in fake_discord.registered_commands(guild=True) if c["name"] == "easel-admin"
        ]
        assert int(admin["default_member_permissions"]) == 1 << 5  # Manage Server
        refused = await reply_to(
            fake_discord, "easel-admin banned-word", {"action": "add", "word": "dog"}
        )
        assert refused.is_ephemeral
        assert "You need the manage guild permission" in refused.content
        assert (await bot.services.guild_policy.settings(fake_discord.guild_id)).lists == {}


async def test_banned_words_channels_models_and_audit(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    owner = fake_discord.owner_id
    async with start_easel() as bot:
        added = await reply_to(
            fake_discord,
            "easel-admin banned-word",
            {"action": "add", "word": "Ugly Dog"},
            user=owner,
        )
        assert "Added" in added.content
        refused = await reply_to(fake_discord, "imagine", {"prompt": "an ugly dog, photo"})
        assert refused.is_ephemeral
        assert "The word 'ugly dog' is banned on this server" in refused.content
        assert bot.queue.queued_count() == 0
        # Whole words only: "ugly doghouse" does not contain the phrase.
        await imagine(fake_discord, "an ugly doghouse")

        other_channel = fake_discord.add_text_channel("art")
        added = await reply_to(
            fake_discord,
            "easel-admin channel",
            {"action": "add", "channel": other_channel},
            user=owner,
        )
        assert f"Added <#{other_channel}>" in added.content
        refused = await reply_to(fake_discord, "imagine", {"prompt": "a cat", **QUICK})
        assert "Easel is not enabled in this channel" in refused.content
        assert f"<#{other_channel}>" in refused.content
        allowed = await fake_discord.invoke_command(
            "imagine", {"prompt": "a cat", "steps": 2, "size": "64x64"}, channel=other_channel
        )
        await allowed.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)

        await reply_to(
            fake_discord, "easel-admin model", {"action": "add", "name": "tiny"}, user=owner
        )
        refused = await reply_to(
            fake_discord,
            "imagine",
            {"prompt": "a cat", "model": "huge", **QUICK},
            channel=other_channel,
        )
        assert "The model `huge` is not installed or not allowed here. You may use: tiny." in (
            refused.content
        )

        await reply_to(
            fake_discord,
            "easel-admin quota",
            {"scope": "user", "member": fake_discord.user_id, "images_per_day": 0},
            user=owner,
        )
        over = await fake_discord.invoke_command(
            "imagine", {"prompt": "a cat", "steps": 2, "size": "64x64"}, channel=other_channel
        )
        refusal = await over.wait_for_original(lambda m: "⛔" in m.content)
        assert "allowed no images per day here" in refusal.content
        assert bot.queue.queued_count() == 0

        audit = await reply_to(fake_discord, "easel-admin audit", user=owner)
        assert "banned_word: — → ugly dog" in audit.content
        assert "allowed_channel" in audit.content and "quota:user" in audit.content
        shown = await reply_to(fake_discord, "easel-admin show", user=owner)
        assert f"<#{other_channel}>" in shown.content and "tiny" in shown.content


async def test_nsfw_policies(fake_discord: FakeDiscord, start_easel: StartEasel) -> None:
    owner = fake_discord.owner_id
    async with start_easel():
        await reply_to(fake_discord, "easel-admin nsfw", {"policy": "spoiler"}, user=owner)
        result = await imagine(fake_discord, "a cat")
        assert result.attachments[0].filename.startswith("SPOILER_")

        await reply_to(
            fake_discord, "easel-admin nsfw", {"policy": "age_restricted_only"}, user=owner
        )
        refused = await reply_to(fake_discord, "imagine", {"prompt": "a cat", **QUICK})
        assert refused.is_ephemeral and "only in age-restricted channels" in refused.content
