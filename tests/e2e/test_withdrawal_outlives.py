"""A moderator's withdrawal outlives what Discord and the members do next, through the fake
Discord: a channel or thread deleted (no deletion of its messages announced) withdraws the
jobs posted there and in its threads, archived ones too, and a withdrawn picture's maker
running /forget-me does not make a saved copy of it usable again in the server."""

from __future__ import annotations

import asyncio

import pytest

from bot.policy.moderation import WITHDRAWN_PICTURE
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, StartEasel, imagine, job_id_of, reply_to
from tests.e2e.test_moderation_after_the_fact import (
    WITHDRAWAL_WAIT_S,
    deletions_read,
    saved_again,
    show,
)
from tests.fake_discord import FakeDiscord
from tests.support.pictures import has_picture

ALT = 5454


async def test_a_deleted_channel_or_thread_withdraws_the_jobs_posted_in_it(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_discord
    doomed = fake.add_text_channel("doomed")
    thread = fake.add_thread("doomed-thread")  # of the fake's channel, which stays
    quiet = fake.add_thread("quiet", parent=doomed)  # archived: announced by no one
    async with start_easel() as bot:
        posted = [
            await (
                await fake.invoke_command("imagine", {"prompt": prompt, **QUICK}, channel=where)
            ).wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
            for prompt, where in (("a lighthouse", doomed), ("a barn", thread), ("a cat", quiet))
        ]
        await fake.archive_thread(quiet)
        kept = await imagine(fake, "a red boat")  # in the fake's own channel
        history, withdrawn = bot.services.history, asyncio.Queue[list[str]]()
        withdraw_deleted_channel = history.withdraw_deleted_channel

        async def reading(guild_id: int, channel_id: int) -> list[str]:
            read = await withdraw_deleted_channel(guild_id, channel_id)
            withdrawn.put_nowait(read)
            return read

        monkeypatch.setattr(history, "withdraw_deleted_channel", reading)
        for channel, messages in ((thread, posted[1:2]), (doomed, posted[::2])):
            await fake.delete_channel(channel)  # THREAD_DELETE, then CHANNEL_DELETE
            read = await asyncio.wait_for(withdrawn.get(), WITHDRAWAL_WAIT_S)
            assert sorted(read) == sorted(map(job_id_of, messages))
        for message in posted:
            refused = await show(fake, job_id_of(message))
            assert refused.is_ephemeral and WITHDRAWN_PICTURE in refused.content
        assert has_picture(await show(fake, job_id_of(kept)))


async def test_a_withdrawn_picture_stays_refused_after_its_maker_runs_forget_me(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_discord
    fake.add_member(ALT, "alt", roles=(fake.member_role_id,))
    async with start_easel() as bot:
        deletions = deletions_read(bot, monkeypatch)
        lighthouse = await imagine(fake, "a lighthouse")
        copy = ("holiday.png", saved_again(lighthouse))
        await fake.delete_messages(lighthouse)  # a moderator's deletion
        async with asyncio.timeout(WITHDRAWAL_WAIT_S):  # its delivery may read it first
            while job_id_of(lighthouse) not in await deletions.get():
                pass
        await reply_to(fake, "forget-me")
        assert await bot.services.history.job(job_id_of(lighthouse)) is None  # erased
        refused = await reply_to(fake, "vary", {}, attachments={"image": copy}, user=ALT)
        assert refused.is_ephemeral and WITHDRAWN_PICTURE in refused.content
        assert bot.queue.queued_count() == 0
