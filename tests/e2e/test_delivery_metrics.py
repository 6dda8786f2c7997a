"""Deliveries counted by outcome over the fake Discord, scraped over HTTP: a result whose post
Discord answers with errors is a failing delivery in /metrics (the job itself counts "done"),
and one Discord refuses for good is given up."""

from __future__ import annotations

import asyncio

import pytest

from bot.jobs.queue import delivery as job_delivery
from bot.jobs.queue.values import FinishedJob
from bot.settings import Settings
from tests.conftest import ErrorLogs
from tests.e2e.conftest import StartEasel
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S
from tests.fake_discord import FakeDiscord
from tests.support.metrics import Samples, moved, scrape, scraped_until
from tests.support.pictures import has_picture

WEBHOOK_EDIT = ("PATCH", "/webhooks/{app}/{token}/messages/{message}")


@pytest.fixture
def easel_settings_for_test(easel_settings_for_test: Settings) -> Settings:
    """The e2e settings with the metrics server on a free loopback port."""
    return easel_settings_for_test.model_copy(update={"metrics_addr": "127.0.0.1:0"})


async def test_a_result_post_answering_503_is_a_failed_delivery_until_it_is_posted(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tried again in its lane every half second for a while: the outage's end is seen there.
    monkeypatch.setattr(job_delivery, "DELIVERY_RETRY_WAITS_S", (0.5,) * 20)
    async with start_easel() as bot:
        assert bot.metrics_server is not None
        port = bot.metrics_server.port
        before = await scrape(port)
        # The outage begins once the result is to be posted: the job's progress edits before
        # it pass (each edit answered 503 takes discord.py's retries, 25 s).
        delivering, released = asyncio.Event(), asyncio.Event()
        deliver = bot.results.deliver

        async def held(job: FinishedJob) -> int | None:
            delivering.set()
            await released.wait()
            return await deliver(job)

        monkeypatch.setattr(bot.results, "deliver", held)

        def delta(samples: Samples, outcome: str) -> float:
            return moved(before, samples, "easel_deliveries_total", outcome=outcome)

        handle = await fake_discord.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        await asyncio.wait_for(delivering.wait(), RENDER_TIMEOUT_S)
        fake_discord.fail(*WEBHOOK_EDIT, times=1000, status=503)  # every edit: a Discord outage
        released.set()
        failing = await scraped_until(port, lambda s: delta(s, "failed") >= 1, RENDER_TIMEOUT_S)
        assert moved(before, failing, "easel_jobs_total", kind="imagine", outcome="done") == 1
        assert delta(failing, "delivered") == 0
        fake_discord.fail(*WEBHOOK_EDIT, times=1, status=503)  # the outage ends after one more
        await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        after = await scraped_until(port, lambda s: delta(s, "delivered") == 1, RENDER_TIMEOUT_S)
    assert delta(after, "failed") >= 1
    assert delta(after, "given_up") == 0


async def test_a_result_post_discord_refuses_is_given_up_and_so_is_its_failure_s(
    fake_discord: FakeDiscord, start_easel: StartEasel, error_logs: ErrorLogs
) -> None:
    error_logs.expect("its result cannot be posted")
    error_logs.expect("its end could not be posted")
    async with start_easel() as bot:
        assert bot.metrics_server is not None
        port = bot.metrics_server.port
        before = await scrape(port)
        fake_discord.fail(*WEBHOOK_EDIT, times=1000, status=400)  # refused whatever its tries
        await fake_discord.invoke_command("imagine", {"prompt": "a cat", **QUICK})

        def delta(samples: Samples, outcome: str) -> float:
            return moved(before, samples, "easel_deliveries_total", outcome=outcome)

        # The result is refused, its job failed and refunded; that failure's post is refused.
        after = await scraped_until(port, lambda s: delta(s, "given_up") == 2, RENDER_TIMEOUT_S)
    assert delta(after, "failed") == 0
    assert delta(after, "delivered") == 0
