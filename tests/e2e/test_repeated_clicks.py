"""A member's double click of U1 or DM me posts the picture or sends the copy once (the second
click is told privately that the first is being answered); another member's click is their
own, and so is a click again after DM me found the member's direct messages closed."""

from __future__ import annotations

import asyncio

from cogs.results.repeated_clicks import ALREADY_ANSWERING
from tests.e2e.helpers import StartEasel, imagine
from tests.fake_discord import FakeDiscord
from tests.fake_discord.records import InteractionHandle
from tests.support.engines import InstantEngine
from tests.support.pictures import has_picture

OTHER = 5252


async def answers(handles: list[InteractionHandle]) -> list[str]:
    """What each click's member read, "picture" for a posted picture, in the clicks' order
    (the guard's reply, private)."""
    read = [await handle.wait_for_answer() for handle in handles]
    assert all(answer.is_ephemeral for answer in read if answer.content == ALREADY_ANSWERING)
    return ["picture" if has_picture(answer) else answer.content for answer in read]


async def test_a_double_click_of_u1_or_dm_me_is_answered_once(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    fake.add_member(OTHER, "other", roles=(fake.member_role_id,))
    async with start_easel(lambda _device: InstantEngine()):
        grid = await imagine(fake, "two cats", count=2)
        picks = await asyncio.gather(
            *(fake.click(grid, label="U1", user=user) for user in (None, None, OTHER))
        )
        assert sorted(await answers(list(picks))) == sorted(
            ["picture", ALREADY_ANSWERING, "picture"]
        )
        copies = await asyncio.gather(*(fake.click(grid, label="DM me") for _ in range(2)))
        assert sorted(await answers(list(copies))) == sorted(
            ["Sent to your direct messages.", ALREADY_ANSWERING]
        )
    dm_channel = fake.dm_channel_of(fake.user_id)
    copied = [m for m in fake.messages.values() if m.channel_id == dm_channel and m.attachments]
    assert len(copied) == 1


async def test_dm_me_refused_for_closed_direct_messages_may_be_clicked_again_at_once(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    async with start_easel(lambda _device: InstantEngine()):
        result = await imagine(fake, "a cat")
        fake.fail("POST", "/users/@me/channels", status=403)  # the member's DMs closed
        refused = await (await fake.click(result, label="DM me")).wait_for_answer()
        assert refused.content.startswith("I cannot send you direct messages")
        # The member allows them, and clicks again within the seconds a repeat is caught in.
        retried = await (await fake.click(result, label="DM me")).wait_for_answer()
        assert retried.content == "Sent to your direct messages."
