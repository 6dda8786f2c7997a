"""Results Easel cannot post where they were made (AUD24): a private thread Easel was not
added to, a server that removed Easel before its result was posted, a channel where Easel may
not send messages with its maker's direct messages closed. The member learns what happened
and what brings the picture back, and is charged only for a picture they can have."""

from __future__ import annotations

import asyncio
import re

import pytest

from bot.app import EaselBot
from bot.settings import Settings
from db import jobs as journal
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    calls_held,
    deliver_after_token_expiry,
    images_today,
    past_the_tokens,
    reply_to,
)
from tests.e2e.test_servers_sharing_easel import (
    B_MEMBER,
    no_unfinished_jobs,
    queued_behind_a_render,
    until,
)
from tests.fake_discord import FakeDiscord
from tests.support.engines import HeldEngine
from tests.support.pictures import has_picture

WAIT_S = 60


def job_id_of(text: str) -> str:
    match = re.search(r"[Jj]ob `([0-9a-f]{16})`", text)
    assert match is not None, text
    return match.group(1)


async def _direct_message(fake: FakeDiscord, user_id: int) -> str:
    """The first message Easel sent to ``user_id``'s direct messages, with its attachments
    counted: ``"<n> <content>"``."""
    told = await fake.wait_for_channel_message(
        lambda m: True, channel=fake.dm_channel_of(user_id), timeout=WAIT_S
    )
    return f"{len(told.attachments)} {told.content}"


async def _told_of_a_late_result(fake: FakeDiscord, bot: EaselBot, thread: int) -> str:
    """A result made in ``thread`` and delivered after its token expired: what its maker's
    direct messages show of it (``_direct_message``)."""
    posted = await deliver_after_token_expiry(fake, bot, "a lighthouse", thread)
    await asyncio.wait_for(posted, RENDER_TIMEOUT_S)
    return await _direct_message(fake, fake.user_id)


async def test_a_private_thread_hidden_from_easel_sends_the_picture_by_dm(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Delivered after its token expired, a result of a private thread Easel was not added to
    cannot be posted there, and /show refuses it everywhere: it goes to its maker's direct
    messages (their own picture, not age-restricted), saying how to use it in the thread."""
    fake = fake_discord
    thread = fake.add_thread("secret", private=True)  # the tester's; Easel not a member
    async with start_easel() as bot:
        told = await _told_of_a_late_result(fake, bot, thread)
        assert told.startswith("1 "), told  # the picture itself
        assert "Easel cannot see the thread it was made in" in told, told
        assert "add Easel to that thread" in told, told
        assert "age-restricted" not in told, told
        # Charged: its maker has the picture.
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 1
        # /show in the thread cannot post it, and says what would.
        job_id = job_id_of(told)
        refused = await reply_to(fake, "show", {"job_id": job_id}, channel=thread)
        assert "once Easel is added to that thread" in refused.content, refused.content
    fake.take_violations()  # Easel's calls in a thread it may not see: refused, as meant


async def test_an_age_restricted_private_thread_hidden_from_easel_says_to_add_easel(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """The same in a thread of an age-restricted channel: the picture never goes to direct
    messages, and the notice says what brings it back (Easel added to the thread, then /show
    there), not an age-restricted channel where /show refuses it too."""
    fake = fake_discord
    adults = fake.add_text_channel("adults", nsfw=True)
    thread = fake.add_thread("secret", parent=adults, private=True)
    async with start_easel() as bot:
        told = await _told_of_a_late_result(fake, bot, thread)
        assert told.startswith("0 "), told  # a notice only
        assert "Easel cannot see the thread it was made in" in told, told
        assert "add Easel to that thread, then `/show" in told, told
        assert "in an age-restricted channel of the server" not in told, told
    fake.take_violations()


async def test_results_by_dm_copies_a_result_of_a_hidden_private_thread(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """/settings results_by_dm: a result posted in a private thread Easel was not added to
    (through the interaction, which needs no membership) is copied to DMs, as elsewhere."""
    fake = fake_discord
    thread = fake.add_thread("secret", private=True)
    async with start_easel():
        await reply_to(fake, "settings", {"results_by_dm": True})
        handle = await fake.invoke_command("imagine", {"prompt": "a cat", **QUICK}, channel=thread)
        await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        copy = await fake.wait_for_channel_message(
            has_picture, channel=fake.dm_channel_of(fake.user_id), timeout=WAIT_S
        )
        assert "A copy, as your settings ask" in copy.content
    fake.take_violations()


@pytest.fixture
def easel_settings_for_test(easel_settings_for_test: Settings) -> Settings:
    # Registered globally: another server's members may use Easel too.
    return easel_settings_for_test.model_copy(update={"dev_guild_id": None})


async def test_a_result_rendered_for_a_server_that_removed_easel_is_refunded(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Rendered, then Easel is removed from the server before its result is posted: nothing
    is posted, it is refunded, and its maker learns why (no /show "there")."""
    fake = fake_discord
    other = fake.add_guild("Server B")
    fake.add_member(fake.user_id, "tester", roles=(other.member_role_id,), guild=other.guild_id)
    async with start_easel() as bot:

        async def rendered_then_removed() -> None:
            # Rendered (its delivery waits for the gate), not cancelled by the removal.
            async with asyncio.timeout(RENDER_TIMEOUT_S):
                while not await journal.finished_undelivered(bot._db):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            [rendered] = await journal.finished_undelivered(bot._db)
            assert rendered.status is journal.JobStatus.DONE, rendered
            await fake.remove_bot(guild=other.guild_id)
            async with asyncio.timeout(WAIT_S):
                while bot.get_guild(other.guild_id) is not None:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)

        posted = await deliver_after_token_expiry(
            fake, bot, "a lighthouse", other.channel_id, meanwhile=rendered_then_removed
        )
        assert await asyncio.wait_for(posted, RENDER_TIMEOUT_S) is None
        told = await _direct_message(fake, fake.user_id)
        assert "was not posted: Easel is no longer in the server it was made in" in told, told
        assert "It does not count against your quota." in told, told
        assert "/show" not in told, told
        assert await images_today(bot.services, fake.user_id, other.guild_id) == 0


@pytest.mark.parametrize("token_alive", [True, False])
async def test_queued_jobs_cancelled_by_easels_removal_say_why(
    fake_discord: FakeDiscord, start_easel: StartEasel, token_alive: bool
) -> None:
    """Easel removed from a server with a member's job queued there: the member is told that
    is why (not a bare "Cancelled", nor a /history "there" that cannot run), uncharged."""
    fake = fake_discord
    other = fake.add_guild("Server B")
    fake.add_member(B_MEMBER, "b-member", roles=(other.member_role_id,), guild=other.guild_id)
    engine = HeldEngine()
    async with start_easel(lambda device: engine) as bot:
        with engine:
            blocker = await queued_behind_a_render(fake, engine, other, [("b job", B_MEMBER)])
            if not token_alive:
                past_the_tokens(fake, bot, 16 * 60)
            await fake.remove_bot(guild=other.guild_id)
            await until(lambda: no_unfinished_jobs(bot._db, other.guild_id))
        told = await _direct_message(fake, B_MEMBER)
        assert "Easel is no longer in the server it was made in" in told, told
        assert "It does not count against your quota." in told, told
        assert "/history" not in told and "Cancelled" not in told, told
        assert await images_today(bot.services, B_MEMBER, other.guild_id) == 0
        if token_alive:
            await blocker.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)


async def test_no_send_messages_and_closed_dms_point_to_show_here(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Easel may not send messages in the channel and the member's DMs are closed: its
    progress message (an interaction's, which needs no Send Messages) says /show brings the
    result back here, and it does."""
    fake = fake_discord
    fake.revoke_send_messages(fake.channel_id)
    async with start_easel() as bot:
        expired = calls_held(bot.results, "deliver", monkeypatch)
        handle = await fake.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        await handle.wait_for_original(lambda m: not m.is_loading)
        past_the_tokens(fake, bot, 16 * 60)
        fake.fail("POST", "/users/@me/channels", status=403, times=10)
        expired.set()
        final = await handle.wait_for_original(
            lambda m: "ended" in m.content, timeout=RENDER_TIMEOUT_S
        )
        job_id = job_id_of(final.content)
        assert f"`/show {job_id}` here brings it back" in final.content, final.content
        shown = await reply_to(fake, "show", {"job_id": job_id})
        assert has_picture(shown), shown.content
