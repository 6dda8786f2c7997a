"""A member's commands while their finished job waits to be posted: /cancel says it is too
late, and a /forget-me that erases the job leaves its delivery nothing to post and nothing
to call an error."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bot.app import EaselBot
from bot.jobs.queue import FinishedJob
from tests.e2e.helpers import QUICK, StartEasel, forget_me
from tests.fake_discord import FakeDiscord
from tests.fake_discord.records import InteractionHandle
from tests.support.engines import InstantEngine
from tests.support.pictures import has_picture


@asynccontextmanager
async def finished_and_held(
    fake: FakeDiscord, bot: EaselBot, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[InteractionHandle, str, asyncio.Event]]:
    """An /imagine rendered, its delivery held: its interaction, its job id and the event
    that lets the delivery go on (set on leaving, too)."""
    deliver = bot.results.deliver
    arrived: asyncio.Queue[str] = asyncio.Queue()
    released = asyncio.Event()

    async def held(job: FinishedJob) -> Any:
        arrived.put_nowait(job.job_id)
        await released.wait()
        return await deliver(job)

    monkeypatch.setattr(bot.results, "deliver", held)
    handle = await fake.invoke_command("imagine", {"prompt": "a cat", **QUICK})
    await handle.wait_for_ack()
    try:
        async with asyncio.timeout(30):
            job_id = await arrived.get()
        yield handle, job_id, released
    finally:
        released.set()


async def test_plain_cancel_of_a_finished_job_waiting_to_be_posted_says_too_late(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_discord
    async with start_easel(lambda _device: InstantEngine()) as bot:
        async with finished_and_held(fake, bot, monkeypatch) as (handle, job_id, released):
            answer = await (await fake.invoke_command("cancel")).wait_for_answer()
            assert answer.content == f"Too late: job `{job_id}` has already finished."
            released.set()
            posted = await handle.wait_for_original(has_picture)
        assert len(posted.attachments) == 1


async def test_a_job_erased_by_forget_me_while_its_delivery_waits_is_no_error(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The suite's ERROR check (``error_logs``) fails the test on "failed, refunded"."""
    fake = fake_discord
    caplog.set_level(logging.INFO, logger="bot.jobs.queue.delivery")
    async with start_easel(lambda _device: InstantEngine()) as bot:
        given_up = asyncio.Event()
        give_up = bot.results.given_up

        def recorded(job_id: str, why: str) -> None:
            give_up(job_id, why)
            given_up.set()

        monkeypatch.setattr(bot.results, "given_up", recorded)
        async with finished_and_held(fake, bot, monkeypatch) as (_, job_id, released):
            erased = await (await forget_me(fake)).wait_for_answer()
            assert erased.content.startswith("Done: erased 1 job, 1 stored picture,")
            released.set()
            async with asyncio.timeout(30):
                await given_up.wait()
    assert f"job {job_id}: erased before its delivery; nothing posted" in caplog.messages
    assert not [message for message in fake.messages.values() if has_picture(message)]
