"""Before posting again a result a try may have posted, the sink looks for the bot's own post
of the job (``cogs.results.earlier_posts``): among its recorded posts (its original response,
which a try's edit may have made the result), then in the channel since the latest try; a
picture named for the job, or a failure that opens with its maker's mention; in the history
never an interaction's response, another author's message, nor another member's failure that
quotes the job's id. Where the bot may not read the history, it says so and reads nothing."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import AsyncIterator, Sequence
from types import SimpleNamespace
from typing import Any, cast
from unittest import mock

import discord
import pytest

from bot.jobs.queue import FinishedJob
from bot.snowflakes import CLOCK_SLACK_S
from cogs.results.earlier_posts import MESSAGES_READ, earlier_post
from inference.types import RenderRequest

BOT, MAKER, OTHER = 1, 7, 8
JOB = "0123456789abcdef"


NOW = 1_800_000_000.0


def job(*, succeeded: bool, tried: float | None = NOW, posted: Sequence[int] = ()) -> FinishedJob:
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
    created_at: float = NOW,
) -> object:
    return SimpleNamespace(
        id=message_id,
        content=content,
        author=SimpleNamespace(id=author),
        attachments=[SimpleNamespace(filename=name) for name in files],
        type=kind,
        created_at=datetime.datetime.fromtimestamp(created_at, datetime.UTC),
    )


class Channel:
    """A channel whose history is ``messages``; it records each read."""

    id = 50  # the job's

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


def server_channel(permissions: discord.Permissions) -> mock.Mock:
    """The job's channel as discord.py describes it, where the bot has ``permissions``."""
    described = mock.Mock(spec=discord.TextChannel)
    described.permissions_for.return_value = permissions
    return described


READABLE = discord.Permissions(view_channel=True, read_message_history=True)


async def found(
    finished: FinishedJob,
    messages: Sequence[object],
    *,
    cached: object = None,
    fetched: object = None,
    described_when_ready: object = None,
    never_described: bool = False,
    left_server: bool = False,
) -> tuple[int | None, Channel]:
    """What ``earlier_post`` finds in ``messages``; ``cached``: the channel in the client's
    cache (None: not cached), ``fetched``: Discord's answer when it is asked for the channel
    (None: one where the bot may read the history); ``described_when_ready``: the server is
    not described yet (a channel fetched has no roles), and this channel is cached once the
    gateway describes it; ``never_described``: it is not, within the wait (an outage);
    ``left_server``: the client is ready and holds no such server (Easel was removed)."""
    channel = Channel(messages)
    server_known = described_when_ready is None and not never_described and not left_server
    if not server_known and fetched is None:  # in a server discord.py knows nothing of yet
        fetched = server_channel(READABLE)
        fetched.guild.me = None

    async def fetch_channel(_: int) -> object:
        return fetched or server_channel(READABLE)

    async def wait_for(event: str, *, check: Any, **bounded: float) -> object:
        nonlocal server_known, cached
        assert not left_server, "waited for a server Easel has left"
        assert event == "guild_available" and bounded["timeout"] > 0
        arrived = SimpleNamespace(id=5, unavailable=False)
        assert check(arrived)
        if never_described:
            raise TimeoutError
        server_known, cached = True, described_when_ready
        return arrived

    client = cast(
        discord.Client,
        SimpleNamespace(
            user=SimpleNamespace(id=BOT),
            get_guild=lambda _: SimpleNamespace(unavailable=False) if server_known else None,
            wait_for=wait_for,
            is_ready=lambda: left_server,
            get_channel=lambda _: cached,
            fetch_channel=fetch_channel,
        ),
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
    cached = server_channel(discord.Permissions(view_channel=True))
    posted, channel = await found(job(succeeded=True, posted=[3]), [], cached=cached)
    # Discord would answer the history read with no messages, not a refusal: read, it would
    # look like none. A recorded post is fetched (Discord refuses it rather than hide it).
    assert posted is None and channel.reads == [] and channel.fetched == [3]
    assert "cannot be looked for" in caplog.text and "Read Message History" in caplog.text


async def test_a_recorded_post_is_found_before_the_server_is_described() -> None:
    """A start's replay runs before the gateway describes the server: its recorded posts are
    fetched by id all the same (Discord refuses one the bot may not read, never hides it)."""
    its_post = message(3, f"**a barn** — <@{MAKER}>", files=[f"easel-{JOB}.png"])
    described = server_channel(READABLE)
    posted, channel = await found(
        job(succeeded=True, posted=[3]), [its_post], described_when_ready=described
    )
    assert posted == 3 and channel.reads == []


async def test_the_history_is_read_once_the_server_is_described() -> None:
    its_post = message(4, f"**a barn** — <@{MAKER}>", files=[f"easel-{JOB}.png"])
    described = server_channel(READABLE)
    posted, channel = await found(
        job(succeeded=True, posted=[3]), [its_post], described_when_ready=described
    )
    assert posted == 4 and channel.fetched == [3] and len(channel.reads) == 1
    described.permissions_for.assert_called_once()


async def test_a_channel_whose_server_roles_cannot_be_known_is_not_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Fetched (not cached), in a server the gateway does not describe within the wait (an
    outage): the bot cannot know whether it may read the history, so it reads nothing and
    says so."""
    posted, channel = await found(job(succeeded=True), [], never_described=True)
    assert posted is None and channel.reads == []
    assert (
        "cannot be looked for" in caplog.text and "roles in the server are not known" in caplog.text
    )


async def test_a_server_easel_has_left_is_not_waited_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Once ready, discord.py holds every server Easel is in: one it does not hold was left,
    and no gateway event will describe it, so the delivery does not wait for one."""
    posted, channel = await found(job(succeeded=True), [], left_server=True)
    assert posted is None and channel.reads == []
    assert "cannot be looked for" in caplog.text and "not in that server" in caplog.text


async def test_the_history_is_read_from_the_end_and_past_a_page_from_the_latest_try() -> None:
    """An older try's post (a later try failed before it looked) is after the job's end; a
    full page from there is followed by one from the latest try, on from where it ended."""
    finished = dataclasses.replace(job(succeeded=True, tried=NOW + 3600), finished_at=NOW)
    page = [message(n, "chatter", author=OTHER, created_at=NOW + n) for n in range(MESSAGES_READ)]
    posted, channel = await found(finished, page)
    assert posted is None
    first, second = channel.reads
    assert first["after"] == datetime.datetime.fromtimestamp(NOW - CLOCK_SLACK_S, datetime.UTC)
    assert second["after"] == datetime.datetime.fromtimestamp(
        NOW + 3600 - CLOCK_SLACK_S, datetime.UTC
    )
    quiet, channel = await found(finished, page[:5])
    assert quiet is None and len(channel.reads) == 1  # read up to now
