"""/forget-me through the fake Discord: one Easel stops in the middle of is finished by the
next start (what the member made up to when they asked, not since), which tells the member
where they asked, counting the whole request; one answered ends its request, by direct message
where Discord refuses the answer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.settings import Settings
from cogs import history as cogs_history
from cogs.history import HistoryCog
from db import erasures
from db import history as store
from db.database import connect
from tests.conftest import ErrorLogs
from tests.e2e.helpers import StartEasel, forget_me, imagine, job_id_of
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
        forget = await forget_me(fake)
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
        forget = await forget_me(fake)
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
        forget = await forget_me(fake)
        direct = fake.dm_channel_of(fake.user_id)
        told = await fake.wait_for_channel_message(lambda m: "Removed" in m.content, channel=direct)
        assert told.content.startswith("Done: erased 1 job, 1 stored picture")
        assert (await forget.wait_for_original()).is_loading  # never answered there
        assert result.deleted
        assert await bot.services.history.unfinished_erasures() == []
        again = await (await forget_me(fake)).wait_for_answer()
        assert again.content.startswith("Done: erased 0 jobs")


async def test_a_forget_me_that_fails_is_finished_within_seconds_and_told_once(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    monkeypatch: pytest.MonkeyPatch,
    error_logs: ErrorLogs,
) -> None:
    """/forget-me fails part way (a disk error in its second batch, not a stop): the member is
    told it went wrong and that it will be finished, and it is tried again at once, not at the
    15-minute sweep: finished within seconds, that answer edited to say so, counting the whole
    request; told once, and the request is done. A sweep pass that runs while the failure is
    being told (woken by another member's failure) leaves it alone: "finished now" never comes
    before the failure's answer (review R_L5, finding 1)."""
    fake = fake_discord
    monkeypatch.setattr(store, "ERASE_BATCH", 1)
    error_logs.expect(r"internal error [0-9a-f]{8} in /forget-me$")
    async with start_easel() as bot:
        images_dir = bot.settings.images_dir
        results = [await imagine(fake, f"a cat number {i}", seed=i) for i in range(3)]
        history = bot.services.history
        cog = bot.get_cog("HistoryCog")
        assert isinstance(cog, HistoryCog)
        answers: list[str] = []  # in the order the member was given them
        ended = asyncio.Event()
        erasure_told, report, tell_finished = (
            history.erasure_told,
            cogs_history.report_error,
            cogs_history._tell_finished,
        )
        finish, swept = cogs_history.finish_erasures, asyncio.Event()

        async def telling(user_id: int, asked_at: float) -> None:
            await erasure_told(user_id, asked_at)
            ended.set()

        async def sweeping(*args: Any, **kwargs: Any) -> bool:
            finished = await finish(*args, **kwargs)
            swept.set()
            return finished

        async def report_after_a_sweep(*args: Any, **kwargs: Any) -> None:
            swept.clear()
            cog._sweep_now.set()  # as another member's failure would
            await asyncio.wait_for(swept.wait(), DELETES_WAIT_S)
            await report(*args, **kwargs)
            answers.append("failed")

        async def telling_finished(*args: Any) -> None:
            await tell_finished(*args)
            answers.append("finished")

        monkeypatch.setattr(history, "erasure_told", telling)
        monkeypatch.setattr(cogs_history, "finish_erasures", sweeping)
        monkeypatch.setattr(cogs_history, "report_error", report_after_a_sweep)
        monkeypatch.setattr(cogs_history, "_tell_finished", telling_finished)
        stop_once_in_the_second_batch(monkeypatch, OSError)
        forget = await forget_me(fake)
        failure = await forget.wait_for_original(lambda m: "Something went wrong" in m.content)
        assert "no need to run /forget-me again" in failure.content
        assert "try again later" not in failure.content
        told = await forget.wait_for_original(lambda m: "finished now" in m.content)
        await asyncio.wait_for(ended.wait(), DELETES_WAIT_S)
        assert answers == ["failed", "finished"]
        assert told.is_ephemeral
        assert "erased 3 jobs, 3 stored pictures, 0 uploaded pictures" in told.content
        for result in results:
            assert not (images_dir / job_id_of(result)).exists()
        assert forget.followups == []  # one answer, edited
        direct = fake.dm_channel_of(fake.user_id)
        assert [m for m in fake.messages.values() if m.channel_id == direct] == []
        assert await history.unfinished_erasures() == []
