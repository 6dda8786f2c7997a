"""Another process holding the database's write lock (an operator's sqlite3 shell in a
transaction, a VACUUM, a backup) while a member's /imagine waits for it: other members'
commands that read before they answer are still answered within Discord's 3 s. Easel's one
connection tries the /imagine's transaction again between reads, instead of waiting inside
SQLite on the connection's only thread with every other statement queued behind it. The lock
is a real second connection's; the busy timeout is the test's (long, so the /imagine outlasts
the lock on a loaded machine), and each step waits for a condition, not for a time."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bot.app import EaselBot
from bot.jobs import retention
from db.database import connect
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, images_today
from tests.fake_discord import FakeDiscord
from tests.fake_discord.rest import ACK_DEADLINE_S
from tests.support.pictures import has_picture

StartEasel = Callable[[], AbstractAsyncContextManager[EaselBot]]
# How long Easel's writes wait for the lock: past anything this test holds it for.
BUSY_TIMEOUT_S = 60.0


def begins_seen(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Easel's connection opened with the test's busy timeout; the event is set each time it
    is asked to begin a write transaction."""
    begun = asyncio.Event()

    async def connect_watched(path: Path) -> aiosqlite.Connection:
        conn = await connect(path, busy_timeout_s=BUSY_TIMEOUT_S)
        execute = conn.execute

        def watched(sql: str, *args: Any) -> Any:
            if sql == "BEGIN IMMEDIATE":
                begun.set()
            return execute(sql, *args)

        monkeypatch.setattr(conn, "execute", watched)
        return conn

    monkeypatch.setattr(retention, "connect", connect_watched)
    return begun


def first_round_done(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set once retention's first round (run as Easel starts) is over: its lone writes (the
    tokens blanked, planner statistics) would wait inside SQLite for the lock, as any write
    outside a transaction does."""
    done = asyncio.Event()
    prune = retention.Retention.prune

    async def pruning(self: retention.Retention, **options: Any) -> retention.Pruned:
        try:
            return await prune(self, **options)
        finally:
            done.set()

    monkeypatch.setattr(retention.Retention, "prune", pruning)
    return done


async def test_a_write_waiting_for_another_process_s_lock_holds_up_no_other_member_s_command(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    begun = begins_seen(monkeypatch)
    pruned = first_round_done(monkeypatch)
    async with start_easel() as bot:
        await asyncio.wait_for(pruned.wait(), RENDER_TIMEOUT_S)
        # Another process's connection: its lock taken off the event loop (a transaction of the
        # bot's own may need the loop to end), with a wait that only bounds a hang.
        holder = sqlite3.connect(
            bot.settings.database_path, isolation_level=None, timeout=60, check_same_thread=False
        )
        try:
            await asyncio.to_thread(holder.execute, "BEGIN IMMEDIATE")
            begun.clear()
            imagine = await fake_discord.invoke_command("imagine", {"prompt": "a cat", **QUICK})
            await imagine.wait_for_ack()
            await asyncio.wait_for(begun.wait(), RENDER_TIMEOUT_S)  # its submit waits

            quota = await fake_discord.invoke_command("quota", {}, user=fake_discord.owner_id)
            # Was refused as late (5 s at SQLite's default busy timeout: the whole wait here).
            assert await quota.wait_for_ack() < ACK_DEADLINE_S
            assert "**Day:**" in (await quota.wait_for_answer()).content
        finally:
            holder.execute("ROLLBACK")
            holder.close()

        # The /imagine went through once the lock was gone, charged once.
        await imagine.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert await images_today(bot.services, fake_discord.user_id, fake_discord.guild_id) == 1
