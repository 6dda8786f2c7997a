"""A public "Rendering…" message (the interaction's original response, with live previews) is
one of its job's posts: a moderator deleting it withdraws the job, and the result, once
rendered, is posted nowhere (not as a new message in the channel), its maker told by DM."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.jobs.queue import FinishedJob
from cogs.results.posting import PROGRESS_DELETED
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, StartEasel, reply_to
from tests.e2e.test_moderation_after_the_fact import WITHDRAWAL_WAIT_S, deletions_read
from tests.fake_discord import FakeDiscord
from tests.support.engines import HeldEngine
from tests.support.pictures import has_picture


async def test_a_deleted_progress_message_withdraws_its_job_and_posts_nothing(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_discord
    async with start_easel() as bot:
        deletions = deletions_read(bot, monkeypatch)
        loop = asyncio.get_running_loop()
        rendered: asyncio.Future[FinishedJob] = loop.create_future()
        deleted = asyncio.Event()
        delivered: asyncio.Future[int | None] = loop.create_future()
        deliver = bot.results.deliver

        async def after_the_deletion(job: FinishedJob) -> int | None:
            # The render has ended (the job, as delivered, is not withdrawn): the deletion
            # comes now, while the result is on its way.
            rendered.set_result(job)
            await deleted.wait()
            delivered.set_result(await deliver(job))
            return delivered.result()

        monkeypatch.setattr(bot.results, "deliver", after_the_deletion)
        handle = await fake.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        job = await asyncio.wait_for(rendered, RENDER_TIMEOUT_S)
        progress = await handle.wait_for_original(lambda message: not message.is_loading)
        assert not progress.is_ephemeral and not job.withdrawn

        await fake.delete_messages(progress)  # MESSAGE_DELETE, as a moderator's deletion sends
        # Read by Easel: withdrawing the job now, or as it records the message (if first).
        await asyncio.wait_for(deletions.get(), WITHDRAWAL_WAIT_S)
        deleted.set()

        assert await asyncio.wait_for(delivered, RENDER_TIMEOUT_S) is None
        stored = await bot.services.history.job(job.job_id)
        assert stored is not None and stored.withdrawn
        # Posted nowhere: not in the channel, not by DM; its maker is told by DM.
        shown = [m for m in fake.messages.values() if has_picture(m) and not m.deleted]
        assert shown == []
        direct = fake.dm_channel_of(fake.user_id)
        told = [m for m in fake.messages.values() if m.channel_id == direct]
        assert [PROGRESS_DELETED in m.content and job.job_id in m.content for m in told] == [True]
        # The one edit of the deleted response that told Easel so.
        assert [v.split(":", 1)[0] for v in fake.take_violations()] == ["unknown-resource"]


@pytest.mark.parametrize("followed", [True, False], ids=["progress-edit", "result-edit"])
async def test_thinking_deleted_before_its_first_edit_withdraws_its_job(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    monkeypatch: pytest.MonkeyPatch,
    followed: bool,
) -> None:
    """ "thinking…" deleted before Easel's first edit made it the job's progress message: its
    deletion matched no post of the job, yet the first edit's "Unknown Message" withdraws it
    (its maker cannot /show it), and its result is posted nowhere. That first edit is a
    progress edit, or (a job that ended before its progress was followed) its result's."""
    fake, engine = fake_discord, HeldEngine()
    async with start_easel(lambda device: engine) as bot:
        with engine:
            deletions = deletions_read(bot, monkeypatch)
            loop = asyncio.get_running_loop()
            journaled: asyncio.Future[str] = loop.create_future()
            deleted, first_edit_tried = asyncio.Event(), asyncio.Event()
            delivered: asyncio.Future[int | None] = loop.create_future()
            show_queued, deliver = bot.results.show_queued, bot.results.deliver

            async def after_the_deletion(job_id: str, interaction: Any, **options: bool) -> None:
                journaled.set_result(job_id)
                await deleted.wait()
                if followed:
                    await show_queued(job_id, interaction, **options)
                first_edit_tried.set()

            async def recorded(job: FinishedJob) -> int | None:
                delivered.set_result(await deliver(job))
                return delivered.result()

            monkeypatch.setattr(bot.results, "show_queued", after_the_deletion)
            monkeypatch.setattr(bot.results, "deliver", recorded)
            handle = await fake.invoke_command("imagine", {"prompt": "a cat", **QUICK})
            job_id = await asyncio.wait_for(journaled, RENDER_TIMEOUT_S)
            await fake.delete_messages(await handle.wait_for_original(lambda m: m.is_loading))
            assert await asyncio.wait_for(deletions.get(), WITHDRAWAL_WAIT_S) == []  # no post yet
            deleted.set()
            await asyncio.wait_for(first_edit_tried.wait(), WITHDRAWAL_WAIT_S)
            engine.released.set()
            assert await asyncio.wait_for(delivered, RENDER_TIMEOUT_S) is None
        stored = await bot.services.history.job(job_id)
        assert stored is not None and stored.withdrawn
        assert [m for m in fake.messages.values() if has_picture(m) and not m.deleted] == []
        direct = fake.dm_channel_of(fake.user_id)
        told = [m for m in fake.messages.values() if m.channel_id == direct]
        assert [PROGRESS_DELETED in m.content and job_id in m.content for m in told] == [True]
        # The one edit of the deleted response that told Easel so.
        assert [v.split(":", 1)[0] for v in fake.take_violations()] == ["unknown-resource"]


async def test_a_queued_jobs_thinking_deleted_ends_it_without_waiting_on_itself(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queued job's "thinking…" deleted before its first edit: that edit's "Unknown Message"
    withdraws the job, which stops it (queued: its end is delivered at once, from within the
    edit); the delivery does not wait for the edit it runs in (it waited forever: the command's
    handler hung and the job was never marked delivered)."""
    fake, engine = fake_discord, HeldEngine()
    async with start_easel(lambda device: engine) as bot:
        with engine:
            # A first job holds the one slot: the second stays queued.
            first = await fake.invoke_command("imagine", {"prompt": "a dog", **QUICK})
            await first.wait_for_original(lambda m: not m.is_loading)
            assert await asyncio.to_thread(engine.started.wait, RENDER_TIMEOUT_S)
            deletions = deletions_read(bot, monkeypatch)
            loop = asyncio.get_running_loop()
            journaled: asyncio.Future[str] = loop.create_future()
            deleted = asyncio.Event()
            shown: asyncio.Future[None] = loop.create_future()
            delivered: asyncio.Future[int | None] = loop.create_future()
            show_queued, deliver = bot.results.show_queued, bot.results.deliver

            async def after_the_deletion(job_id: str, interaction: Any, **options: bool) -> None:
                journaled.set_result(job_id)
                await deleted.wait()
                await show_queued(job_id, interaction, **options)
                shown.set_result(None)

            async def recorded(job: FinishedJob) -> int | None:
                result = await deliver(job)
                if journaled.done() and job.job_id == journaled.result():
                    delivered.set_result(result)
                return result

            monkeypatch.setattr(bot.results, "show_queued", after_the_deletion)
            monkeypatch.setattr(bot.results, "deliver", recorded)
            second = await fake.invoke_command("imagine", {"prompt": "a cat", **QUICK})
            job_id = await asyncio.wait_for(journaled, RENDER_TIMEOUT_S)
            await fake.delete_messages(await second.wait_for_original(lambda m: m.is_loading))
            assert await asyncio.wait_for(deletions.get(), WITHDRAWAL_WAIT_S) == []
            deleted.set()
            await asyncio.wait_for(shown, RENDER_TIMEOUT_S)
            assert await asyncio.wait_for(delivered, RENDER_TIMEOUT_S) is None
            stored = await bot.services.history.job(job_id)
            assert stored is not None and stored.withdrawn and stored.status == "cancelled"
            engine.released.set()
        fake.take_violations()  # the edit of the deleted response, as above


async def test_a_job_whose_deleted_progress_an_edit_found_stays_restored(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its progress message deleted while Easel heard nothing of it (a gateway gap): the edit
    that finds it gone withdraws the job as hearing of it would, unlinking that post, so an
    admin's restore stands: /show posts the result again and finds nothing to withdraw it."""
    fake, engine = fake_discord, HeldEngine()
    async with start_easel(lambda device: engine) as bot:
        with engine:
            loop = asyncio.get_running_loop()
            linked: asyncio.Future[str] = loop.create_future()
            delivered: asyncio.Future[int | None] = loop.create_future()
            result_posted, deliver = bot.services.history.result_posted, bot.results.deliver

            async def recorded_post(job_id: str, *posted: Any) -> bool:
                still_there = await result_posted(job_id, *posted)
                if not linked.done():
                    linked.set_result(job_id)
                return still_there

            async def recorded_delivery(job: FinishedJob) -> int | None:
                delivered.set_result(await deliver(job))
                return delivered.result()

            monkeypatch.setattr(bot.services.history, "result_posted", recorded_post)
            monkeypatch.setattr(bot.results, "deliver", recorded_delivery)
            handle = await fake.invoke_command("imagine", {"prompt": "a cat", **QUICK})
            progress = await handle.wait_for_original(lambda m: not m.is_loading)
            job_id = await asyncio.wait_for(linked, RENDER_TIMEOUT_S)
            assert await bot.services.history.posts_of(job_id) != ()
            progress.deleted = True  # no MESSAGE_DELETE reaches Easel
            engine.released.set()
            # The next edit of it (progress, or the result) finds it gone: nothing is posted.
            assert await asyncio.wait_for(delivered, RENDER_TIMEOUT_S) is None
        stored = await bot.services.history.job(job_id)
        assert stored is not None and stored.withdrawn
        assert await bot.services.history.posts_of(job_id) == ()

        restore = {"job": job_id}
        restored = await reply_to(fake, "easel-admin restore", restore, user=fake.owner_id)
        assert "Restored" in restored.content, restored.content
        shown = await reply_to(fake, "show", {"job_id": job_id})
        assert has_picture(shown), shown.content
        stored = await bot.services.history.job(job_id)
        assert stored is not None and not stored.withdrawn
        # The one edit of the deleted response that told Easel so; no look for it since.
        assert [v.split(":", 1)[0] for v in fake.take_violations()] == ["unknown-resource"]
