"""An interaction token's fifteen minutes, as the bot judges them (AUD35): a private render
that outlasts its token says where its result goes; a private place restored by a restart
within its token's life still says its last word; a host clock an hour ahead of Discord's
still answers through this run's tokens, judged from their receipt, and is warned of."""

from __future__ import annotations

import asyncio
import logging
import time
import types

import pytest
from discord.utils import snowflake_time

import bot.metrics as metrics
from bot.jobs.queue import job_queue
from cogs.results.progress import INTERACTION_TOKEN_LIFETIME_S
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    bot_clocks_on,
    calls_held,
    has_picture,
    past_the_tokens,
    reply_to,
)
from tests.fake_discord import FakeDiscord, InteractionHandle
from tests.support.engines import HeldEngine

HOUR_S = 3600.0


def tail(handle: InteractionHandle) -> str:
    """What a private render says in its token's last minute: until when, as a Discord
    timestamp of the token's end (its interaction's time, from its snowflake, on)."""
    ends = int(snowflake_time(handle.id).timestamp() + INTERACTION_TOKEN_LIFETIME_S)
    return f"Its progress shows here until <t:{ends}:T>."


async def test_a_private_render_outlasting_its_token_says_where_its_result_goes(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    engine = HeldEngine()
    async with start_easel(lambda _device: engine) as bot:
        with engine:
            await reply_to(fake, "settings", {"private_results": True})
            handle = await fake.invoke_command(
                "imagine", {"prompt": "a long private render", **QUICK}
            )
            await handle.wait_for_original(lambda m: "Rendering" in m.content)
            past_the_tokens(fake, bot, 13.5 * 60)  # the token's last minute
            told = await handle.wait_for_original(lambda m: tail(handle) in m.content)
            assert told.is_ephemeral and told.content.startswith("🎨 Rendering")
            assert "else to your direct messages if they are open" in told.content
            fake.advance_time(2.5 * 60)
            bot_clocks_on(bot, 16 * 60)  # the token ended mid-render
        direct = await fake.wait_for_channel_message(
            has_picture, timeout=RENDER_TIMEOUT_S, channel=fake.dm_channel_of(fake.user_id)
        )
        assert "a long private render" in direct.content
        assert handle.original is not None and tail(handle) in handle.original.content


async def test_a_private_job_restored_within_its_tokens_life_says_where_its_result_goes(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal keeps a queued private job's token: a restart minutes later follows its
    ephemeral message through it, judged on the wall clock (no receipt of this run's), and
    it says in the token's last minute where the result goes."""
    fake = fake_discord
    monkeypatch.setattr(job_queue, "SHUTDOWN_GRACE_S", 0.5)  # the held job is left queued
    async with start_easel() as bot:
        calls_held(bot.results, "why_not_started", monkeypatch)
        await reply_to(fake, "settings", {"private_results": True})
        handle = await fake.invoke_command("imagine", {"prompt": "a private wait", **QUICK})
        await handle.wait_for_original(lambda m: not m.is_loading)  # held at its start's check
    engine = HeldEngine()
    async with start_easel(lambda _device: engine) as bot:
        with engine:
            await asyncio.to_thread(engine.started.wait, RENDER_TIMEOUT_S)
            past_the_tokens(fake, bot, 13.5 * 60)  # the token's last minute
            told = await handle.wait_for_original(lambda m: tail(handle) in m.content)
            assert told.content.startswith("🎨 Rendering…")


async def test_a_host_clock_an_hour_ahead_still_answers_through_the_token(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The wall clock an hour ahead (an RTC kept in local time) would judge every token dead
    at once: "thinking…" never replaced, the result a new message. This run's are judged on
    the monotonic clock from their receipt; the skew is logged from the first answer's time."""
    fake = fake_discord
    caplog.set_level(logging.WARNING, logger="bot.metrics")
    ahead = types.SimpleNamespace(time=lambda: time.time() + HOUR_S)
    monkeypatch.setattr(metrics, "time", ahead)
    async with start_easel() as bot:
        bot.results.wall_clock = ahead.time
        handle = await fake.invoke_command(
            "imagine", {"prompt": "a cat at the wrong hour", **QUICK}
        )
        result = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert "a cat at the wrong hour" in result.content
    warned = [record.getMessage() for record in caplog.records]
    assert any("ahead of Discord's" in line for line in warned), warned
