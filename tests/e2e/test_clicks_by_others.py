"""A button on someone else's result works for whoever clicks it, and charges the clicker."""

from __future__ import annotations

from tests.e2e.helpers import RENDER_TIMEOUT_S, StartEasel, has_picture, images_today, imagine
from tests.fake_discord import FakeDiscord

OTHER = 5151


async def test_another_member_rerolls_and_varies_a_result_on_their_own_account(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake_discord.add_member(OTHER, "other", roles=(fake_discord.member_role_id,))
    async with start_easel() as bot:
        original = await imagine(fake_discord, "a castle")
        reroll_id = next(c for c in original.custom_ids if c.startswith("easel:reroll:"))
        rerolled = await (
            await fake_discord.click(original, reroll_id, user=OTHER)
        ).wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        varied = await (
            await fake_discord.click(original, label="Vary (Strong)", user=OTHER)
        ).wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)

        assert f"<@{OTHER}>" in rerolled.content and f"<@{OTHER}>" in varied.content
        assert rerolled.id != original.id and varied.id != original.id
        guild = fake_discord.guild_id
        assert await images_today(bot.services, OTHER, guild) == 2
        assert await images_today(bot.services, fake_discord.user_id, guild) == 1
