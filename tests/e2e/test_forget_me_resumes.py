"""/forget-me through the fake Discord: one Easel stops in the middle of is finished by the
next start (what the member made up to when they asked, not since), which tells the member
where they asked, counting the whole request; one answered ends its request, by direct message
where Discord refuses the answer."""

from __future__ import annotations

import asyncio

import pytest

from bot.settings import Settings
from db import erasures
from db import history as store
from db.database import connect
from tests.e2e.helpers import StartEasel, imagine, job_id_of, reply_to
from tests.e2e.test_moderation_after_the_fact import deletions_read
from tests.fake_discord import FakeDiscord
from tests.integration.test_forget_me_batches import stop_once_in_the_second_batch

DELETES_WAIT_S = 10.0


async def test_a_forget_me_a_stop_interrupted_is_finished_at_the_next_start(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    monkeypatch: pytest.MonkeyPatch,
    easel_settings_for_test: Settings,
) -> None:
    fake = fake_discord
    monkeypatch.setattr(store, "ERASE_BATCH", 1)
    async with start_easel() as bot:
        images_dir = bot.settings.images_dir
        results = [await imagine(fake, f"a cat number {i}", seed=i) for i in range(3)]
        # The erase ends, as in a crash, once its second batch's rows are gone: no answer,
        # nothing after it runs.
        stopped = stop_once_in_the_second_batch(monkeypatch, asyncio.CancelledError)
        forget = await fake.invoke_command("forget-me")
        await asyncio.wait_for(stopped.wait(), DELETES_WAIT_S)
        assert (await forget.wait_for_original()).is_loading  # "thinking…": never answered
        assert (images_dir / job_id_of(results[2])).is_dir()
        # Made after asking: the rest of the erase leaves it.
        since = await imagine(fake, "a dog after asking", seed=9)

    async with start_easel() as bot:
        deletions = deletions_read(bot, monkeypatch)  # some may be read before this
        told = await forget.wait_for_original(lambda m: "finished now" in m.content)
        assert "was interrupted (Easel stopped or failed)" in told.content and told.is_ephemeral
        # The whole request: the job erased before the stop, the one whose files the stop
        # left, and the last.
        assert (
            "erased 3 jobs, 3 stored pictures, 0 uploaded pictures and your settings. "
            "Removing 3 posted messages from channels…" in told.content
        )
        for result in results:
            assert not (images_dir / job_id_of(result)).exists()
        assert (images_dir / job_id_of(since)).is_dir()
        async with asyncio.timeout(DELETES_WAIT_S):  # the start's sweep of posts left
            while not all(result.deleted for result in results):
                assert await deletions.get() == []  # unlinked first: each withdraws nothing
        assert not since.deleted
        history = await bot.services.history.page(fake.user_id, 0, guild_id=fake.guild_id)
        assert [line.job_id for line in history.lines] == [job_id_of(since)]
        conn = await connect(easel_settings_for_test.database_path)
        try:
            assert await store.count_rows_of_user(conn, fake.user_id) == 2  # since, its picture
            assert await erasures.unfinished(conn) == []  # told: done
        finally:
            await conn.close()


async def test_a_forget_me_answered_ends_its_request(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Answered, the request is done: no start or sweep erases or tells it again."""
    fake = fake_discord
    async with start_easel() as bot:
        await imagine(fake, "a cat", seed=1)
        forget = await fake.invoke_command("forget-me")
        done = await forget.wait_for_original(lambda m: "Removed" in m.content)  # after the end
        assert done.content.startswith("Done: erased 1 job, 1 stored picture")
        assert await bot.services.history.unfinished_erasures() == []


async def test_an_answer_discord_refuses_goes_by_direct_message(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Discord refuses the answer where the member asked: the erase is done all the same, the
    member is told by direct message (edited with how the posts' deletes went), the request
    ends, and the member may run /forget-me again at once (the cooldown is given back)."""
    fake = fake_discord
    async with start_easel() as bot:
        result = await imagine(fake, "a cat", seed=1)
        fake.fail("POST", "/webhooks/{app}/{token}", status=404)  # as a token gone
        forget = await fake.invoke_command("forget-me")
        direct = fake.dm_channel_of(fake.user_id)
        told = await fake.wait_for_channel_message(lambda m: "Removed" in m.content, channel=direct)
        assert told.content.startswith("Done: erased 1 job, 1 stored picture")
        assert (await forget.wait_for_original()).is_loading  # never answered there
        assert result.deleted
        assert await bot.services.history.unfinished_erasures() == []
        again = await reply_to(fake, "forget-me")
        assert again.content.startswith("Done: erased 0 jobs")
