"""A result posted while its maker's /forget-me erased the job is deleted by the sink that
posted it (``DiscordResults.retract``): in the job's channel, quietly when it is gone
already, logged when Discord refuses."""

from __future__ import annotations

import dataclasses
import logging
from types import SimpleNamespace
from typing import Any, cast

import discord
import pytest

from bot.jobs.queue import FinishedJob, RetractingSink
from cogs.contexts import _RECEIVED_AT
from cogs.results.posting import DiscordResults
from inference.types import RenderRequest

CHANNEL = 50
APPLICATION, NOW = 11, 1_800_000_000.0
_ANSWER = cast(Any, SimpleNamespace(status=403, reason="Forbidden"))


class Channels:
    """discord.Client's partial messages: each delete is recorded, then answered with
    ``answer`` (none: deleted)."""

    def __init__(self, answer: Exception | None = None) -> None:
        self.answer = answer
        self.deleted: list[tuple[int, int]] = []

    def get_partial_messageable(self, channel_id: int) -> object:
        def message(message_id: int) -> object:
            async def delete() -> None:
                self.deleted.append((channel_id, message_id))
                if self.answer is not None:
                    raise self.answer

            return SimpleNamespace(delete=delete)

        return SimpleNamespace(get_partial_message=message)


def erased_job(*, token: str | None = None) -> FinishedJob:
    return FinishedJob(
        job_id="j1",
        kind="imagine",
        succeeded=True,
        error=None,
        request=RenderRequest(prompt="a barn"),
        user_id=7,
        guild_id=5,
        channel_id=CHANNEL,
        application_id=None if token is None else APPLICATION,
        interaction_token=token,
        interaction_created_at=None if token is None else NOW - 60,
        images=(),
    )


@pytest.mark.parametrize(
    ("answer", "logged"),
    [
        (None, []),
        (discord.NotFound(_ANSWER, "Unknown Message"), []),
        (
            discord.Forbidden(_ANSWER, "Missing Access"),
            [
                "job j1: the erased job's post stays for now "
                "(403 Forbidden (error code: 0): Missing Access)"
            ],
        ),
    ],
)
async def test_the_result_of_an_erased_job_is_deleted_where_it_was_posted(
    answer: Exception | None, logged: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    channels = Channels(answer)
    results = DiscordResults(cast(discord.Client, channels))
    assert isinstance(results, RetractingSink)  # the queue asks it to
    with caplog.at_level(logging.WARNING, logger="cogs.results"):
        await results.retract(erased_job(), 900)
    assert channels.deleted == [(CHANNEL, 900)]
    assert caplog.messages == logged


class Webhooks:
    """discord.Webhook.partial's webhooks: each delete is recorded, then answered with
    ``answer`` (none: deleted)."""

    def __init__(self, answer: Exception | None = None) -> None:
        self.answer = answer
        self.deleted: list[tuple[int, str, int]] = []

    def partial(self, application_id: int, token: str, *, client: object) -> object:
        async def delete_message(message_id: int) -> None:
            self.deleted.append((application_id, token, message_id))
            if self.answer is not None:
                raise self.answer

        return SimpleNamespace(delete_message=delete_message)


@pytest.mark.parametrize(
    ("webhook_answer", "channel_deletes"),
    [
        (None, []),  # the edited original response: the channel's endpoint is not asked
        # The token was gone at delivery, so the result went to the channel: deleted there.
        (
            discord.HTTPException(
                cast(Any, SimpleNamespace(status=401, reason="")), {"code": 50027}
            ),
            [(CHANNEL, 900)],
        ),
        (
            discord.NotFound(cast(Any, SimpleNamespace(status=404, reason="")), {"code": 10008}),
            [(CHANNEL, 900)],
        ),
    ],
)
async def test_a_result_is_deleted_through_the_webhook_while_its_token_lives(
    monkeypatch: pytest.MonkeyPatch,
    webhook_answer: Exception | None,
    channel_deletes: list[tuple[int, int]],
) -> None:
    webhooks, channels = Webhooks(webhook_answer), Channels()
    monkeypatch.setattr(discord.Webhook, "partial", webhooks.partial)
    results = DiscordResults(cast(discord.Client, channels), wall_clock=lambda: NOW)
    await results.retract(erased_job(token="tok"), 900)
    assert webhooks.deleted == [(APPLICATION, "tok", 900)]
    assert channels.deleted == channel_deletes


async def test_a_retraction_judges_the_token_from_its_receipt_past_its_delivery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The host's wall clock an hour ahead: a /forget-me erasing the job as it was delivered
    has its post deleted through the token it was posted with, 5 s after the command came,
    not from the channel (which the bot may not view): the receipt outlives the delivery
    (RF1 LOW-2)."""
    webhooks, channels = Webhooks(), Channels()
    monkeypatch.setattr(discord.Webhook, "partial", webhooks.partial)
    monotonic = [1000.0]
    results = DiscordResults(
        cast(discord.Client, channels),
        wall_clock=lambda: NOW + 3600,
        monotonic=lambda: monotonic[0],
    )
    job = erased_job(token="tok")
    command = SimpleNamespace(extras={_RECEIVED_AT: monotonic[0]}, data={})
    results._received(job.job_id, cast(discord.Interaction[Any], command))
    monotonic[0] += 5.0

    async def withheld(*_: object, **__: object) -> None:
        """Its notices left out: only that the delivery ended matters here."""

    monkeypatch.setattr(results, "_withhold", withheld)
    await results.deliver(dataclasses.replace(job, withheld="its server left it out"))
    results.given_up(job.job_id, "its server left it out")
    await results.retract(job, 900)
    assert webhooks.deleted == [(APPLICATION, "tok", 900)]
    assert channels.deleted == []
