"""Operating Easel: the Prometheus metrics server and the JSON log, on the real path."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import urllib.error
import urllib.request
from collections import Counter

import pytest

from bot.logging_setup import install_logging
from bot.settings import Settings
from tests.e2e.conftest import StartEasel
from tests.e2e.helpers import QUICK, imagine, job_id_of, limit_daily_images, reply_to
from tests.fake_discord import FakeDiscord
from tests.support.metrics import fetch, moved, scrape, value

PUBLIC = 5151
PRIVATE_PROMPT = "a violet lighthouse nobody else may read"
# Interaction tokens ride in the paths of webhook and interaction callback calls.
URL_TOKEN = re.compile(r"/(?:webhooks|interactions)/\d+/([^/]+)")
WEBHOOK_EDIT = ("PATCH", "/webhooks/{app}/{token}/messages/{message}")


@pytest.fixture
def easel_settings_for_test(easel_settings_for_test: Settings) -> Settings:
    """The e2e settings with the metrics server on a free loopback port."""
    return easel_settings_for_test.model_copy(update={"metrics_addr": "127.0.0.1:0"})


async def test_one_imagine_moves_the_metrics_scraped_over_http(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel() as bot:
        assert bot.metrics_server is not None
        port = bot.metrics_server.port
        assert await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
        before = await scrape(port)
        # The result's edit meets one 429 first: discord.py waits and retries, we count it.
        fake_discord.rate_limit(*WEBHOOK_EDIT, times=1, retry_after=0.05)
        await imagine(fake_discord, "a red cat")
        # That was the member's last picture today: the next one is refused.
        await limit_daily_images(fake_discord, 1)
        over = await fake_discord.invoke_command("imagine", {"prompt": "one more", **QUICK})
        await over.wait_for_original(lambda m: "⛔" in m.content)
        after = await scrape(port)

    def delta(name: str, **labels: str) -> float:
        return moved(before, after, name, **labels)

    assert delta("easel_jobs_total", kind="imagine", outcome="done") == 1
    assert delta("easel_jobs_submitted_total", kind="imagine") == 1
    assert delta("easel_quota_refusals_total") == 1
    assert delta("easel_render_seconds_count", model="default", device="cpu") == 1
    assert delta("easel_render_seconds_sum", model="default", device="cpu") > 0
    assert value(after, "easel_render_iterations_per_second", model="default", device="cpu") > 0
    assert delta("easel_queue_wait_seconds_count") == 1
    assert delta("easel_ack_latency_seconds_count") >= 1
    assert 0 < delta("easel_ack_latency_seconds_sum") < 3
    assert delta("easel_discord_rate_limits_total") == 1
    assert delta("easel_discord_api_errors_total", status="429") == 1
    assert value(after, "easel_queue_depth") == 0
    # The server went with the bot.
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(urllib.request.urlopen, f"http://127.0.0.1:{port}/healthz", None, 2)


async def test_the_json_log_has_a_line_per_state_change_and_no_private_prompt_or_token(
    fake_discord: FakeDiscord, start_easel: StartEasel, easel_settings_for_test: Settings
) -> None:
    fake_discord.add_member(PUBLIC, "public", roles=(fake_discord.member_role_id,))
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = install_logging("json", easel_settings_for_test.log_secrets, stream=stream)
    try:
        async with start_easel():
            await reply_to(fake_discord, "settings", {"private_results": True})
            private_job = job_id_of(await imagine(fake_discord, PRIVATE_PROMPT))
            # A long public job renders while a second private one waits and is cancelled;
            # then the public one is stopped too.
            public = await fake_discord.invoke_command(
                "imagine", {"prompt": "a public green owl", **QUICK, "steps": 150}, user=PUBLIC
            )
            await public.wait_for_original(lambda m: "Rendering" in m.content, timeout=30)
            waiting = await fake_discord.invoke_command(
                "imagine", {"prompt": f"{PRIVATE_PROMPT}, again", **QUICK}
            )
            await waiting.wait_for_original(lambda m: "Queued" in m.content)
            assert "Cancelled job" in (await reply_to(fake_discord, "cancel")).content
            await waiting.wait_for_original(lambda m: "Cancelled (job" in m.content)
            stopping = await reply_to(fake_discord, "cancel", user=PUBLIC)
            assert "stops at the next step: you pay only for the GPU time" in stopping.content
            stopped = await public.wait_for_original(lambda m: "Cancelled" in m.content, timeout=30)
            public_job = job_id_of(stopped)
            await asyncio.sleep(0.2)  # the delivery is recorded just after the post
    finally:
        root.removeHandler(handler)
        root.setLevel(level)

    log = stream.getvalue()
    lines = [json.loads(line) for line in log.splitlines()]  # each line one JSON object
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    for secret in ("violet lighthouse", fake_discord.token):
        assert secret not in log
    tokens = {match[1] for call in fake_discord.calls if (match := URL_TOKEN.search(call.path))}
    assert tokens and not any(token in log for token in tokens)

    def events_of(job_id: str) -> Counter[str]:
        return Counter(line["event"] for line in lines if line.get("job_id") == job_id)

    assert events_of(private_job) == {"queued": 1, "started": 1, "done": 1, "delivered": 1}
    stopped_events = {"queued": 1, "started": 1, "cancelled": 1, "charged": 1, "delivered": 1}
    assert events_of(public_job) == stopped_events
    cancelled = {line["job_id"] for line in lines if line.get("event") == "cancelled"}
    [cancelled_job] = cancelled - {public_job}
    assert events_of(cancelled_job) == {
        "queued": 1,
        "cancelled": 1,
        "refunded": 1,
        "delivered": 1,
    }
    [queued] = [x for x in lines if x.get("job_id") == private_job and x["event"] == "queued"]
    assert queued["kind"] == "imagine" and queued["private"] is True
