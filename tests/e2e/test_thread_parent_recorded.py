"""A thread's channel, journaled with its job at submit (0041): a thread of an allowed channel
that Easel cannot see (a private one it was not added to) is delivered by the rules of such a
thread, not withheld as made where Easel is not enabled; a hidden thread's channel turned
age-restricted since keeps its picture out of direct messages; a thread in a channel Easel may
not view counts as age-restricted (Discord hides such a channel's flag from Easel); and a
job journaled before 0041, whose thread Discord does not describe for a moment, is delivered
when Discord answers, not withheld for good."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

import aiosqlite
import discord
import pytest

from bot.jobs.queue import admission
from db import jobs as journal
from db.database import connect
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    deliver_after_token_expiry,
    images_today,
    job_id_of,
    reply_to,
)
from tests.e2e.test_threads_of_allowed_channels import _allow
from tests.e2e.test_where_easel_cannot_see import _direct_message
from tests.fake_discord import FakeDiscord, Overwrite
from tests.fake_discord.payloads import PERMISSION_VIEW_CHANNEL
from tests.support.pictures import has_picture

WAIT_S = 30


async def until(condition: Callable[[], bool]) -> None:
    """Waits until ``condition()`` holds, polling (a loaded machine may take a while)."""
    async with asyncio.timeout(WAIT_S):
        while not condition():  # noqa: ASYNC110 (polled: the state is discord.py's cache)
            await asyncio.sleep(0.05)


async def until_async(condition: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(RENDER_TIMEOUT_S):
        while not await condition():  # noqa: ASYNC110 (polled: the state is the journal's)
            await asyncio.sleep(0.05)


async def started(conn: aiosqlite.Connection) -> bool:
    statuses = (journal.JobStatus.RUNNING, journal.JobStatus.DONE)
    return any([await journal.jobs_with_status(conn, status) for status in statuses])


async def test_a_hidden_private_thread_of_an_allowed_channel_gets_its_result(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Its job was admitted (the interaction names the thread's channel), then withheld at
    delivery, when Discord refused Easel the thread: "no longer enabled in the channel it was
    made in", refunded, nothing shown."""
    fake = fake_discord
    thread = fake.add_thread("secret", private=True)
    async with start_easel() as bot:
        await _allow(fake, fake.channel_id)
        handle = await fake.invoke_command("imagine", {"prompt": "a cat", **QUICK}, channel=thread)
        final = await handle.wait_for_original(
            lambda m: has_picture(m) or "not posted" in m.content, timeout=RENDER_TIMEOUT_S
        )
        assert has_picture(final), final.content
        # Its token expired: sent to its maker's direct messages, as such a thread's results.
        posted = await deliver_after_token_expiry(fake, bot, "a lighthouse", thread)
        await asyncio.wait_for(posted, RENDER_TIMEOUT_S)
        told = await _direct_message(fake, fake.user_id)
        assert told.startswith("1 **a lighthouse**"), told
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 2


async def test_a_hidden_threads_channel_turned_age_restricted_keeps_it_out_of_dms(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Made outside an age-restricted channel, in a private thread Easel cannot see, whose
    channel a moderator made age-restricted before its delivery: only a notice by DM."""
    fake = fake_discord
    thread = fake.add_thread("secret", private=True)
    async with start_easel() as bot:

        async def turned() -> None:
            fake.set_nsfw(fake.channel_id, True)
            await reply_to(fake, "help", user=fake.owner_id)  # delivers the change
            parent = bot.get_channel(fake.channel_id)
            assert isinstance(parent, discord.TextChannel) and parent.is_nsfw()

        posted = await deliver_after_token_expiry(
            fake, bot, "a lighthouse", thread, meanwhile=turned
        )
        await asyncio.wait_for(posted, RENDER_TIMEOUT_S)
        told = await _direct_message(fake, fake.user_id)
        assert told.startswith("0 Your job"), told
        assert "Easel cannot see the thread" in told, told


async def test_a_thread_in_a_channel_easel_may_not_view_counts_as_age_restricted(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Discord's channel obfuscation: a channel Easel may not view shows Easel no
    age-restriction flag (as if off, here), so a private thread in an age-restricted one was
    journaled as made outside one, and its pictures could go to direct messages."""
    fake = fake_discord
    adults = fake.add_text_channel(
        "adults",
        nsfw=True,
        overwrites=[Overwrite(fake.bot_user_id, deny=PERMISSION_VIEW_CHANNEL, member=True)],
    )
    thread = fake.add_thread("secret", parent=adults, private=True)
    async with start_easel() as bot:
        hidden = bot.get_channel(adults)
        assert isinstance(hidden, discord.TextChannel)
        hidden.nsfw = False  # the flag as obfuscation shows it
        handle = await fake.invoke_command("imagine", {"prompt": "a cat", **QUICK}, channel=thread)
        final = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        job = await bot.services.history.job(job_id_of(final))
        assert job is not None and job.age_restricted


async def test_a_thread_job_from_before_0041_waits_out_discords_failure(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job journaled without its thread's channel (as before 0041), its thread archived
    (the cache dropped it), delivered while Discord fails once to say what the thread is:
    tried again and posted in the thread, not withheld as made where Easel is not enabled."""
    fake = fake_discord
    thread = fake.add_thread("ideas")
    insert_job = journal.insert_job

    async def as_before_0041(conn: aiosqlite.Connection, job: journal.NewJob) -> None:
        await insert_job(conn, dataclasses.replace(job, thread_parent_id=None))

    monkeypatch.setattr(admission.journal, "insert_job", as_before_0041)
    async with start_easel() as bot:
        await _allow(fake, fake.channel_id)

        async def archived() -> None:
            # Started (the start's rules read from the cache): only its delivery asks Discord.
            conn = await connect(bot.settings.database_path)
            try:
                await until_async(lambda: started(conn))
            finally:
                await conn.close()
            await fake.archive_thread(thread)
            await until(lambda: bot.get_channel(thread) is None)
            fake.fail("GET", "/channels/{channel}", status=503, times=1)

        posted = await deliver_after_token_expiry(
            fake, bot, "a lighthouse", thread, meanwhile=archived
        )
        message_id = await asyncio.wait_for(posted, RENDER_TIMEOUT_S)
        assert isinstance(message_id, int), message_id
        assert fake.messages[message_id].channel_id == thread
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 1
        conn = await connect(bot.settings.database_path)
        try:
            (job,) = await journal.jobs_with_status(conn, journal.JobStatus.DONE)
        finally:
            await conn.close()
        assert job.thread_parent_id is None  # journaled as before 0041


async def test_a_notice_does_not_ask_again_what_discord_just_did_not_answer(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A late result of a private thread hidden from Easel, while Discord fails to say what
    that thread is: kept from direct messages to be safe, its notice sent without asking
    Discord the same question a second time (another wait for the same non-answer)."""
    fake = fake_discord
    thread = fake.add_thread("secret", private=True)
    channel_route = "/channels/{channel}"
    asked: list[int] = []
    async with start_easel() as bot:

        async def failing() -> None:
            asked.append(len(fake.calls_to("GET", channel_route)))
            fake.fail("GET", channel_route, status=503, times=1)

        posted = await deliver_after_token_expiry(
            fake, bot, "a lighthouse", thread, meanwhile=failing
        )
        await asyncio.wait_for(posted, RENDER_TIMEOUT_S)
        told = await _direct_message(fake, fake.user_id)
        assert told.startswith("0 Your job"), told
        assert len(fake.calls_to("GET", channel_route)) == asked[0] + 1
