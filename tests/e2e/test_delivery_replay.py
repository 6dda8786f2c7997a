"""A result's post that landed though its answer was lost (or Easel stopped before recording
it) is found in the channel after a restart, not posted a second time: the token had expired,
so the post was a channel message, which Discord's nonce folds only for a few minutes. Nor is
one whose try edited the interaction's original response while its token lived, then was
tried again in the channel once the token expired: that response is the post."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiosqlite
import discord
import discord.state
import pytest

from bot.app import EaselBot
from bot.jobs.queue import FinishedJob, job_queue
from bot.jobs.queue import delivery as job_delivery
from bot.jobs.queue.values import PRIVATELY
from bot.settings import Settings
from cogs.results.posting import DiscordResults
from cogs.results.progress import Pointer
from db import history as db_history
from db import jobs as journal
from db.database import connect
from tests.conftest import ErrorLogs
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    bot_clocks_on,
    calls_held,
    deliver_after_token_expiry,
    has_picture,
    job_id_of,
    kept_undelivered,
    reply_to,
)
from tests.fake_discord import FakeDiscord, InteractionHandle, StoredMessage
from tests.fake_discord.payloads import PERMISSION_READ_MESSAGE_HISTORY

HISTORY = ("GET", "/channels/{channel}/messages")
MESSAGE = ("GET", "/channels/{channel}/messages/{message}")
WEBHOOK_EDIT = "/webhooks/{app}/{token}/messages/{message}"


def posts_unrecorded(bot: EaselBot, monkeypatch: pytest.MonkeyPatch) -> None:
    """``bot``'s posts land, and it stops before linking each to its job."""
    post = bot.results._post

    async def landed_unrecorded(*args: Any, **kwargs: Any) -> int:
        await post(*args, **kwargs)
        raise ConnectionError("Easel stopped before recording the post")

    monkeypatch.setattr(bot.results, "_post", landed_unrecorded)


def posts_recorded(bot: EaselBot, monkeypatch: pytest.MonkeyPatch) -> asyncio.Queue[int]:
    """The ids of the messages ``bot`` records as its jobs' posts, as each is recorded."""
    history, recorded = bot.services.history, asyncio.Queue[int]()
    result_posted = history.result_posted

    async def recording(
        job_id: str, guild_id: int | None, channel_id: int | None, message_id: int
    ) -> bool:
        shown = await result_posted(job_id, guild_id, channel_id, message_id)
        recorded.put_nowait(message_id)
        return shown

    monkeypatch.setattr(history, "result_posted", recording)
    return recorded


def answers_lost(bot: EaselBot, monkeypatch: pytest.MonkeyPatch) -> None:
    """``bot``'s posts land, but Discord's answer to each is lost."""
    deliver = bot.results.deliver

    async def answer_lost(job: FinishedJob) -> int | None:
        await deliver(job)
        raise ConnectionError("Discord's answer was lost")

    monkeypatch.setattr(bot.results, "deliver", answer_lost)


async def tokens_expired(conn: aiosqlite.Connection) -> None:
    """Expired for Discord: the bot's hourly sweep blanks them, as this does now."""
    await journal.clear_expired_tokens(conn, time.time() + 10_000)


async def tokens_expired_in(settings: Settings) -> None:
    """``tokens_expired`` in the journal of a stopped Easel."""
    conn = await connect(settings.database_path)
    try:
        await tokens_expired(conn)
    finally:
        await conn.close()


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
        await tokens_expired(conn)
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
    monkeypatch.setattr(job_delivery, "DELIVERY_RETRY_WAITS_S", ())  # the restart tries again
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
    assert posts_of(fake_discord, job_id) == [first]
    # Found as one of the job's recorded posts, by its id: the channel's history not read.
    assert len(fake_discord.calls_to(*MESSAGE)) == 1 and fake_discord.calls_to(*HISTORY) == []


async def edited_into_the_original_response(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> StoredMessage:
    """A result whose try edited it into the interaction's original response while its token
    lived, then lost Discord's answer, as Easel stopped: the next start tries it again."""
    monkeypatch.setattr(job_delivery, "DELIVERY_RETRY_WAITS_S", ())  # the restart tries again
    async with start_easel() as bot:
        answers_lost(bot, monkeypatch)
        handle = await fake_discord.invoke_command("imagine", {"prompt": "a lighthouse", **QUICK})
        await handle.wait_for_ack()
        return await fake_discord.wait_for_channel_message(
            lambda m: has_picture(m) and not m.is_ephemeral, timeout=RENDER_TIMEOUT_S
        )


async def test_an_edit_of_the_original_response_that_landed_is_not_posted_again_in_the_channel(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    edited = await edited_into_the_original_response(fake_discord, start_easel, monkeypatch)
    job_id = job_id_of(edited)
    # Replayed in the channel, as the token is gone.
    posted, _ = await replayed_after_restart(
        start_easel, easel_settings_for_test, monkeypatch, job_id
    )
    assert posted == edited.id
    assert posts_of(fake_discord, job_id) == [edited]


async def test_a_result_sent_by_dm_whose_answer_was_lost_is_not_sent_again(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(job_delivery, "DELIVERY_RETRY_WAITS_S", ())  # the restart tries again
    direct = fake_discord.dm_channel_of(fake_discord.user_id)
    async with start_easel() as bot:
        await reply_to(fake_discord, "settings", {"private_results": True})
        answers_lost(bot, monkeypatch)
        # Private, its token expired: the result goes to the maker's direct messages.
        await deliver_after_token_expiry(fake_discord, bot, "a lighthouse")
        first = await fake_discord.wait_for_channel_message(
            has_picture, timeout=RENDER_TIMEOUT_S, channel=direct
        )
        job_id = job_id_of(first)
    posted, job = await replayed_after_restart(
        start_easel, easel_settings_for_test, monkeypatch, job_id
    )
    assert posted is PRIVATELY and job is not None and job.delivered_at is not None
    sent = [m for m in fake_discord.messages.values() if m.channel_id == direct and has_picture(m)]
    assert sent == [first]


async def test_a_thread_discord_py_forgot_is_checked_before_its_history_is_read(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Archived, a thread is no longer in discord.py's cache; without Read Message History,
    Discord answers a read of its history with no messages. The bot fetches the thread, sees
    it may not read it, says so, and does not read."""
    monkeypatch.setattr(job_delivery, "DELIVERY_RETRY_WAITS_S", ())  # the restart tries again
    thread = fake_discord.add_thread("quiet")
    async with start_easel() as bot:
        posts_unrecorded(bot, monkeypatch)
        await deliver_after_token_expiry(fake_discord, bot, "a lighthouse", thread)
        first = await fake_discord.wait_for_channel_message(
            has_picture, timeout=RENDER_TIMEOUT_S, channel=thread
        )
        job_id = job_id_of(first)
    await fake_discord.archive_thread(thread)
    fake_discord.set_overwrite(
        fake_discord.channel_id, fake_discord.bot_user_id, deny=PERMISSION_READ_MESSAGE_HISTORY
    )
    caplog.set_level(logging.WARNING, logger="cogs.results.earlier_posts")
    await replayed_after_restart(start_easel, easel_settings_for_test, monkeypatch, job_id)
    assert fake_discord.calls_to(*HISTORY) == []
    [unchecked] = [
        r.getMessage() for r in caplog.records if "cannot be looked for" in r.getMessage()
    ]
    assert job_id in unchecked and "Read Message History" in unchecked


async def test_a_replay_before_the_gateway_describes_the_server_waits_to_read_its_history(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A start's replay runs before the gateway connects, and a real one describes the server
    later than the local fake (after discord.py stopped waiting for it): the bot's roles
    there, which say whether it may read the history, are not known yet. The replay waits
    for them, then finds the post a crash kept from being recorded."""
    monkeypatch.setattr(job_delivery, "DELIVERY_RETRY_WAITS_S", ())  # the restart tries again
    async with start_easel() as bot:
        posts_unrecorded(bot, monkeypatch)
        await deliver_after_token_expiry(fake_discord, bot, "a lighthouse")
        first = await fake_discord.wait_for_channel_message(
            lambda m: has_picture(m) and not m.is_ephemeral, timeout=RENDER_TIMEOUT_S
        )
        job_id = job_id_of(first)
    describe = discord.state.ConnectionState.parse_guild_create

    def described_later(state: discord.state.ConnectionState, data: Any) -> None:
        asyncio.get_running_loop().call_later(1.0, describe, state, data)

    monkeypatch.setattr(discord.state.ConnectionState, "parse_guild_create", described_later)
    posted, _ = await replayed_after_restart(
        start_easel, easel_settings_for_test, monkeypatch, job_id
    )
    assert posted == first.id
    assert posts_of(fake_discord, job_id) == [first]
    assert len(fake_discord.calls_to(*HISTORY)) == 1


async def queued_as_easel_stops(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> tuple[InteractionHandle, StoredMessage]:
    """An /imagine whose job is still queued (its start held) when Easel stops, and whose
    token expires before the next start: its interaction, and its "Queued" progress message,
    which only the journal knows now (as one of the job's posts)."""
    monkeypatch.setattr(job_queue, "SHUTDOWN_GRACE_S", 0.5)  # the held start is abandoned
    async with start_easel() as bot:
        calls_held(bot.results, "why_not_started", monkeypatch)
        recorded = posts_recorded(bot, monkeypatch)
        handle = await fake_discord.invoke_command("imagine", {"prompt": "a lighthouse", **QUICK})
        progress = await handle.wait_for_original(lambda message: not message.is_loading)
        assert await asyncio.wait_for(recorded.get(), RENDER_TIMEOUT_S) == progress.id
    fake_discord.advance_time(16 * 60)
    return handle, progress


@pytest.mark.parametrize("first_post_fails", [False, True], ids=["posted", "posted at a retry"])
async def test_a_job_queued_across_a_restart_points_its_progress_message_to_its_result(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
    first_post_fails: bool,
) -> None:
    """Easel stopped while the job was queued; the next start renders it once its token
    expired, so its result is a new message in the channel, and its "Queued" progress
    message links to it. Also when the first post fails (Discord busy) after "posting…" was
    shown there, and Easel may not read the channel's history: the retry knows that message
    shows no outcome (review B2 #4)."""
    handle, progress = await queued_as_easel_stops(fake_discord, start_easel, monkeypatch)
    if first_post_fails:
        fake_discord.set_overwrite(
            fake_discord.channel_id, fake_discord.bot_user_id, deny=PERMISSION_READ_MESSAGE_HISTORY
        )
        fake_discord.fail("POST", "/channels/{channel}/messages", status=503)
    await tokens_expired_in(easel_settings_for_test)
    async with start_easel():
        result = await fake_discord.wait_for_channel_message(
            lambda m: has_picture(m) and m.id != progress.id, timeout=RENDER_TIMEOUT_S
        )
        link = f"/{fake_discord.channel_id}/{result.id}"
        pointer = await handle.wait_for_original(lambda message: link in message.content)
        assert pointer.custom_ids == []  # no Cancel left


async def test_a_restart_s_delivery_given_up_leaves_no_posting_on_its_progress_message(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
    error_logs: ErrorLogs,
) -> None:
    """The restart's delivery shows "posting…" on the job's progress message, then Discord
    refuses the result's post for good (400), and its failure's post too: the delivery is
    given up, and the progress message says its outcome was not posted, not "posting…"."""
    error_logs.expect("its result cannot be posted")
    error_logs.expect("its end could not be posted")
    handle, progress = await queued_as_easel_stops(fake_discord, start_easel, monkeypatch)
    job_id = progress.custom_ids[0].rsplit(":", 1)[1]  # its Cancel's
    fake_discord.fail("POST", "/channels/{channel}/messages", times=2, status=400)
    await tokens_expired_in(easel_settings_for_test)
    async with start_easel():
        told = await handle.wait_for_original(
            lambda message: "could not be posted" in message.content, timeout=RENDER_TIMEOUT_S
        )
    assert told.content == (
        f"Job `{job_id}` ended; its outcome could not be posted "
        "(Discord refused it with error 400)."
    )
    assert told.custom_ids == []  # no Cancel left
    edits = [
        call.json["content"]
        for call in fake_discord.calls_to("PATCH", "/channels/{channel}/messages/{message}")
        if call.path.endswith(f"/{progress.id}")
    ]
    assert edits == [f"Job `{job_id}` ended; posting…"] * 2 + [told.content]
    assert [m for m in fake_discord.messages.values() if has_picture(m)] == []


@pytest.mark.parametrize("tried_before", [False, True], ids=["never tried", "tried before"])
async def test_a_progress_message_deleted_while_easel_was_offline_keeps_its_result_unposted(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tried_before: bool,
) -> None:
    """Its deletion's event was lost with Easel offline: the restart's delivery learns of it
    from the progress message, before posting anything, and withdraws the job as the
    deletion would have; also when a try of its delivery ran before (its answer lost), so
    the look for that try's post is what finds the message gone."""
    _, progress = await queued_as_easel_stops(fake_discord, start_easel, monkeypatch)
    await fake_discord.delete_messages(fake_discord.messages[progress.id])
    job_id = progress.custom_ids[0].rsplit(":", 1)[1]  # its Cancel's
    if tried_before:
        conn = await connect(easel_settings_for_test.database_path)
        try:
            await journal.mark_post_attempted(conn, job_id, time.time())
            await conn.commit()
        finally:
            await conn.close()
    posted, job = await replayed_after_restart(
        start_easel, easel_settings_for_test, monkeypatch, job_id
    )
    assert posted is None and job is not None and job.withdrawn_at is not None
    assert [m for m in fake_discord.messages.values() if has_picture(m)] == []
    # Unlinked as a deletion heard would be: an admin's restore is not undone by a later
    # re-post's look for the dead message.
    conn = await connect(easel_settings_for_test.database_path)
    try:
        assert await db_history.posts_of(conn, job_id) == ()
    finally:
        await conn.close()
    # The one read (or edit) that found it gone, as Discord answers it.
    (read_of_the_deleted,) = fake_discord.take_violations()
    assert read_of_the_deleted.startswith(f"unknown-resource: message {progress.id} ")


async def test_a_restart_never_points_a_result_in_the_original_response_to_its_copy(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The try's edit made the original response the result, its answer lost; the restart
    may not read it (no Read Message History), so it posts the result again, and leaves the
    original response as it is, where Discord would let Easel edit it into a pointer."""
    edited = await edited_into_the_original_response(fake_discord, start_easel, monkeypatch)
    job_id = job_id_of(edited)
    fake_discord.set_overwrite(
        fake_discord.channel_id, fake_discord.bot_user_id, deny=PERMISSION_READ_MESSAGE_HISTORY
    )
    pointed: list[str] = []
    point_to_result = DiscordResults.point_to_result

    def pointing(results: DiscordResults, job_id: str, pointer: Pointer) -> None:
        pointed.append(pointer.text)
        point_to_result(results, job_id, pointer)

    monkeypatch.setattr(DiscordResults, "point_to_result", pointing)
    posted, _ = await replayed_after_restart(
        start_easel, easel_settings_for_test, monkeypatch, job_id
    )
    assert posted not in (None, edited.id)  # Easel could not tell, so it is there twice
    assert pointed == []
    assert has_picture(fake_discord.messages[edited.id]) and edited.custom_ids


async def test_a_result_refused_for_a_reset_bot_token_is_posted_by_the_next_start(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
    error_logs: ErrorLogs,
) -> None:
    error_logs.expect("Discord refused the bot token")
    token = fake_discord.token
    refused = asyncio.Event()

    async def reset() -> None:
        fake_discord.reset_token("reset-by-the-operator")

    async with start_easel() as bot:
        deliver = bot.results.deliver

        async def noting_refusals(job: FinishedJob) -> int | None:
            try:
                return await deliver(job)
            except discord.HTTPException as error:
                if error.status == 401:
                    refused.set()
                raise

        monkeypatch.setattr(bot.results, "deliver", noting_refusals)
        # Its interaction's token expired: its post is a channel message, with the bot's token.
        await deliver_after_token_expiry(fake_discord, bot, "a lighthouse", meanwhile=reset)
        await asyncio.wait_for(refused.wait(), RENDER_TIMEOUT_S)
    assert fake_discord.take_violations()  # the posts with the old token, refused
    job, pictures, refunded = await kept_undelivered(easel_settings_for_test)
    # Kept as it was: done, its picture kept (posted below), counted against the quota.
    assert job.status is journal.JobStatus.DONE and job.delivery_retry_at is None
    assert pictures == 1 and not refunded

    fake_discord.reset_token(token)  # the new token, as .env now holds it
    posted, delivered = await replayed_after_restart(
        start_easel, easel_settings_for_test, monkeypatch, job.id
    )
    assert delivered is not None and delivered.delivered_at is not None
    assert [m.id for m in posts_of(fake_discord, job.id)] == [posted]


async def test_a_401_on_a_post_with_a_bot_token_discord_still_takes_holds_no_result(
    fake_discord: FakeDiscord, start_easel: StartEasel, caplog: pytest.LogCaptureFixture
) -> None:
    """A 401 that was not the token's (its check, one authenticated call, passes): the post is
    tried again as after a passing failure, and nothing later waits for a restart."""

    async def one_401() -> None:
        fake_discord.fail("POST", "/channels/{channel}/messages", status=401)

    async with start_easel() as bot:
        # Its interaction's token expired: its post is a channel message, with the bot's token.
        first = await deliver_after_token_expiry(
            fake_discord, bot, "a lighthouse", meanwhile=one_401
        )
        posted = await asyncio.wait_for(first, RENDER_TIMEOUT_S)
        bot.queue.set_sink(bot.results)  # the late sink's done, and its clock
        bot_clocks_on(bot, 0)
        # A later result, in the interaction's original response (its own token).
        handle = await fake_discord.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert not bot.is_closed()
    assert posted is not None and has_picture(fake_discord.messages[posted])
    said = [r.getMessage() for r in caplog.records if "(401)" in r.getMessage()]
    assert len(said) == 1 and "but takes the bot token; tried again" in said[0]


async def test_a_401_on_the_interactions_webhook_posts_the_result_in_the_channel(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Discord refuses the edit of the interaction's original response with a 401 that is not
    Invalid Webhook Token, while its token lives: never the bot's token (an interaction's
    webhook carries none), so the result is posted in the channel at once, as after the
    token's expiry, not held for the bot token's check and tried again on the webhook."""
    async with start_easel() as bot:
        deliver = bot.results.deliver
        first: asyncio.Future[object] = asyncio.get_running_loop().create_future()

        async def webhook_refused(job: FinishedJob) -> object:
            fake_discord.fail("PATCH", WEBHOOK_EDIT, times=20, status=401)
            try:
                posted = await deliver(job)
            except Exception as error:
                if not first.done():
                    first.set_exception(error)
                raise
            if not first.done():
                first.set_result(posted)
            return posted

        monkeypatch.setattr(bot.results, "deliver", webhook_refused)
        handle = await fake_discord.invoke_command("imagine", {"prompt": "a lighthouse", **QUICK})
        posted = await asyncio.wait_for(first, RENDER_TIMEOUT_S)
    original = handle.original
    assert isinstance(posted, int) and original is not None and posted != original.id
    assert has_picture(fake_discord.messages[posted]), fake_discord.messages[posted].content
    assert not has_picture(original)
