"""What /imagine checks before it acknowledges is read from memory (issue 12): every change a
member or an admin makes is seen by the very next command, and a refusal stays private."""

from __future__ import annotations

from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, StartEasel, has_picture, reply_to, size_of
from tests.fake_discord import FakeDiscord
from tests.fake_discord.rest import RESPONSE_DEFERRED_MESSAGE as DEFERRED


async def test_each_change_reaches_the_next_command(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    owner, member = fake_discord.owner_id, fake_discord.user_id
    async with start_easel():
        await reply_to(
            fake_discord,
            "easel-admin quota",
            {"scope": "user", "member": member, "images_per_day": 2},
            user=owner,
        )
        # The first command reads the member's settings, the guild's and the quota into memory.
        first = await fake_discord.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        await first.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)

        saved = await reply_to(fake_discord, "settings", {"size": "96x64"})
        assert "Saved." in saved.content
        second = await fake_discord.invoke_command("imagine", {"prompt": "a cat", "steps": 2})
        picture = await second.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert size_of(picture) == (96, 64)

        # Both images of the day are spent: refused privately, before anything is deferred.
        spent = await fake_discord.invoke_command("imagine", {"prompt": "a dog", **QUICK})
        refusal = await spent.wait_for_original(lambda m: "⛔" in m.content)
        assert refusal.is_ephemeral and spent.response_type != DEFERRED
        assert "You have used 2 of 2 images today" in refusal.content

        await reply_to(
            fake_discord,
            "easel-admin quota",
            {"scope": "user", "member": member, "images_per_day": 4},
            user=owner,
        )
        added = await reply_to(
            fake_discord, "easel-admin banned-word", {"action": "add", "word": "owl"}, user=owner
        )
        assert "Added" in added.content
        banned = await reply_to(fake_discord, "imagine", {"prompt": "an owl", **QUICK})
        assert banned.is_ephemeral
        assert "The word 'owl' is banned on this server" in banned.content
        # The raised limit is seen at once, and so is a lowered one (3 of 4 spent, then 0 left).
        third = await fake_discord.invoke_command("imagine", {"prompt": "a dog", **QUICK})
        await third.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)

        await reply_to(
            fake_discord,
            "easel-admin quota",
            {"scope": "user", "member": member, "images_per_day": 0},
            user=owner,
        )
        lowered = await fake_discord.invoke_command("imagine", {"prompt": "a dog", **QUICK})
        refusal = await lowered.wait_for_original(lambda m: "⛔" in m.content)
        assert refusal.is_ephemeral and lowered.response_type != DEFERRED
        assert "allowed no images per day here" in refusal.content
