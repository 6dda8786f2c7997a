"""Deliveries counted by outcome over the fake Discord, scraped over HTTP: a result whose post
Discord answers with errors is a failing delivery in /metrics (the job itself counts "done"),
and one Discord refuses for good is given up; a private one its maker's closed direct
messages refuse is posted nowhere, and said so; the ended jobs not posted yet, a failing
one's or one whose end the journal refused, are counted until they are."""

from __future__ import annotations

import asyncio
import functools
import logging

import pytest

from bot.app import EaselBot
from bot.jobs.queue import delivery as job_delivery
from bot.jobs.queue import job_queue
from bot.jobs.queue.delivery import DeliveryRetries
from bot.jobs.queue.journal_writes import JournalWriter
from bot.jobs.queue.values import FinishedJob
from bot.settings import Settings
from db import jobs as journal
from tests.conftest import ErrorLogs
from tests.e2e.conftest import StartEasel
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, deliver_after_token_expiry, reply_to
from tests.e2e.test_full_storage import Faults, refused_while
from tests.fake_discord import FakeDiscord
from tests.support.logs import naming, when_logged
from tests.support.metrics import Samples, moved, scrape, scraped_until, value
from tests.support.pictures import has_picture

WEBHOOK_EDIT = ("PATCH", "/webhooks/{app}/{token}/messages/{message}")
UNDELIVERED = "easel_undelivered_jobs"


@pytest.fixture
def easel_settings_for_test(easel_settings_for_test: Settings) -> Settings:
    """The e2e settings with the metrics server on a free loopback port."""
    return easel_settings_for_test.model_copy(update={"metrics_addr": "127.0.0.1:0"})


def hold_deliveries(
    bot: EaselBot, monkeypatch: pytest.MonkeyPatch
) -> tuple[asyncio.Event, asyncio.Event]:
    """Each result's delivery waits: the first event is set as one arrives, the second lets
    them go on."""
    delivering, released = asyncio.Event(), asyncio.Event()
    deliver = bot.results.deliver

    async def held(job: FinishedJob) -> int | None:
        delivering.set()
        await released.wait()
        return await deliver(job)

    monkeypatch.setattr(bot.results, "deliver", held)
    return delivering, released


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
        delivering, released = hold_deliveries(bot, monkeypatch)

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


@pytest.fixture
def quick_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed post or a refused end goes to the delivery sweep at once, which runs (and tries
    each again) every 0.1 s; the journal's writes are given up after three quick tries."""
    monkeypatch.setattr(job_delivery, "DELIVERY_RETRY_WAITS_S", ())
    quick = functools.partial(
        DeliveryRetries, sweep_every_s=0.1, first_wait_s=0.1, longest_wait_s=0.1
    )
    monkeypatch.setattr(job_queue, "DeliveryRetries", quick)
    monkeypatch.setattr(job_queue, "JournalWriter", lambda _waits: JournalWriter((0.05,) * 3))


@pytest.mark.usefixtures("quick_sweep")
async def test_a_result_whose_post_fails_is_counted_undelivered_until_it_is_posted(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with start_easel() as bot:
        assert bot.metrics_server is not None
        port = bot.metrics_server.port
        before = await scrape(port)
        delivering, released = hold_deliveries(bot, monkeypatch)
        handle = await fake_discord.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        await asyncio.wait_for(delivering.wait(), RENDER_TIMEOUT_S)
        fake_discord.fail(*WEBHOOK_EDIT, times=1000, status=503)  # every edit: a Discord outage
        released.set()

        def failing(samples: Samples) -> bool:
            tried = moved(before, samples, "easel_deliveries_total", outcome="failed") >= 1
            return tried and value(samples, UNDELIVERED) == 1

        await scraped_until(port, failing, RENDER_TIMEOUT_S)
        fake_discord.fail(*WEBHOOK_EDIT, times=1, status=503)  # the outage ends after one more
        await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        await scraped_until(port, lambda s: value(s, UNDELIVERED) == 0, RENDER_TIMEOUT_S)


@pytest.mark.usefixtures("quick_sweep")
async def test_a_result_whose_end_the_journal_refused_is_counted_undelivered_while_kept(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    monkeypatch: pytest.MonkeyPatch,
    error_logs: ErrorLogs,
) -> None:
    """Kept in memory, not in the journal (its job still "running" there): counted all the
    same, until the sweep writes and posts it."""
    error_logs.expect("its outcome was not recorded")
    faults = Faults()
    monkeypatch.setattr(journal, "mark_done", refused_while(faults, journal.mark_done))
    async with start_easel() as bot:
        assert bot.metrics_server is not None
        port = bot.metrics_server.port
        kept = asyncio.Event()
        with when_logged(naming("", logging.ERROR, "was not recorded"), kept.set):
            faults.on = True
            handle = await fake_discord.invoke_command("imagine", {"prompt": "a cat", **QUICK})
            await asyncio.wait_for(kept.wait(), RENDER_TIMEOUT_S)
        await scraped_until(port, lambda s: value(s, UNDELIVERED) == 1, RENDER_TIMEOUT_S)
        faults.on = False
        await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        await scraped_until(port, lambda s: value(s, UNDELIVERED) == 0, RENDER_TIMEOUT_S)


async def test_a_private_result_refused_by_closed_direct_messages_is_counted_not_posted(
    fake_discord: FakeDiscord, start_easel: StartEasel, caplog: pytest.LogCaptureFixture
) -> None:
    """Its token expired, its maker's direct messages closed: posted nowhere, as its
    ``delivered`` line (``posted``) and /metrics say; not "private", nor a delivery."""
    caplog.set_level(logging.INFO, "bot.jobs.queue")
    fake_discord.revoke_send_messages(fake_discord.dm_channel_of(fake_discord.user_id))
    async with start_easel() as bot:
        assert bot.metrics_server is not None
        port = bot.metrics_server.port
        await reply_to(fake_discord, "settings", {"private_results": True})
        before = await scrape(port)
        delivered = asyncio.Event()
        with when_logged(naming("", logging.INFO, " delivered: "), delivered.set):
            posted = await deliver_after_token_expiry(fake_discord, bot, "a secret cat")
            assert await asyncio.wait_for(posted, RENDER_TIMEOUT_S) is None
            await asyncio.wait_for(delivered.wait(), RENDER_TIMEOUT_S)

        def delta(samples: Samples, outcome: str) -> float:
            return moved(before, samples, "easel_deliveries_total", outcome=outcome)

        after = await scraped_until(port, lambda s: delta(s, "not_posted") == 1, RENDER_TIMEOUT_S)
    assert delta(after, "delivered") == 0
    [line] = [r for r in caplog.records if getattr(r, "event", None) == "delivered"]
    assert getattr(line, "posted", None) == "none"
