"""A picture is read for a member only from their server and a channel they can read: links to
a moderators-only channel, another server or someone else's DM are refused, nothing is posted,
queued or charged."""

from __future__ import annotations

from PIL import Image

from bot.jobs.accounting import Member
from bot.policy.quota import Period
from bot.policy.visibility import DIRECT_MESSAGE, NO_PICTURES_HERE, NOT_READABLE, OTHER_SERVER
from bot.settings import Settings
from inference.infotext import infotext_from_png, png_with_infotext
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, StartEasel, has_picture, reply_to
from tests.fake_discord import FakeDiscord, Overwrite, StoredMessage
from tests.fake_discord.payloads import (
    PERMISSION_ATTACH_FILES,
    PERMISSION_READ_MESSAGE_HISTORY,
    PERMISSION_SEND_MESSAGES,
)

MODERATOR = 6101
OTHER = 6102
SECRET_INFOTEXT = (
    "the moderators' secret\nSteps: 3, Sampler: Euler, CFG scale: 6, Seed: 5, Size: 64x64, "
    "Model: tiny"
)


def secret_png() -> bytes:
    return png_with_infotext(Image.new("RGB", (64, 64), "purple"), SECRET_INFOTEXT)


def posted_by_the_bot(fake: FakeDiscord) -> list[StoredMessage]:
    return [
        m
        for m in fake.messages.values()
        if m.author_id == fake.bot_user_id and not m.is_ephemeral and not m.deleted
    ]


async def test_pictures_the_member_cannot_read_are_refused(
    fake_discord: FakeDiscord, start_easel: StartEasel, easel_settings_for_test: Settings
) -> None:
    fake = fake_discord
    picture = [("secret.png", secret_png())]
    mods = fake.add_text_channel("mods", visible_to=[fake.moderator_role_id])
    in_mods = await fake.post_user_message(
        "mods only", user=fake.owner_id, channel=mods, attachments=picture
    )
    elsewhere = fake.add_guild("Elsewhere")
    in_other_server = await fake.post_user_message(
        "theirs", user=elsewhere.owner_id, channel=elsewhere.channel_id, attachments=picture
    )
    fake.add_member(OTHER, "other", roles=(fake.member_role_id,))
    in_their_dm = await fake.post_user_message(
        "mine", user=OTHER, channel=fake.dm_channel_of(OTHER), attachments=picture
    )
    # Visible to everyone, but without Read Message History.
    live_only = fake.add_text_channel(
        "live", overwrites=[Overwrite(fake.guild_id, deny=PERMISSION_READ_MESSAGE_HISTORY)]
    )
    in_live_only = await fake.post_user_message(
        "now", user=fake.owner_id, channel=live_only, attachments=picture
    )

    async with start_easel() as bot:
        for target, refusal in [
            (in_mods, NOT_READABLE),
            (in_other_server, OTHER_SERVER),
            (in_their_dm, DIRECT_MESSAGE),
        ]:
            handle = await fake.invoke_command("vary", {"message": target.jump_url})
            reply = await handle.wait_for_original(lambda m: not m.is_loading)
            assert reply.is_ephemeral and reply.content == refusal, target.jump_url
        info = await fake.invoke_message_command("Info", in_live_only)
        reply = await info.wait_for_original(lambda m: not m.is_loading)
        assert reply.is_ephemeral and reply.content == NOT_READABLE

        assert posted_by_the_bot(fake) == []
        assert bot.queue.queued_count() == 0
        report = await bot.services.quota_status.report(Member(fake.user_id, fake.guild_id))
        assert next(p.images for p in report.periods if p.period is Period.DAY) == 0
    inputs = easel_settings_for_test.data_dir / "inputs"
    assert not inputs.is_dir() or list(inputs.iterdir()) == []


async def test_a_moderator_varies_a_picture_from_the_channel_they_can_read(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    fake.add_member(MODERATOR, "mod", roles=(fake.member_role_id, fake.moderator_role_id))
    mods = fake.add_text_channel("mods", visible_to=[fake.moderator_role_id])
    in_mods = await fake.post_user_message(
        "mods only", user=fake.owner_id, channel=mods, attachments=[("s.png", secret_png())]
    )
    async with start_easel():
        handle = await fake.invoke_command("vary", {"message": in_mods.jump_url}, user=MODERATOR)
        result = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        infotext = infotext_from_png(result.attachments[0].data)
        assert infotext is not None and infotext.startswith("the moderators' secret")


async def test_easel_posts_for_a_member_only_where_they_may_post_pictures(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """In a read-only channel (or one that keeps Attach Files from a member) Discord still lets
    a member run commands and click buttons: what Easel would post there for all to see is
    refused, naming what they lack; a private result, seen by them alone, is made."""
    fake = fake_discord
    fake.add_member(OTHER, "other", roles=(fake.member_role_id,))
    rules = fake.add_text_channel(
        "rules", overwrites=[Overwrite(fake.guild_id, deny=PERMISSION_SEND_MESSAGES)]
    )
    two = {"prompt": "the rules", **QUICK, "count": 2}
    async with start_easel() as bot:
        grid_handle = await fake.invoke_command("imagine", two, user=fake.owner_id, channel=rules)
        grid = await grid_handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)

        async def refusals() -> list[str]:
            refused = await reply_to(fake, "imagine", two, user=OTHER, channel=rules)
            pick = await fake.click(grid, label="U1", user=OTHER)
            picked = await pick.wait_for_original(lambda m: not m.is_loading)
            assert refused.is_ephemeral and picked.is_ephemeral
            return [refused.content, picked.content]

        lacks_both = NO_PICTURES_HERE.format("Send Messages and Attach Files")
        assert await refusals() == [lacks_both, lacks_both]
        fake.set_overwrite(
            rules, OTHER, allow=PERMISSION_SEND_MESSAGES, deny=PERMISSION_ATTACH_FILES
        )
        lacks_files = NO_PICTURES_HERE.format("Attach Files")
        assert await refusals() == [lacks_files, lacks_files]
        assert bot.queue.queued_count() == 0
        assert (await bot.services.history.page(OTHER, 0, guild_id=fake.guild_id)).total == 0

        await reply_to(fake, "settings", {"private_results": True}, user=OTHER)
        made = await fake.invoke_command("imagine", two, user=OTHER, channel=rules)
        mine = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        picked = await (await fake.click(grid, label="U1", user=OTHER)).wait_for_original(
            has_picture
        )
        assert mine.is_ephemeral and picked.is_ephemeral
    assert [m.id for m in posted_by_the_bot(fake) if m.channel_id == rules] == [grid.id]
