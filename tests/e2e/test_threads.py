"""Threads, held through the fake Discord: a private thread's pictures are for the members
added to it and for those who manage threads in its parent (reading the parent is not
enough), a thread of an age-restricted channel is age-restricted for admission, and a form
submitted in the channel it came from is checked against the member's permissions there
(their own results excepted: nothing of them is hidden from their maker)."""

from __future__ import annotations

import logging

import pytest

from bot.policy.visibility import NOT_READABLE, NOT_YOURS_TO_CLICK, THREAD_CHECK_FAILED
from bot.user_errors import Reason
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    has_picture,
    images_today,
    imagine,
    kept_refusals,
    modal_fields,
    refusals_counted,
    reply_to,
)
from tests.fake_discord import FakeDiscord, InteractionHandle, StoredMessage
from tests.fake_discord.payloads import (
    PERMISSION_MANAGE_THREADS,
    PERMISSION_READ_MESSAGE_HISTORY,
)

OUTSIDER = 6161  # reads the parent channel, was not added to the private thread
MANAGER = 6262  # Manage Threads in the parent, not added either
THREAD_MEMBER = "/channels/{channel}/thread-members/{user_id}"


async def refusal_of(
    handle: InteractionHandle, sentence: str = NOT_YOURS_TO_CLICK
) -> StoredMessage:
    refused = await handle.wait_for_original(lambda m: not m.is_loading)
    assert refused.is_ephemeral and sentence in refused.content, refused
    assert "lighthouse" not in refused.content
    return refused


async def test_a_private_threads_pictures_are_for_its_members_and_thread_managers(
    fake_discord: FakeDiscord, start_easel: StartEasel, caplog: pytest.LogCaptureFixture
) -> None:
    fake = fake_discord
    fake.add_member(OUTSIDER, "outsider", roles=(fake.member_role_id,))
    fake.add_member(MANAGER, "manager", roles=(fake.member_role_id,))
    fake.set_overwrite(fake.channel_id, MANAGER, allow=PERMISSION_MANAGE_THREADS)
    secret = fake.add_thread("secret", private=True, members=[fake.bot_user_id])
    async with start_easel() as bot:
        made = await fake.invoke_command(
            "imagine", {"prompt": "the secret lighthouse", **QUICK}, channel=secret
        )
        result = await made.wait_for_original(has_picture, RENDER_TIMEOUT_S)
        assert result.channel_id == secret and not result.is_ephemeral
        copy = await fake.post_user_message("a copy", user=fake.bot_user_id)  # in the parent
        copy.payload["components"] = result.components

        # The outsider reads the parent: a copy of the buttons there and the message's link
        # are refused all the same.
        await refusal_of(await fake.click(copy, label="Remix", user=OUTSIDER))
        await refusal_of(await fake.click(copy, label="Upscale (2x)", user=OUTSIDER))
        linked = await fake.invoke_command("vary", {"message": result.jump_url}, user=OUTSIDER)
        await refusal_of(linked, NOT_READABLE)

        # The maker in the thread, a thread manager from the parent, and the outsider once
        # added to the thread get the form with the prompt.
        for user, message in ((fake.user_id, result), (MANAGER, copy)):
            opened = await fake.click(message, label="Remix", user=user)
            assert "Prompt" in str(await opened.wait_for_modal())
        fake.set_thread_member(secret, OUTSIDER)
        # While Discord fails to say who is in the thread: refused, not answered with an
        # internal error, and told it was Discord (a member of the thread has lost nothing):
        # a copy's button, one in the thread, and the message's link.
        asked = len(fake.calls_to("GET", THREAD_MEMBER))
        discords_before = refusals_counted(Reason.DISCORD)
        with caplog.at_level(logging.WARNING, logger="cogs.visibility"):
            for message in (copy, result):
                fake.fail("GET", THREAD_MEMBER, status=503)
                clicked = await fake.click(message, label="Remix", user=OUTSIDER)
                await refusal_of(clicked, THREAD_CHECK_FAILED)
            fake.fail("GET", THREAD_MEMBER, status=503)
            linked = await fake.invoke_command("vary", {"message": result.jump_url}, user=OUTSIDER)
            await refusal_of(linked, THREAD_CHECK_FAILED)
        assert len(fake.calls_to("GET", THREAD_MEMBER)) == asked + 3
        # The operator sees each of Discord's failures once, with what was asked (ids only).
        asked_of_discord = f"whether member {OUTSIDER} is in private thread {secret}"
        told = [r.getMessage() for r in caplog.records if r.name == "cogs.visibility"]
        assert [asked_of_discord in message for message in told] == [True] * 3, told
        assert not any("lighthouse" in message for message in told)
        # The server's dashboard keeps the outsider's refusals, but not Discord's failures.
        kept = [sentence for _, sentence in await kept_refusals(bot, fake.guild_id)]
        assert any(NOT_READABLE in sentence for sentence in kept), kept
        assert not any(THREAD_CHECK_FAILED in sentence for sentence in kept), kept
        asked += 3
        opened = await fake.click(copy, label="Remix", user=OUTSIDER)
        assert "the secret lighthouse" in str(await opened.wait_for_modal())
        # Discord's "yes" is kept a while: the next click in the thread asks nothing.
        opened = await fake.click(result, label="Remix", user=OUTSIDER)
        assert "the secret lighthouse" in str(await opened.wait_for_modal())
        assert len(fake.calls_to("GET", THREAD_MEMBER)) == asked + 1
        assert await images_today(bot.services, OUTSIDER, fake.guild_id) == 0
        assert bot.queue.queued_count() == 0
    # Each is counted under its own reason, none of the member's doing (recorded after the
    # member was told: read once Easel stopped).
    assert refusals_counted(Reason.DISCORD) - discords_before == 3


async def test_threads_are_checked_like_discord_does(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A thread of an age-restricted channel is one (admission used to read a thread as not
    age-restricted); a Remix form opened in a channel and submitted there after the member
    lost Read Message History is refused (the check used to be skipped in the job's own
    channel)."""
    fake = fake_discord
    fake.add_member(OUTSIDER, "outsider", roles=(fake.member_role_id,))
    adults = fake.add_text_channel("adults", nsfw=True)
    after_dark = fake.add_thread("after dark", parent=adults)
    async with start_easel() as bot:
        original = await imagine(fake, "a lighthouse at dusk")
        opened = await fake.click(original, label="Remix", user=OUTSIDER)
        values = {
            custom_id: v for custom_id, v in modal_fields(await opened.wait_for_modal()).values()
        }
        fake.set_overwrite(fake.channel_id, OUTSIDER, deny=PERMISSION_READ_MESSAGE_HISTORY)
        await refusal_of(await fake.submit_modal(opened, values, user=OUTSIDER))
        assert await images_today(bot.services, OUTSIDER, fake.guild_id) == 0
        # Their own result there, though, is theirs to remix (its prompt is their own).
        own = await imagine(fake, "my own lighthouse", user=OUTSIDER)
        opened = await fake.click(own, label="Remix", user=OUTSIDER)
        assert "my own lighthouse" in str(await opened.wait_for_modal())

        await reply_to(
            fake, "easel-admin nsfw", {"policy": "age_restricted_only"}, user=fake.owner_id
        )
        made = await fake.invoke_command(
            "imagine", {"prompt": "a moonlit lighthouse", **QUICK}, channel=after_dark
        )
        admitted = await made.wait_for_original(lambda m: not m.is_loading)
        assert not admitted.is_ephemeral, admitted.content
        assert (await made.wait_for_original(has_picture, RENDER_TIMEOUT_S)).channel_id == (
            after_dark
        )
        refused = await reply_to(fake, "imagine", {"prompt": "a lighthouse", **QUICK})
        assert refused.is_ephemeral and "only in age-restricted channels" in refused.content
