"""Discord's upload limit is the destination's: a result posted in the channel (a --repeat's,
or any after its token expired) fits the server's limit, however large the interaction's
(a Nitro member's); one sent by direct message fits a DM's. A post a locked, archived thread
refuses goes by direct message, as one a channel refuses does. /show and U1-U4 fit their
interaction's limit, U1-U4 acknowledged before the upload. A result posted after its token
expired leaves its progress message a link to it, not "Queued" with a live Cancel, also when
its first try failed. One whose thread was archived while its token lived (Discord refuses
edits there) is posted in the thread, which unarchives it."""

from __future__ import annotations

import discord
import pytest

from bot.jobs.queue import delivery as job_delivery
from bot.jobs.queue.values import PRIVATELY
from cogs.results import posting
from cogs.results.fitted import SHOWN_AS_PREVIEW
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    calls_held,
    deliver_after_token_expiry,
    imagine,
    job_id_of,
    past_the_tokens,
)
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.fake_discord.rest import RESPONSE_DEFERRED_MESSAGE
from tests.support.pictures import has_picture

DETAILED = {"prompt": "a detailed cat", "steps": 2, "size": "256x256", "seed": 3}
# Discord's limits scaled down to this suite's small pictures (Discord's own are MiB).
SERVER_LIMIT, NITRO_LIMIT = 20_000, 1_000_000


def previewed_under(message: StoredMessage, limit: int) -> bool:
    [picture] = message.attachments
    preview = f"`/show {job_id_of(message)}` gives the original" in message.content
    return picture.size <= limit and picture.content_type == "image/jpeg" and preview


async def test_a_repeat_in_the_channel_fits_the_servers_limit_not_the_interactions(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_discord.set_upload_limits(server=SERVER_LIMIT, direct_messages=SERVER_LIMIT)
    monkeypatch.setattr(discord.Guild, "filesize_limit", property(lambda _: SERVER_LIMIT))
    async with start_easel():
        handle = await fake_discord.invoke_command(
            "imagine",
            {**DETAILED, "prompt": "a detailed cat --repeat 2"},
            attachment_size_limit=NITRO_LIMIT,
        )
        first = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        # The interaction's limit holds the original.
        assert first.attachments[0].content_type == "image/png"
        repeat = await fake_discord.wait_for_channel_message(
            lambda m: has_picture(m) and not m.is_ephemeral and m.id != first.id,
            timeout=RENDER_TIMEOUT_S,
        )
        assert previewed_under(repeat, SERVER_LIMIT), repeat.content


async def test_a_result_sent_by_direct_message_fits_a_dms_limit(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    dm_limit = 2_000
    fake_discord.set_upload_limits(server=NITRO_LIMIT, direct_messages=dm_limit)
    monkeypatch.setattr(posting, "DIRECT_MESSAGE_UPLOAD_LIMIT", dm_limit)
    fake_discord.revoke_send_messages(fake_discord.channel_id)  # the DM fallback
    async with start_easel() as bot:
        await deliver_after_token_expiry(fake_discord, bot, prompt="a detailed cat")
        direct = await fake_discord.wait_for_channel_message(
            has_picture,
            timeout=RENDER_TIMEOUT_S,
            channel=fake_discord.dm_channel_of(fake_discord.user_id),
        )
        assert previewed_under(direct, dm_limit), direct.content


async def test_a_result_for_a_locked_archived_thread_goes_by_direct_message(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    thread = fake_discord.add_thread("quiet")
    async with start_easel() as bot:
        posted = await deliver_after_token_expiry(
            fake_discord,
            bot,
            "a lighthouse",
            thread,
            meanwhile=lambda: fake_discord.archive_thread(thread, locked=True),
        )
        direct = await fake_discord.wait_for_channel_message(
            has_picture,
            timeout=RENDER_TIMEOUT_S,
            channel=fake_discord.dm_channel_of(fake_discord.user_id),
        )
        assert "a lighthouse" in direct.content and await posted is PRIVATELY


async def test_show_and_a_pick_fit_their_interactions_limit(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    limit = 3_000
    async with start_easel():
        grid = await imagine(fake_discord, "two detailed cats", count=2, seed=3, size="128x128")
        fake_discord.set_upload_limits(server=limit, direct_messages=limit)  # the next clicks'
        show = await fake_discord.invoke_command("show", {"job_id": job_id_of(grid)})
        shown = await show.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        pick = await fake_discord.click(grid, label="U1")
        picked = await pick.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert pick.response_type == RESPONSE_DEFERRED_MESSAGE  # before the upload
        for message in (shown, picked):
            assert all(picture.size <= limit for picture in message.attachments)
            assert SHOWN_AS_PREVIEW.strip() in message.content, message.content


async def test_the_progress_message_of_a_result_posted_after_expiry_points_to_it(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with start_easel() as bot:
        expired = calls_held(bot.results, "deliver", monkeypatch)
        monkeypatch.setattr(job_delivery, "DELIVERY_RETRY_WAITS_S", (0.0,))
        handle = await fake_discord.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        progress = await handle.wait_for_original(lambda message: not message.is_loading)
        assert progress.custom_ids and not progress.is_ephemeral  # Cancel
        past_the_tokens(fake_discord, bot, 16 * 60)
        fake_discord.fail("POST", "/channels/{channel}/messages", status=503)  # tried again
        expired.set()
        result = await fake_discord.wait_for_channel_message(
            lambda m: has_picture(m) and m.id != progress.id, timeout=RENDER_TIMEOUT_S
        )
        link = f"/{fake_discord.channel_id}/{result.id}"
        pointer = await handle.wait_for_original(lambda message: link in message.content)
        assert pointer.custom_ids == [] and pointer.attachments == []  # no Cancel left


async def test_the_progress_message_of_a_result_its_channel_refused_points_to_the_dm(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_discord.revoke_send_messages(fake_discord.channel_id)  # the DM fallback
    async with start_easel() as bot:
        expired = calls_held(bot.results, "deliver", monkeypatch)
        handle = await fake_discord.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        progress = await handle.wait_for_original(lambda message: not message.is_loading)
        assert progress.custom_ids and not progress.is_ephemeral  # Cancel
        past_the_tokens(fake_discord, bot, 16 * 60)
        expired.set()
        dm_channel = fake_discord.dm_channel_of(fake_discord.user_id)
        direct = await fake_discord.wait_for_channel_message(
            has_picture, timeout=RENDER_TIMEOUT_S, channel=dm_channel
        )
        link = f"/@me/{dm_channel}/{direct.id}"
        pointer = await handle.wait_for_original(lambda message: link in message.content)
        assert pointer.custom_ids == [] and "direct messages" in pointer.content


async def test_a_result_whose_thread_was_archived_while_its_token_lived_is_posted_there(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread = fake_discord.add_thread("quiet")
    async with start_easel() as bot:
        archived = calls_held(bot.results, "deliver", monkeypatch)
        handle = await fake_discord.invoke_command(
            "imagine", {"prompt": "a lighthouse", **QUICK}, channel=thread
        )
        progress = await handle.wait_for_original(lambda message: not message.is_loading)
        await fake_discord.archive_thread(thread)  # by a moderator, or as it went quiet
        archived.set()
        result = await fake_discord.wait_for_channel_message(
            lambda m: has_picture(m) and m.id != progress.id,
            timeout=RENDER_TIMEOUT_S,
            channel=thread,
        )
        assert "a lighthouse" in result.content
