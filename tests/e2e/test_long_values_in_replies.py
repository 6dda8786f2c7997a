"""Replies that quote a member's saved values (/settings, /presets, /easel-admin preset) fit
Discord's 2,000 characters however long the values are: each value is shown cut (the
stored one stays whole), and /presets list leaves presets out with a count rather than
losing a section. Discord would refuse a longer reply, and the member would see "Something
went wrong" instead (the fake records the refusal, failing the test)."""

from __future__ import annotations

from bot.presets import MAX_SHOWN_VALUE, Scope
from bot.requests import MAX_NEGATIVE_OPTION_CHARS
from tests.e2e.helpers import StartEasel, reply_to
from tests.fake_discord import FakeDiscord

LONGEST_NEGATIVE = "n" * MAX_NEGATIVE_OPTION_CHARS
# How a reply shows it: its start, an ellipsis, in one code span.
SHOWN_NEGATIVE = f"`{'n' * (MAX_SHOWN_VALUE - 1)}…`"


async def test_settings_show_a_long_negative_cut_and_keep_answering(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel() as bot:
        saved = await reply_to(fake_discord, "settings", {"negative": LONGEST_NEGATIVE})
        assert saved.is_ephemeral and saved.content.startswith("Saved.")
        assert f"negative: {SHOWN_NEGATIVE}\n" in saved.content
        # Every later /settings shows them too (each used to be refused the same way).
        viewed = await reply_to(fake_discord, "settings")
        assert f"negative: {SHOWN_NEGATIVE}\n" in viewed.content
        stored = await bot.services.member_settings.get(fake_discord.user_id)
        assert stored.negative == LONGEST_NEGATIVE  # cut only where shown

        # A backtick would close the code span early: the value is shown without it.
        ticked = await reply_to(fake_discord, "settings", {"negative": "blurry`, **loud**"})
        assert "negative: `blurry, **loud**`\n" in ticked.content


async def test_an_admin_is_told_a_server_preset_with_a_long_negative_was_saved(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    owner = fake_discord.owner_id
    async with start_easel() as bot:
        options = {"name": "long", "negative": LONGEST_NEGATIVE}
        saved = await reply_to(fake_discord, "presets save", options, user=owner)
        assert f"negative: {SHOWN_NEGATIVE}" in saved.content
        shared = await reply_to(
            fake_discord, "easel-admin preset", {"action": "add", "name": "long"}, user=owner
        )
        assert shared.content == f"Server preset saved: **long** — negative: {SHOWN_NEGATIVE}"
        [stored] = await bot.services.presets.of(Scope.SERVER, fake_discord.guild_id)
        assert stored.negative == LONGEST_NEGATIVE


async def test_presets_list_keeps_the_servers_presets_beside_many_long_ones(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake, owner = fake_discord, fake_discord.owner_id
    async with start_easel():
        await reply_to(fake, "presets save", {"name": "shared", "steps": 9}, user=owner)
        await reply_to(fake, "easel-admin preset", {"action": "add", "name": "shared"}, user=owner)
        for index in range(8):
            await reply_to(fake, "presets save", {"name": f"long{index}", "negative": "n" * 1990})

        listed = (await reply_to(fake, "presets list")).content

    assert len(listed) <= 2000
    mine, servers = listed.split("\n**This server's presets**\n")
    assert mine.startswith("**Your presets**\n**long0** — negative: `")
    shown = mine.count("**long")
    assert 1 <= shown < 8 and mine.endswith(f"\n… and {8 - shown} more.")
    assert servers == "**shared** — steps: `9`"
    assert listed.count("`") % 2 == 0  # no code span left open
