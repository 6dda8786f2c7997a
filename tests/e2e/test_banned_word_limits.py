"""/easel-admin banned-word's limits (AUD21): a server bans at most
``BANNED_WORDS_PER_SERVER`` words (each /imagine reads them all), and a word is at most
``BANNED_WORD_MAX_LENGTH`` characters as prompts are compared, not only as typed (one word
of 100 U+FDFA is 1,800 characters once normalised, carried with every ending of a prompt's
variants)."""

from __future__ import annotations

from bot.policy.guild import GuildList
from bot.policy.moderation import BANNED_WORDS_PER_SERVER
from db import guild_settings
from db.database import connect
from tests.e2e.helpers import StartEasel, reply_to
from tests.fake_discord import FakeDiscord

FULL = (
    f"This server bans {BANNED_WORDS_PER_SERVER:,} words or phrases already, the most it may; "
    "remove one (/easel-admin banned-word action:remove) to add another."
)


async def test_a_word_too_long_as_prompts_are_compared_is_refused_naming_the_limit(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    owner = fake_discord.owner_id
    too_long = {
        # 6 typed, 108 compared
        "\ufdfa" * 6: "108 characters long as prompts are compared (some characters, such as "
        "U+FDFA, read as several letters)",
        # R_FX21: 100 typed and 90 normalised, but 185 as the matcher also looks for it (each
        # variation selector read apart as a boundary, ``_marks_apart``).
        "\ufdfa" * 5 + "\ufe00" * 95: "185 characters long as prompts are compared (each "
        "combining mark, such as a variation selector, counts as one)",
    }
    async with start_easel() as bot:
        for word, length in too_long.items():
            long_once_read = {"action": "add", "word": word}
            refused = await reply_to(
                fake_discord, "easel-admin banned-word", long_once_read, user=owner
            )
            assert refused.is_ephemeral
            assert refused.content == (
                f"This word or phrase is {length}; a banned word or phrase is 1 to 100."
            )
        settings = await bot.services.guild_policy.settings(fake_discord.guild_id)
        assert not settings.entries(GuildList.BANNED_WORD)
        longest = {"action": "add", "word": "x" * 100}
        added = await reply_to(fake_discord, "easel-admin banned-word", longest, user=owner)
        assert added.content.startswith("Added ")


async def test_a_server_bans_at_most_its_limit_and_a_removal_makes_room(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    owner, guild = fake_discord.owner_id, fake_discord.guild_id
    async with start_easel() as bot:
        policy = bot.services.guild_policy
        for index in range(BANNED_WORDS_PER_SERVER):  # as the command adds them, faster
            assert await policy.change_list(
                guild, owner, GuildList.BANNED_WORD, f"w{index}", add=True
            )
        one_more = {"action": "add", "word": "dog"}
        refused = await reply_to(fake_discord, "easel-admin banned-word", one_more, user=owner)
        assert refused.is_ephemeral
        assert refused.content == FULL
        again = {"action": "add", "word": "w0"}  # one it holds: no change, not refused
        kept = await reply_to(fake_discord, "easel-admin banned-word", again, user=owner)
        assert kept.content == "||w0|| is already in the banned words; no change."
        gone = {"action": "remove", "word": "w0"}
        removed = await reply_to(fake_discord, "easel-admin banned-word", gone, user=owner)
        assert removed.content.startswith("Removed ")
        added = await reply_to(fake_discord, "easel-admin banned-word", one_more, user=owner)
        assert added.content == "Added ||dog|| to the banned words."
        words = (await policy.settings(guild)).entries(GuildList.BANNED_WORD)
        assert len(words) == BANNED_WORDS_PER_SERVER and "dog" in words


async def test_a_list_longer_from_before_the_limit_keeps_working(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """R_FX21: a server that banned more words before the limit existed is answered "already
    in" for a word it holds, refused a new one until it is under the limit, and may remove."""
    owner, guild = fake_discord.owner_id, fake_discord.guild_id
    async with start_easel() as bot:
        conn = await connect(bot.settings.database_path)
        try:  # added as before the limit: with none
            for index in range(BANNED_WORDS_PER_SERVER + 50):
                assert await guild_settings.change_list(
                    conn, guild, owner, GuildList.BANNED_WORD, f"w{index}", add=True, now=0.0
                )
        finally:
            await conn.close()
        held = {"action": "add", "word": "w5"}
        kept = await reply_to(fake_discord, "easel-admin banned-word", held, user=owner)
        assert kept.content == "||w5|| is already in the banned words; no change."
        new = {"action": "add", "word": "dog"}
        refused = await reply_to(fake_discord, "easel-admin banned-word", new, user=owner)
        assert refused.content == FULL
        gone = {"action": "remove", "word": "w5"}
        removed = await reply_to(fake_discord, "easel-admin banned-word", gone, user=owner)
        assert removed.content.startswith("Removed ")
        words = (await bot.services.guild_policy.settings(guild)).entries(GuildList.BANNED_WORD)
        assert len(words) == BANNED_WORDS_PER_SERVER + 49 and "dog" not in words
