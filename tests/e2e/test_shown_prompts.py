"""What the channel and its moderators read of a prompt is what the model reads, through
/imagine over the fake Discord: a prompt padded with whitespace, or with characters that show
as blank or as nothing (a braille blank, U+200B, a Hangul filler, a run of combining grapheme
joiners), shows its later words in its result's caption, /history and ``/easel-mod jobs``, and
a direction override in it turns nothing around there, nor runs on into Easel's link after
it."""

from __future__ import annotations

from tests.e2e.helpers import StartEasel, imagine, job_id_of, reply_to
from tests.fake_discord import FakeDiscord
from tests.fake_discord.payloads import DEFAULT_MEMBER_PERMISSIONS

MOD = 7201
MANAGE_MESSAGES = 1 << 13
_OVERRIDE = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: "naked woman" would show as "namow dekan"


async def test_a_padded_and_overridden_prompt_shows_what_the_model_reads(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    fake.add_member(MOD, "mod", permissions=DEFAULT_MEMBER_PERMISSIONS | MANAGE_MESSAGES)
    padding = "\u034f" * 100 + " \u2800\u200b\u3164" * 375
    prompt = _OVERRIDE + "a cute kitten" + padding + "in a bloody\u2029knife fight"
    shown = "a cute kitten in a bloody knife fight"
    async with start_easel():
        posted = await imagine(fake, prompt)
        job = job_id_of(posted)
        assert posted.content.startswith(f"**{shown}** — <@{fake.user_id}>"), posted.content

        history = await reply_to(fake, "history")
        listed = await reply_to(fake, "easel-mod jobs", {"member": fake.user_id}, user=MOD)
        for answer in (history, listed):
            line = next(line for line in answer.content.split("\n") if job in line)
            assert shown in line, ascii(answer.content)
        for text in (posted.content, history.content, listed.content):
            assert _OVERRIDE not in text and "\u2029" not in text, ascii(text)
