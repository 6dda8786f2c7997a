"""SIGTERM stops Easel within 30 s even when every phase of the stop stalls: each waits its
own grace or what is left of the stop's budget, and what a cut phase had in hand stays
journaled for the next start. Over the fake Discord."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from bot import app, bans
from bot.jobs.queue import job_queue
from bot.settings import Settings
from cogs.results.posting import DiscordResults
from db import jobs as journal
from db.database import connect
from inference.types import ProgressCallback, RenderedImage, RenderRequest
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    has_picture,
    journaled_before_start,
)
from tests.fake_discord import FakeDiscord
from tests.support.engines import InstantEngine

GONE = 6402  # left the server while Easel was offline; has a job journaled before
BUDGET_S = 2.0  # a small stop budget keeps the test fast; the graces keep their defaults


class DeafEngine(InstantEngine):
    """Renders "a render that never ends" until ``released``, deaf to its stop (a device
    stuck in a kernel); any other prompt at once."""

    def __init__(self) -> None:
        super().__init__()
        self.stuck = threading.Event()
        self.released = threading.Event()

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]:
        if any("never ends" in request.prompt for request in requests):
            self.stuck.set()
            self.released.wait()
        return super().render_batch(requests, progress, cancel)


def never_returns(
    owner: object, method: str, monkeypatch: pytest.MonkeyPatch
) -> asyncio.Queue[tuple[Any, ...]]:
    """Each call of ``owner``'s coroutine method ``method`` hangs; the queue gets its arguments."""
    calls: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    async def hangs(*args: Any, **kwargs: Any) -> Any:
        calls.put_nowait(args)
        await asyncio.Event().wait()

    monkeypatch.setattr(owner, method, hangs)
    return calls


async def cancelled(tasks: Iterable[asyncio.Task[Any]]) -> None:
    left = list(tasks)
    for task in left:
        task.cancel()
    await asyncio.wait(left)


def test_the_default_budget_is_within_the_contract_and_bounds_the_phases_graces() -> None:
    waits_s = app.STOP_BUDGET_S - app.CLOSING_RESERVE_S
    assert 0 < waits_s < app.STOP_BUDGET_S < 30
    # Each grace alone fits, so one stalled phase keeps its whole promise...
    for grace_s in (bans.APPLYING_GRACE_S, job_queue.SHUTDOWN_GRACE_S, app.HANDLER_GRACE_S):
        assert grace_s <= waits_s
    # ... while all of them stalled would exceed the contract, were they not clamped.
    graces_s = bans.APPLYING_GRACE_S + 2 * job_queue.SHUTDOWN_GRACE_S + 2 * app.HANDLER_GRACE_S
    assert graces_s > 30


async def test_a_stop_where_every_phase_stalls_ends_within_its_budget_and_loses_no_job(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, settings = fake_discord, easel_settings_for_test
    monkeypatch.setattr(app, "STOP_BUDGET_S", BUDGET_S, raising=False)
    monkeypatch.setattr(app, "CLOSING_RESERVE_S", 0.5, raising=False)
    restored = await journaled_before_start(fake, settings, GONE, "a restored barn")
    engine = DeafEngine()
    try:
        with pytest.MonkeyPatch.context() as stalled:
            # The start-up check finds GONE gone, and its cancel of their restored job never
            # ends; Discord never answers a post (a finished job's picture).
            applying = never_returns(bans.MemberStops, "cancel_jobs", stalled)
            posts = never_returns(DiscordResults, "_post_result", stalled)
            async with start_easel(lambda device: engine) as bot:
                await asyncio.wait_for(applying.get(), RENDER_TIMEOUT_S)
                await fake.invoke_command("imagine", {"prompt": "a posted cat", **QUICK})
                _, posting, _ = await asyncio.wait_for(posts.get(), RENDER_TIMEOUT_S)
                await fake.invoke_command(
                    "imagine", {"prompt": "a render that never ends", **QUICK}
                )
                assert await asyncio.to_thread(engine.stuck.wait, RENDER_TIMEOUT_S)
                submits = never_returns(bot.queue, "submit", stalled)  # a handler hangs
                await fake.invoke_command("imagine", {"prompt": "a handled dog", **QUICK})
                await asyncio.wait_for(submits.get(), RENDER_TIMEOUT_S)

                loop = asyncio.get_running_loop()
                stopping_at = loop.time()
                try:
                    async with asyncio.timeout(BUDGET_S + 5):
                        await bot.close()
                finally:
                    engine.released.set()  # the deaf render ends once the stop is over
                assert loop.time() - stopping_at < BUDGET_S + 1
                # What ``asyncio.run`` does to the handler still hanging as the process ends.
                await cancelled(
                    task for task in asyncio.all_tasks() if "invoker" in task.get_name()
                )
    finally:
        engine.released.set()
    # The next start finds the jobs the stop cut short: the render requeued, the finished
    # job still to post, the restored job still queued for the start-up check.
    conn = await connect(settings.database_path)
    try:
        running = await journal.jobs_with_status(conn, journal.JobStatus.RUNNING)
        queued = await journal.jobs_with_status(conn, journal.JobStatus.QUEUED)
        undelivered = await journal.finished_undelivered(conn)
    finally:
        await conn.close()
    assert ["a render that never ends" in job.request_json for job in running] == [True]
    assert [job.id for job in queued] == [restored]
    assert [job.id for job in undelivered] == [posting.job_id]
    async with start_easel(lambda device: InstantEngine()):
        for prompt in ("a posted cat", "a render that never ends"):
            await fake.wait_for_channel_message(
                lambda message, prompt=prompt: has_picture(message) and prompt in message.content,
                timeout=RENDER_TIMEOUT_S,
            )
        await fake.wait_for_channel_message(  # GONE's job cancelled, its notice posted
            lambda message: restored in message.content, timeout=RENDER_TIMEOUT_S
        )
