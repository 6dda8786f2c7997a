"""A result's post that landed though its answer was lost (or Easel stopped before recording
it) is found in the channel after a restart, not posted a second time: the token had expired,
so the post was a channel message, which Discord's nonce folds only for a few minutes. Nor is
one whose try edited the interaction's original response while its token lived, then was
tried again in the channel once the token expired: that response is the post."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.app import EaselBot
from bot.jobs import queue as job_queue
from bot.jobs.queue import FinishedJob
from bot.settings import Settings
from cogs.results.posting import DiscordResults
from db import jobs as journal
from db.database import connect
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    deliver_after_token_expiry,
    has_picture,
    job_id_of,
)
from tests.fake_discord import FakeDiscord, StoredMessage

HISTORY = ("GET", "/channels/{channel}/messages")
MESSAGE = ("GET", "/channels/{channel}/messages/{message}")


def answers_lost(bot: EaselBot, monkeypatch: pytest.MonkeyPatch) -> None:
    """``bot``'s posts land, but Discord's answer to each is lost."""
    deliver = bot.results.deliver

    async def answer_lost(job: FinishedJob) -> int | None:
        await deliver(job)
        raise ConnectionError("Discord's answer was lost")

    monkeypatch.setattr(bot.results, "deliver", answer_lost)


async def replayed_after_restart(
    start_easel: StartEasel,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    job_id: str,
) -> tuple[int | None, journal.JobRecord | None]:
    """Once its token expired, a restart replays ``job_id``'s undelivered result: the post it
    returns, and the job as journaled after."""
    conn = await connect(settings.database_path)
    try:
        # Expired for Discord: the bot's hourly sweep blanks it, as this does now.
        await journal.clear_expired_tokens(conn, time.time() + 10_000)
        replayed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        replay = DiscordResults.deliver

        async def replaying(results: DiscordResults, job: FinishedJob) -> int | None:
            message_id = await replay(results, job)
            if job.job_id == job_id:
                replayed.set_result(message_id)
            return message_id

        monkeypatch.setattr(DiscordResults, "deliver", replaying)
        async with start_easel():
            posted = await asyncio.wait_for(replayed, RENDER_TIMEOUT_S)
        return posted, await journal.get_job(conn, job_id)
    finally:
        await conn.close()


def posts_of(fake_discord: FakeDiscord, job_id: str) -> list[StoredMessage]:
    """The channel's messages that carry ``job_id``'s picture."""
    return [
        message
        for message in fake_discord.messages.values()
        if message.channel_id == fake_discord.channel_id
        and any(job_id in file.filename for file in message.attachments)
    ]


async def test_a_post_whose_answer_was_lost_is_found_after_a_restart_not_posted_again(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(job_queue, "DELIVERY_RETRY_WAITS_S", ())  # the restart tries again
    async with start_easel() as bot:
        answers_lost(bot, monkeypatch)
        await deliver_after_token_expiry(fake_discord, bot, "a lighthouse")
        first = await fake_discord.wait_for_channel_message(
            lambda m: has_picture(m) and not m.is_ephemeral, timeout=RENDER_TIMEOUT_S
        )
        job_id = job_id_of(first)
    assert fake_discord.calls_to(*HISTORY) == []  # the first try had nothing to look for
    posted, job = await replayed_after_restart(
        start_easel, easel_settings_for_test, monkeypatch, job_id
    )
    assert posted == first.id
    assert job is not None and job.delivered_at is not None
    assert job.result_message_id == first.id  # recorded as its post
    assert posts_of(fake_discord, job_id) == [first]
    # Found as one of the job's recorded posts, by its id: the channel's history not read.
    assert len(fake_discord.calls_to(*MESSAGE)) == 1 and fake_discord.calls_to(*HISTORY) == []


async def test_an_edit_of_the_original_response_that_landed_is_not_posted_again_in_the_channel(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(job_queue, "DELIVERY_RETRY_WAITS_S", ())  # the restart tries again
    async with start_easel() as bot:
        answers_lost(bot, monkeypatch)
        handle = await fake_discord.invoke_command("imagine", {"prompt": "a lighthouse", **QUICK})
        await handle.wait_for_ack()
        edited = await fake_discord.wait_for_channel_message(
            lambda m: has_picture(m) and not m.is_ephemeral, timeout=RENDER_TIMEOUT_S
        )
        job_id = job_id_of(edited)
    # Replayed in the channel, as the token is gone.
    posted, _ = await replayed_after_restart(
        start_easel, easel_settings_for_test, monkeypatch, job_id
    )
    assert posted == edited.id
    assert posts_of(fake_discord, job_id) == [edited]
