"""A moderator's withdrawal outlives what Discord and the members do next, through the fake
Discord: a channel or thread deleted (no deletion of its messages announced) withdraws the
jobs posted there and in its threads, archived ones too, and a withdrawn picture's maker
running /forget-me does not make a saved copy of it usable again in the server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.history import History
from bot.jobs.queue import FinishedJob
from bot.policy.delivery import CHANNEL_DELETED
from bot.policy.moderation import WITHDRAWN_PICTURE
from bot.settings import Settings
from db import jobs as journal
from db.database import connect
from db.history import count_rows_of_user
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    forget_me,
    imagine,
    job_id_of,
    reply_to,
)
from tests.e2e.test_moderation_after_the_fact import (
    WITHDRAWAL_WAIT_S,
    deletions_read,
    saved_again,
    show,
)
from tests.fake_discord import FakeDiscord
from tests.fake_discord.payloads import PERMISSION_VIEW_CHANNEL
from tests.support.engines import HeldEngine
from tests.support.pictures import has_picture

ALT = 5454


def channel_deletions_read(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> asyncio.Queue[list[str]]:
    """The jobs each deleted channel withdrew, as Easel reads its deletion."""
    withdrawn = asyncio.Queue[list[str]]()
    withdraw_deleted_channel = history.withdraw_deleted_channel

    async def reading(guild_id: int, channel_id: int) -> list[str]:
        read = await withdraw_deleted_channel(guild_id, channel_id)
        withdrawn.put_nowait(read)
        return read

    monkeypatch.setattr(history, "withdraw_deleted_channel", reading)
    return withdrawn


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
        withdrawn = channel_deletions_read(bot.services.history, monkeypatch)
        for channel, messages in ((thread, posted[1:2]), (doomed, posted[::2])):
            await fake.delete_channel(channel)  # THREAD_DELETE, then CHANNEL_DELETE
            read = await asyncio.wait_for(withdrawn.get(), WITHDRAWAL_WAIT_S)
            assert sorted(read) == sorted(map(job_id_of, messages))
        for message in posted:
            refused = await show(fake, job_id_of(message))
            assert refused.is_ephemeral and WITHDRAWN_PICTURE in refused.content
        assert has_picture(await show(fake, job_id_of(kept)))


async def test_a_result_whose_channel_goes_as_it_is_delivered_is_refunded_and_spares_its_twin(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CHANNEL_DELETE between the render and the result's edit of its original response (its
    token alive): that edit finds the message gone with its channel, no moderator's deletion
    of it: refunded, its maker told so, and its newer twin elsewhere stays."""
    fake = fake_discord
    doomed = fake.add_text_channel("doomed")
    async with start_easel() as bot:
        loop = asyncio.get_running_loop()
        rendered: asyncio.Future[FinishedJob] = loop.create_future()
        delivered: asyncio.Future[int | None] = loop.create_future()
        channel_gone = asyncio.Event()
        deliver = bot.results.deliver

        async def after_the_channel(job: FinishedJob) -> int | None:
            if job.channel_id != doomed:
                return await deliver(job)
            rendered.set_result(job)
            await channel_gone.wait()
            delivered.set_result(await deliver(job))
            return delivered.result()

        monkeypatch.setattr(bot.results, "deliver", after_the_channel)
        lighthouse = {"prompt": "a lighthouse", "seed": 1, **QUICK}
        await fake.invoke_command("imagine", lighthouse, channel=doomed)
        job = await asyncio.wait_for(rendered, RENDER_TIMEOUT_S)
        twin = await imagine(fake, "a lighthouse", seed=1)  # newer, in the fake's own channel
        withdrawn = channel_deletions_read(bot.services.history, monkeypatch)
        await fake.delete_channel(doomed)
        assert await asyncio.wait_for(withdrawn.get(), WITHDRAWAL_WAIT_S) == [job.job_id]
        channel_gone.set()
        assert await asyncio.wait_for(delivered, RENDER_TIMEOUT_S) is None
        # The one edit of the original response, gone with its channel, that told Easel so.
        assert [v.split(":", 1)[0] for v in fake.take_violations()] == ["unknown-resource"]
        direct = fake.dm_channel_of(fake.user_id)
        told = [m.content for m in fake.messages.values() if m.channel_id == direct]
        assert [f"{CHANNEL_DELETED}. It does not count" in content for content in told] == [True]
        kept = await bot.services.history.job(job_id_of(twin))
        assert kept is not None and not kept.withdrawn


async def test_a_progress_edit_that_finds_its_channel_gone_withdraws_as_its_deletion_does(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    monkeypatch: pytest.MonkeyPatch,
    easel_settings_for_test: Settings,
) -> None:
    """A rendering job's channel is deleted unannounced (Easel was hidden from it), then a
    progress edit finds its message gone and Discord answers Unknown Channel for the channel:
    the job goes as that deletion withdraws it, with the channel's other post (no moderator's
    deletion of its message), refunded and its maker told the channel went."""
    fake, engine = fake_discord, HeldEngine()
    doomed = fake.add_text_channel("doomed")
    async with start_easel(lambda device: engine) as bot:
        with engine:
            engine.released.set()
            barn = {"prompt": "a barn", **QUICK}
            earlier = await (
                await fake.invoke_command("imagine", barn, channel=doomed)
            ).wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
            engine.released.clear()
            loop = asyncio.get_running_loop()
            journaled: asyncio.Future[str] = loop.create_future()
            channel_gone = asyncio.Event()
            delivered: asyncio.Future[int | None] = loop.create_future()
            show_queued, deliver = bot.results.show_queued, bot.results.deliver

            async def after_the_channel(job_id: str, interaction: Any, **options: bool) -> None:
                journaled.set_result(job_id)
                await channel_gone.wait()
                await show_queued(job_id, interaction, **options)

            async def recorded(job: FinishedJob) -> int | None:
                result = await deliver(job)
                if journaled.done() and job.job_id == journaled.result():
                    delivered.set_result(result)
                return result

            monkeypatch.setattr(bot.results, "show_queued", after_the_channel)
            monkeypatch.setattr(bot.results, "deliver", recorded)
            await fake.invoke_command("imagine", {"prompt": "a cat", **QUICK}, channel=doomed)
            job_id = await asyncio.wait_for(journaled, RENDER_TIMEOUT_S)
            assert await asyncio.to_thread(engine.started.wait, RENDER_TIMEOUT_S)
            fake.set_overwrite(doomed, fake.bot_user_id, deny=PERMISSION_VIEW_CHANNEL)
            await fake.delete_channel(doomed)  # announced to no one who cannot see it
            channel_gone.set()
            assert await asyncio.wait_for(delivered, RENDER_TIMEOUT_S) is None
        conn = await connect(easel_settings_for_test.database_path)
        try:
            stopped = await journal.get_job(conn, job_id)
        finally:
            await conn.close()
        # Never read as a moderator's deletion: its pixels would then refuse their twins.
        assert stopped is not None and stopped.withdrawn_with_channel
        withdrawn_with_it = await bot.services.history.job(job_id_of(earlier))
        assert withdrawn_with_it is not None and withdrawn_with_it.withdrawn
        direct = fake.dm_channel_of(fake.user_id)
        told = [m.content for m in fake.messages.values() if m.channel_id == direct]
        assert [f"{CHANNEL_DELETED}. It does not count" in content for content in told] == [True]
        # The progress edit of the deleted response, and the read of its deleted channel.
        assert [v.split(":", 1)[0] for v in fake.take_violations()] == ["unknown-resource"] * 2


async def test_a_withdrawn_picture_stays_refused_after_its_maker_runs_forget_me(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_discord
    fake.add_member(ALT, "alt", roles=(fake.member_role_id,))
    async with start_easel() as bot:
        deletions = deletions_read(bot, monkeypatch)
        lighthouse = await imagine(fake, "a lighthouse")
        job_id = job_id_of(lighthouse)
        copy = ("holiday.png", saved_again(lighthouse))
        show = await fake.invoke_command("show", {"job_id": job_id})  # a second post of it
        shown = await show.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        await fake.delete_messages(lighthouse)  # a moderator's deletion
        async with asyncio.timeout(WITHDRAWAL_WAIT_S):  # its delivery may read it first
            while job_id not in await deletions.get():
                pass
        stored = await bot.services.history.job(job_id)
        assert stored is not None and stored.withdrawn and not shown.deleted
        forgotten = await (await forget_me(fake)).wait_for_answer()
        assert "erased 1 job, 1 stored picture" in forgotten.content
        # The withdrawn job goes whole, as any other: its row, its pictures' rows and files,
        # and its post still in the channel.
        assert await bot.services.history.job(job_id) is None
        assert not (bot.settings.images_dir / job_id).exists()
        async with asyncio.timeout(WITHDRAWAL_WAIT_S):  # the deletes follow the answer
            while not shown.deleted:
                assert await deletions.get() == []  # unlinked first: it withdraws nothing
        conn = await connect(bot.settings.database_path)
        try:
            assert await count_rows_of_user(conn, fake.user_id) == 0
        finally:
            await conn.close()
        refused = await reply_to(fake, "vary", {}, attachments={"image": copy}, user=ALT)
        assert refused.is_ephemeral and WITHDRAWN_PICTURE in refused.content
        assert bot.queue.queued_count() == 0
