"""A command whose first response Discord refuses (its 3 s passed: Unknown interaction) is
logged as a warning naming the command and Discord's code, not as an internal error with a
reference no member was given: nothing can answer the member any more. One refused as
answered already (40060: it landed, Discord's reply was lost) is said answered."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cogs import errors
from tests.e2e.helpers import QUICK, StartEasel
from tests.fake_discord import FakeDiscord


@pytest.fixture
def reported(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set once ``report_error`` has reported a failure."""
    reported = asyncio.Event()
    report_error = errors.report_error

    async def noting_reports(*args: Any, **kwargs: Any) -> None:
        await report_error(*args, **kwargs)
        reported.set()

    monkeypatch.setattr(errors, "report_error", noting_reports)
    return reported


async def test_a_late_first_response_is_a_warning_not_an_internal_error(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    reported: asyncio.Event,
) -> None:
    async with start_easel() as bot:
        quota_refusal = bot.queue.quota_refusal

        async def late_check(*args: Any, **kwargs: Any) -> object:
            fake_discord.advance_time(4)  # Discord's 3 s pass before the defer
            return await quota_refusal(*args, **kwargs)

        monkeypatch.setattr(bot.queue, "quota_refusal", late_check)
        handle = await fake_discord.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        await asyncio.wait_for(reported.wait(), 30)
    # (the fixture's error_logs fails the test on any error logged: none is)
    warned = [r.getMessage() for r in caplog.records if "first response" in r.getMessage()]
    assert warned == [
        "/imagine: Discord refused its first response (Unknown interaction, code 10062); "
        "the member is not answered"
    ]
    assert handle.error_codes == [10062]  # nothing else sent: it would be refused too
    assert fake_discord.take_violations()  # the late defer


async def test_a_first_response_that_landed_with_its_answer_lost_is_said_answered(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    caplog: pytest.LogCaptureFixture,
    reported: asyncio.Event,
) -> None:
    """/help's answer landed and Discord's reply was lost (a 502): discord.py sends it again,
    and Discord refuses that (40060). The member has their answer: a warning says so, and no
    internal error is logged."""
    async with start_easel():
        fake_discord.fail(
            "POST", "/interactions/{interaction}/{token}/callback", status=502, landed=True
        )
        handle = await fake_discord.invoke_command("help", {})
        await asyncio.wait_for(reported.wait(), 30)
    warned = [r.getMessage() for r in caplog.records if "first response" in r.getMessage()]
    assert warned == [
        "/help: Discord refused its first response (already acknowledged, code 40060); "
        "Discord says it was already answered"
    ]
    assert handle.error_codes == [40060]
    assert handle.original is not None and handle.original.content  # the answer that landed
    assert fake_discord.take_violations()  # discord.py's second answer, after the 502


async def test_a_refusal_that_landed_with_its_answer_lost_is_said_answered(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    caplog: pytest.LogCaptureFixture,
    reported: asyncio.Event,
) -> None:
    """Plain /cancel with nothing to cancel: its refusal (the first response) landed, its
    answer lost (a 502), and discord.py's second try refused (40060): said answered, not
    "could not tell"."""
    async with start_easel():
        fake_discord.fail(
            "POST", "/interactions/{interaction}/{token}/callback", status=502, landed=True
        )
        handle = await fake_discord.invoke_command("cancel", {})
        await asyncio.wait_for(reported.wait(), 30)
    assert handle.original is not None and handle.original.content  # the refusal that landed
    said = [r.getMessage() for r in caplog.records if "40060" in r.getMessage()]
    assert said == [
        f"/cancel: Discord says user {fake_discord.user_id} was already answered (code 40060)"
    ]
    assert not any("could not tell" in r.getMessage() for r in caplog.records)
    assert fake_discord.take_violations()  # discord.py's second answer, after the 502
