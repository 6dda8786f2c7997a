"""Banned words across scripts and cases, through the fake Discord: a letter of another script
glued to a banned word does not hide it (the text encoder still gets the word's own token), and
a word an admin types in Turkish capitals refuses it in the lower case a Turkish writer types."""

from __future__ import annotations

from inference.prompts.tokenizer import default_tokenizer
from tests.e2e.helpers import QUICK, StartEasel, has_picture, reply_to
from tests.fake_discord import FakeDiscord


async def test_a_banned_word_is_refused_beside_another_script_and_in_turkish_lower_case(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    naked = default_tokenizer().encode("naked")
    async with start_easel() as bot:
        for word in ("naked", "İSTANBUL", "KIZ"):
            await reply_to(
                fake_discord,
                "easel-admin banned-word",
                {"action": "add", "word": word},
                user=fake_discord.owner_id,
            )
        for prompt in ("a жnaked woman", "a ωnaked woman"):
            assert naked[0] in default_tokenizer().encode(prompt)  # what the model reads
            refused = await reply_to(fake_discord, "imagine", {"prompt": prompt, **QUICK})
            assert refused.is_ephemeral, prompt
            assert "The word 'naked' is banned on this server" in refused.content, prompt
        for prompt in ("istanbul skyline", "bir kız portresi"):
            refused = await reply_to(fake_discord, "imagine", {"prompt": prompt, **QUICK})
            assert refused.is_ephemeral, prompt
            assert "is banned on this server" in refused.content, prompt
        assert bot.queue.queued_count() == 0
        assert not any(has_picture(message) for message in fake_discord.messages.values())
