"""Another process holding the database's write lock (an operator's sqlite3 shell in a
transaction, a VACUUM, a backup) while a member's /imagine, or a write of no transaction (a
refusal recorded), waits for it: other members' commands that read before they answer are
still answered within Discord's 3 s. Easel's one connection tries the write again between
reads, instead of waiting inside SQLite on the connection's only thread with every other
statement queued behind it. The lock
is a real second connection's; the busy timeout is the test's (long, so the /imagine outlasts
the lock on a loaded machine), and each step waits for a condition, not for a time."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bot.app import EaselBot
from bot.jobs import retention
from bot.refusals import RefusalLog
from db.database import connect
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, images_today, kept_refusals
from tests.fake_discord import FakeDiscord
from tests.fake_discord.rest import ACK_DEADLINE_S
from tests.support.pictures import has_picture

StartEasel = Callable[[], AbstractAsyncContextManager[EaselBot]]
# How long Easel's writes wait for the lock: past anything this test holds it for.
BUSY_TIMEOUT_S = 60.0


def statements_seen(monkeypatch: pytest.MonkeyPatch, tried: str) -> asyncio.Event:
    """Easel's connection opened with the test's busy timeout; the event is set each time it
    is asked to run a statement starting with ``tried``."""
    seen = asyncio.Event()

    async def connect_watched(path: Path) -> aiosqlite.Connection:
        conn = await connect(path, busy_timeout_s=BUSY_TIMEOUT_S)
        execute = conn.execute

        def watched(sql: str, *args: Any) -> Any:
            if sql.startswith(tried):
                seen.set()
            return execute(sql, *args)

        monkeypatch.setattr(conn, "execute", watched)
        return conn

    monkeypatch.setattr(retention, "connect", connect_watched)
    return seen


def call_done(monkeypatch: pytest.MonkeyPatch, owner: type, method: str) -> asyncio.Event:
    """Set once a call of ``owner``'s coroutine method ``method`` is over."""
    done = asyncio.Event()
    call = getattr(owner, method)

    async def watched(*args: Any, **kwargs: Any) -> Any:
        try:
            return await call(*args, **kwargs)
        finally:
            done.set()

    monkeypatch.setattr(owner, method, watched)
    return done


def first_round_done(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set once retention's first round (run as Easel starts) is over: its writes are none of
    those a test watches."""
    return call_done(monkeypatch, retention.Retention, "prune")


@asynccontextmanager
async def held_by_another_process(bot: EaselBot) -> AsyncIterator[None]:
    """Another process's connection holding the write lock: taken off the event loop (a
    transaction of the bot's own may need the loop to end), with a wait that only bounds a
    hang."""
    holder = sqlite3.connect(
        bot.settings.database_path, isolation_level=None, timeout=60, check_same_thread=False
    )
    try:
        await asyncio.to_thread(holder.execute, "BEGIN IMMEDIATE")
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def answered_in_time(fake_discord: FakeDiscord) -> None:
    """Another member's /quota, which reads before it answers, is answered within 3 s."""
    quota = await fake_discord.invoke_command("quota", {}, user=fake_discord.owner_id)
    # Was refused as late (5 s at SQLite's default busy timeout: the whole wait here).
    assert await quota.wait_for_ack() < ACK_DEADLINE_S
    assert "**Day:**" in (await quota.wait_for_answer()).content


async def test_a_write_waiting_for_another_process_s_lock_holds_up_no_other_member_s_command(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    begun = statements_seen(monkeypatch, "BEGIN IMMEDIATE")
    pruned = first_round_done(monkeypatch)
    async with start_easel() as bot:
        await asyncio.wait_for(pruned.wait(), RENDER_TIMEOUT_S)
        async with held_by_another_process(bot):
            begun.clear()
            imagine = await fake_discord.invoke_command("imagine", {"prompt": "a cat", **QUICK})
            await imagine.wait_for_ack()
            await asyncio.wait_for(begun.wait(), RENDER_TIMEOUT_S)  # its submit waits
            await answered_in_time(fake_discord)

        # The /imagine went through once the lock was gone, charged once.
        await imagine.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert await images_today(bot.services, fake_discord.user_id, fake_discord.guild_id) == 1


async def test_a_refusal_recorded_under_another_process_s_lock_holds_up_no_other_member_s_command(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refusal is recorded after its member is told, one statement of no transaction: it
    too waits for the lock between tries, where it held the connection's thread."""
    recording = statements_seen(monkeypatch, "INSERT INTO refusals")
    recorded = call_done(monkeypatch, RefusalLog, "record")
    pruned = first_round_done(monkeypatch)
    async with start_easel() as bot:
        await asyncio.wait_for(pruned.wait(), RENDER_TIMEOUT_S)
        async with held_by_another_process(bot):
            refused = await fake_discord.invoke_command(
                "imagine", {"prompt": "a cat", "size": "17x17"}
            )
            told = await refused.wait_for_answer()
            await asyncio.wait_for(recording.wait(), RENDER_TIMEOUT_S)  # its record waits
            await answered_in_time(fake_discord)

        # Recorded once the lock was gone.
        await asyncio.wait_for(recorded.wait(), RENDER_TIMEOUT_S)
        assert await kept_refusals(bot, fake_discord.guild_id) == [("input", told.content)]
