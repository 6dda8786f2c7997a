"""Before posting again a result a try may have posted, the sink looks for the bot's own post
of the job (``cogs.results.earlier_posts``): among its recorded posts (its original response,
which a try's edit may have made the result), then in the channel since the latest try; a
picture named for the job, or a failure that opens with its maker's mention; in the history
never an interaction's response, another author's message, nor another member's failure that
quotes the job's id. Where the bot may not read the history, it says so and reads nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from types import SimpleNamespace
from typing import Any, cast
from unittest import mock

import discord
import pytest

from bot.jobs.queue import FinishedJob
from cogs.results.earlier_posts import MESSAGES_READ, earlier_post
from inference.types import RenderRequest

BOT, MAKER, OTHER = 1, 7, 8
JOB = "0123456789abcdef"


def job(
    *, succeeded: bool, tried: float | None = 1_800_000_000.0, posted: Sequence[int] = ()
) -> FinishedJob:
    return FinishedJob(
        job_id=JOB,
        kind="imagine",
        succeeded=succeeded,
        error=None if succeeded else "the model is missing",
        request=RenderRequest(prompt="a barn"),
        user_id=MAKER,
        guild_id=5,
        channel_id=50,
        application_id=None,
        interaction_token=None,
        interaction_created_at=None,
        images=(),
        post_attempted_at=tried,
        posted_ids=tuple(posted),
    )


def message(
    message_id: int,
    content: str,
    *,
    author: int = BOT,
    files: Sequence[str] = (),
    kind: discord.MessageType = discord.MessageType.default,
) -> object:
    return SimpleNamespace(
        id=message_id,
        content=content,
        author=SimpleNamespace(id=author),
        attachments=[SimpleNamespace(filename=name) for name in files],
        type=kind,
    )


class Channel:
    """A channel whose history is ``messages``; it records each read."""

    def __init__(self, messages: Sequence[object]) -> None:
        self.messages = messages
        self.reads: list[dict[str, Any]] = []
        self.fetched: list[int] = []

    async def fetch_message(self, message_id: int) -> object:
        self.fetched.append(message_id)
        for each in self.messages:
            if getattr(each, "id", None) == message_id:
                return each
        response = SimpleNamespace(status=404, reason="Not Found")
        raise discord.NotFound(response, {"code": 10008, "message": "Unknown Message"})

    def history(self, **options: Any) -> AsyncIterator[object]:
        self.reads.append(options)

        async def read() -> AsyncIterator[object]:
            for each in self.messages:
                yield each

        return read()


async def found(
    finished: FinishedJob, messages: Sequence[object], *, cached: object = None
) -> tuple[int | None, Channel]:
    """What ``earlier_post`` finds in ``messages``; ``cached``: the channel in the client's
    cache (None: not cached)."""
    channel = Channel(messages)
    client = cast(
        discord.Client,
        SimpleNamespace(user=SimpleNamespace(id=BOT), get_channel=lambda _: cached),
    )
    return await earlier_post(client, cast(discord.abc.Messageable, channel), finished), channel


@pytest.mark.parametrize("spoiler", ["", "SPOILER_"])
async def test_a_picture_named_for_the_job_is_its_post(spoiler: str) -> None:
    posted, channel = await found(
        job(succeeded=True),
        [
            message(1, f"**a barn** — <@{MAKER}> (job `{JOB}`)", author=OTHER, files=["x.png"]),
            message(2, f"/show of job `{JOB}`", files=[f"easel-{JOB}-0.png"]),
            message(
                3,
                "thinking",
                files=[f"easel-{JOB}.png"],
                kind=discord.MessageType.chat_input_command,
            ),
            message(4, f"**a barn** — <@{MAKER}>", files=[f"{spoiler}easel-{JOB}.png"]),
        ],
    )
    assert posted == 4
    [read] = channel.reads
    assert read["limit"] == MESSAGES_READ and read["oldest_first"]


async def test_a_failure_is_found_by_its_makers_mention_not_by_a_quoted_id() -> None:
    quoted = f"<@{OTHER}> ❌ bad prompt: (job `{JOB}`) (job `fedcba9876543210`)"
    own = f"<@{MAKER}> ❌ the model is missing (job `{JOB}`)"
    assert (await found(job(succeeded=False), [message(1, quoted)]))[0] is None
    assert (await found(job(succeeded=False), [message(1, quoted), message(2, own)]))[0] == 2


async def test_a_first_try_reads_nothing() -> None:
    posted, channel = await found(job(succeeded=True, tried=None), [])
    assert posted is None and channel.reads == []


async def test_the_original_response_an_edit_made_the_result_is_its_post() -> None:
    response = message(
        3,
        f"**a barn** — <@{MAKER}>",
        files=[f"easel-{JOB}.png"],
        kind=discord.MessageType.chat_input_command,
    )
    # The first recorded post is gone (deleted); the second is the response.
    posted, channel = await found(job(succeeded=True, posted=[2, 3]), [response])
    assert posted == 3 and channel.fetched == [2, 3] and channel.reads == []


async def test_a_recorded_post_still_showing_progress_is_not_its_post() -> None:
    progress = message(
        3,
        "⏳ Queued — position 2.",
        files=["preview.jpg"],
        kind=discord.MessageType.chat_input_command,
    )
    posted, channel = await found(job(succeeded=True, posted=[3]), [progress])
    assert posted is None and len(channel.reads) == 1


async def test_a_channel_whose_history_the_bot_may_not_read_is_not_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cached = mock.Mock(spec=discord.TextChannel)
    cached.permissions_for.return_value = discord.Permissions(view_channel=True)
    posted, channel = await found(job(succeeded=True, posted=[3]), [], cached=cached)
    # Discord would answer no messages, not a refusal: read, it would look like none.
    assert posted is None and channel.reads == [] and channel.fetched == []
    assert "cannot be looked for" in caplog.text and "Read Message History" in caplog.text
