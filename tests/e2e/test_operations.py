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
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from bot.logging_setup import install_logging
from bot.settings import Settings
from tests.conftest import ErrorLogs
from tests.e2e.conftest import StartEasel
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    imagine,
    job_id_of,
    limit_daily_images,
    reply_to,
)
from tests.fake_discord import FakeDiscord
from tests.support.engines import HeldEngine
from tests.support.metrics import fetch, moved, scrape, value

PUBLIC = 5151
PRIVATE_PROMPT = "a violet lighthouse nobody else may read"
# Interaction tokens ride in the paths of webhook and interaction callback calls.
URL_TOKEN = re.compile(r"/(?:webhooks|interactions)/\d+/([^/]+)")
WEBHOOK_EDIT = ("PATCH", "/webhooks/{app}/{token}/messages/{message}")


@contextmanager
def json_log(settings: Settings) -> Iterator[io.StringIO]:
    """The JSON log lines written meanwhile, as the bot writes them (``install_logging``)."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = install_logging("json", settings.log_secrets, stream=stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines_of(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def logged(stream: io.StringIO, text: str) -> None:
    """Wait (generously: a loaded machine) for a log line holding ``text``."""
    for _ in range(1200):
        if text in stream.getvalue():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no log line holds {text!r}:\n{stream.getvalue()}")


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
    with json_log(easel_settings_for_test) as stream:
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
            await logged(stream, f"job {public_job} delivered")

    log = stream.getvalue()
    lines = lines_of(stream)  # each line one JSON object
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    for secret in ("violet lighthouse", fake_discord.token):
        assert secret not in log
    tokens = {match[1] for call in fake_discord.calls if (match := URL_TOKEN.search(call.path))}
    assert tokens and not any(token in log for token in tokens)

    def events_of(job_id: str) -> Counter[str]:
        return Counter(
            line["event"] for line in lines if line.get("job_id") == job_id and "event" in line
        )

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
    # The private picture went to its maker alone, the private cancel was told to them, the
    # public job's end was posted in its channel.
    assert [line["posted"] for line in lines if line.get("event") == "delivered"] == [
        "private",
        "notice",
        "channel",
    ]


async def test_a_job_traced_by_its_id_shows_why_it_failed_or_was_not_posted(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    error_logs: ErrorLogs,
) -> None:
    """docs/deployment.md's trace, ``jq 'select(.job_id == "…")'``, shows a job's cause too
    (audit AUD15 finding 3): the traceback of a job that failed inside Easel, the line saying
    a result was not posted; its ``failed`` line has the reason, its ``delivered`` line where
    the outcome went. Those lines named the job in their text only, so the trace read
    "failed … delivered", or "cancelled … delivered" for a picture nobody got."""
    error_logs.expect(r"failed on cpu: internal error \(RuntimeError\)")
    engine = HeldEngine(fail_on="boom")
    with json_log(easel_settings_for_test) as stream:
        async with start_easel(lambda _device: engine):
            with engine:  # released at the end, whatever happens: the bot stops
                failing = await fake_discord.invoke_command(
                    "imagine", {"prompt": "a boom", **QUICK}
                )
                engine.released.set()
                told = await failing.wait_for_original(
                    lambda m: "reference" in m.content, timeout=RENDER_TIMEOUT_S
                )
                failed_job = re.findall(r"[0-9a-f]{16}", told.content)[-1]
                await logged(stream, f"job {failed_job} delivered")

                engine.released.clear()
                unposted = await fake_discord.invoke_command("imagine", {"prompt": "owl", **QUICK})
                progress = await unposted.wait_for_original(
                    lambda m: "Rendering" in m.content, timeout=RENDER_TIMEOUT_S
                )
                [*_, unposted_job] = [
                    x["job_id"] for x in lines_of(stream) if x.get("event") == "queued"
                ]
                await fake_discord.delete_messages(progress)
                await logged(stream, f"job {unposted_job} withdrawn")
                engine.released.set()
                await logged(stream, f"job {unposted_job} delivered")
    # Easel's edits of the deleted response, each telling it so.
    assert {v.split(":", 1)[0] for v in fake_discord.take_violations()} <= {"unknown-resource"}
    lines = lines_of(stream)

    def trace(job_id: str) -> list[dict[str, Any]]:  # jq 'select(.job_id == "…")'
        return [line for line in lines if line.get("job_id") == job_id]

    failed = trace(failed_job)
    [traceback] = [line for line in failed if "exception" in line]
    assert "internal error (RuntimeError)" in traceback["message"]
    [failed_line] = [line for line in failed if line.get("event") == "failed"]
    assert failed_line["reason"] == "internal"
    [delivered] = [line for line in failed if line.get("event") == "delivered"]
    assert delivered["posted"] == "channel"  # its end, told in its channel

    withdrawn = trace(unposted_job)
    assert any("not posted" in line["message"] for line in withdrawn), withdrawn
    assert any("withdrawn" in line["message"] for line in withdrawn), withdrawn
    # Every line that names either job in its text is found by its id.
    for job_id in (failed_job, unposted_job):
        assert [line for line in lines if job_id in line["message"]] == trace(job_id)
