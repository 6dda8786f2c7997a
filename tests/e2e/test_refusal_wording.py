"""Refusals of what a member typed read as sentences, in one style whichever parser refused
it (the prompt's flags, the request's options): capitalised, the problem and the accepted
range named, a full stop at the end."""

from __future__ import annotations

from tests.e2e.helpers import QUICK, StartEasel, reply_to
from tests.fake_discord import FakeDiscord


async def test_flag_and_option_refusals_are_sentences_naming_the_range(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel() as bot:
        flag = await reply_to(fake_discord, "imagine", {"prompt": "a cat --seed x", **QUICK})
        twice = await reply_to(
            fake_discord, "imagine", {"prompt": "a cat --ar 2:1 --ar 3:1", **QUICK}
        )
        steps = await reply_to(fake_discord, "imagine", {"prompt": "a cat --steps 151"})
        assert bot.queue.queued_count() == 0
    assert flag.is_ephemeral and flag.content == (
        "Bad value 'x' for --seed: expected --seed N with N a whole number between 0 and "
        "9223372036854775807, or -1 for a random seed."
    ), flag.content
    assert twice.content == "--ar is given twice; keep one.", twice.content
    assert steps.content == (
        "Bad value '151' for --steps: expected --steps N with N a whole number between 1 and 150."
    ), steps.content
