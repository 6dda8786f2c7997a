"""The HTTP trace tells the acknowledge-first gate of an interaction's first answer only once it
ended for good: discord.py tries a 5xx or a 429 again (bot.metrics.discord_http_trace)."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import aiohttp
import pytest
from yarl import URL

from bot.metrics import ANSWER_DEADLINE_S, discord_http_trace
from bot.snowflakes import CLOCK_SLACK_S
from tests.unit.test_unheard_deletions import post_made_at

INTERACTION_ID = 1234567890123456789
CALLBACK = URL(
    f"https://discord.com/api/v10/interactions/{INTERACTION_ID}/a-token_x.y/callback"
    "?with_response=true"
)


async def request_ended(trace: aiohttp.TraceConfig, url: URL, status: int) -> None:
    params = SimpleNamespace(url=url, method="POST", response=SimpleNamespace(status=status))
    for on_end in trace.on_request_end:
        await on_end(None, SimpleNamespace(), params)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_an_answer_discord_py_tries_again_is_not_told(status: int) -> None:
    told: list[int] = []
    await request_ended(discord_http_trace(answered=told.append), CALLBACK, status)
    assert told == []


@pytest.mark.parametrize("status", [200, 204, 400, 404])
async def test_an_answer_taken_or_refused_for_good_is_told(status: int) -> None:
    told: list[int] = []
    await request_ended(discord_http_trace(answered=told.append), CALLBACK, status)
    assert told == [INTERACTION_ID]


async def connection_dropped(trace: aiohttp.TraceConfig, url: URL) -> None:
    params = SimpleNamespace(url=url, method="POST", exception=OSError("reset"))
    for on_exception in trace.on_request_exception:
        await on_exception(None, SimpleNamespace(), params)  # type: ignore[arg-type]


async def test_an_answer_lost_to_the_connection_is_told() -> None:
    told: list[int] = []
    await connection_dropped(discord_http_trace(answered=told.append), CALLBACK)
    assert told == [INTERACTION_ID]


async def test_other_requests_are_not_told() -> None:
    told: list[int] = []
    edit = URL("https://discord.com/api/v10/webhooks/1/a-token/messages/@original")
    await request_ended(discord_http_trace(answered=told.append), edit, 200)
    assert told == []


@pytest.mark.parametrize(
    ("status", "lost"), [(200, False), (400, False), (429, False), (502, True)]
)
async def test_an_answer_with_no_reply_is_told_lost(status: int, lost: bool) -> None:
    """A 5xx: Discord may have acted on it (``cogs.common.defer_thinking`` then takes its
    40060 for this answer's own); a 429 was refused unseen."""
    told: list[int] = []
    await request_ended(discord_http_trace(lost=told.append), CALLBACK, status)
    assert told == ([INTERACTION_ID] if lost else [])


async def test_an_answer_whose_connection_dropped_is_told_lost() -> None:
    told: list[int] = []
    await connection_dropped(discord_http_trace(lost=told.append), CALLBACK)
    assert told == [INTERACTION_ID]


def callback_of(interaction_id: int) -> URL:
    return URL(f"https://discord.com/api/v10/interactions/{interaction_id}/a-token/callback")


@pytest.mark.parametrize(
    ("made_from_now_s", "warned_of"),
    [
        # An interaction made, by its id, well after now: this host's clock is behind (the ack
        # latency reads 0), which lets a deletion in a gateway gap go unasked (bot.snowflakes).
        ((2 * CLOCK_SLACK_S, 3 * CLOCK_SLACK_S), "at least 1"),
        # An answer Discord took (within its 3 s) an hour after the interaction's id says it
        # was made, by this host's clock: that clock is an hour ahead (AUD35 F4).
        ((-3600, -7200), "at least 359"),
    ],
)
async def test_a_host_clock_off_past_the_slack_is_warned_of_once(
    caplog: pytest.LogCaptureFixture, made_from_now_s: tuple[float, float], warned_of: str
) -> None:
    trace = discord_http_trace()
    with caplog.at_level(logging.WARNING, logger="bot.metrics"):
        for from_now_s in made_from_now_s:
            await request_ended(trace, callback_of(post_made_at(time.time() + from_now_s)), 204)
    warned = [record.getMessage() for record in caplog.records]
    assert len(warned) == 1, warned
    side = "behind Discord's" if made_from_now_s[0] > 0 else "ahead of Discord's"
    assert f"clock is {warned_of}" in warned[0] and side in warned[0]


async def test_a_host_clock_off_within_the_slack_is_not_warned_of(
    caplog: pytest.LogCaptureFixture,
) -> None:
    trace = discord_http_trace()
    late_s = ANSWER_DEADLINE_S + CLOCK_SLACK_S / 2
    with caplog.at_level(logging.WARNING, logger="bot.metrics"):
        for made_s in (time.time() + CLOCK_SLACK_S / 2, time.time() - late_s):
            await request_ended(trace, callback_of(post_made_at(made_s)), 204)
        # Refused: Discord's deadline passed, by its clock as well.
        await request_ended(trace, callback_of(post_made_at(time.time() - 3600)), 404)
    assert caplog.records == []
