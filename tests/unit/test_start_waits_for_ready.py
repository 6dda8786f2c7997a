"""Before its first job, each device's dispatcher waits for Discord's READY
(``DiscordResults.servers_known``, the queue's ``first_wait``), so that a job restored at
start-up of a server that removed Easel while it was offline ends unrendered: the jobs stay
queued meanwhile, in their places. A stop ends the wait, and a READY that never comes is
logged once and waited for no longer."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import cast

import aiosqlite
import discord
import pytest

from bot.jobs.queue import FinishedJob, JobQueue, Submission
from cogs.results import posting
from cogs.results.posting import DiscordResults
from inference.types import RenderRequest
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine
from tests.support.sinks import RecordingSink

WAIT_S = 30.0  # far longer than any of these waits ends in


class NotReady:
    """A client before READY: it knows no server; ``ready()`` makes it ready."""

    def __init__(self) -> None:
        self._ready = asyncio.Event()

    def is_ready(self) -> bool:
        return self._ready.is_set()

    def get_guild(self, guild_id: int) -> None:
        return None

    async def wait_until_ready(self) -> None:
        await self._ready.wait()

    def ready(self) -> None:
        self._ready.set()


def results_for(client: NotReady) -> DiscordResults:
    results = DiscordResults(cast(discord.Client, client))
    results.removed_from = lambda guild_id: client.is_ready()
    return results


async def test_the_first_starts_wait_for_ready_and_then_no_more() -> None:
    client = NotReady()
    results = results_for(client)
    waiting = asyncio.ensure_future(results.servers_known())
    await asyncio.sleep(0)
    assert not waiting.done()
    client.ready()
    await asyncio.wait_for(waiting, WAIT_S)
    await asyncio.wait_for(results.servers_known(), 0.5)  # ready: at once


async def test_nothing_waits_where_no_server_is_read_from_ready() -> None:
    results = DiscordResults(cast(discord.Client, NotReady()))  # no ``removed_from``
    await asyncio.wait_for(results.servers_known(), 0.5)


async def test_a_stop_ends_the_wait_for_ready_cancelled() -> None:
    results = results_for(NotReady())
    waiting = asyncio.ensure_future(results.servers_known())
    await asyncio.sleep(0)
    results.stopping()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, WAIT_S)


async def test_a_ready_that_never_comes_is_logged_once_and_the_starts_go_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(posting, "SERVER_WAIT_S", 0.01)
    results = results_for(NotReady())
    with caplog.at_level(logging.WARNING, logger=posting.__name__):
        await asyncio.wait_for(asyncio.gather(*(results.servers_known() for _ in range(3))), WAIT_S)
        await asyncio.wait_for(results.servers_known(), 0.5)  # given up: at once
    [warning] = [record.getMessage() for record in caplog.records]
    assert "READY has not come within 0.01 s" in warning, warning
    results.stopping()


class NoRules:
    """A start gate that lets every job render, noting each one asked about."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def start_waits_for(self, job_id: str, user_id: int, guild_id: int | None) -> None:
        self.asked.append(job_id)

    async def why_not_started(self, job: FinishedJob) -> str | None:
        return None


async def test_a_job_stays_queued_in_its_place_until_ready_then_renders(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    """Not handed out before READY (review R_B3 and the lead's run: handed out to wait, a
    restored job left the queue, and the places its message and others' showed went wrong;
    after a READY that never came it was handed out again and again)."""
    client = NotReady()
    results = results_for(client)
    gate = NoRules()
    queue = JobQueue(conn, [DeviceWorker("cpu", lambda _: InstantEngine())], tmp_path / "images")
    sink = RecordingSink(conn)
    queue.set_sink(sink)
    queue.set_start_gate(gate, first_wait=results.servers_known)
    await queue.start()
    try:
        job_id = await queue.submit(Submission("imagine", RenderRequest("a barn", steps=2), 1, 41))
        for _ in range(20):  # the dispatcher's turns: it hands nothing out
            await asyncio.sleep(0)
        state = await queue.state(job_id)
        assert state is not None and state.position == 0, state
        assert gate.asked == [] and sink.delivered == []
        client.ready()
        await asyncio.wait_for(sink.wait_for(1), WAIT_S)
        assert gate.asked.count(job_id) <= 2, gate.asked  # its start, its result's turn
    finally:
        await queue.stop()
        results.stopping()
