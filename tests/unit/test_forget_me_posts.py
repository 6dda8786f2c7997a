"""/forget-me deletes Easel's posts of the erased jobs from Discord after its answer
(``cogs.history.delete_posts``): one call each, what is gone already is done, a channel Easel
can no longer see or an archived thread keeps the rest of its posts for this try, the member
is told the outcome, and a stop ends the deletes (or, once stopping, starts none)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from types import SimpleNamespace
from typing import Any, cast

import discord
import pytest

from bot.history import History, PostedMessage
from cogs.history import (
    ARCHIVED_THREAD,
    UNREACHABLE,
    HistoryCog,
    PostsOutcome,
    delete_posts,
    outcome_text,
)

_ANSWER = cast(Any, SimpleNamespace(status=0, reason=""))
GONE = discord.NotFound(_ANSWER, "Unknown Message")
REFUSED = discord.Forbidden(_ANSWER, "Missing Access")
DOWN = discord.DiscordServerError(_ANSWER, "down")
ARCHIVED = discord.HTTPException(
    cast(Any, SimpleNamespace(status=400, reason="Bad Request")),
    {"code": 50083, "message": "Thread is archived"},
)


class Discord:
    """discord.Client's partial messages over Discord's answers to their deletes: by id, the
    error raised (none: deleted), or none ever (``hangs_on``)."""

    def __init__(self, answers: dict[int, Exception], hangs_on: int | None = None) -> None:
        self.answers = answers
        self.hangs_on = hangs_on
        self.deleted: list[int] = []  # asked, in order
        self.hanging = asyncio.Event()

    def get_partial_messageable(self, channel_id: int) -> object:
        return SimpleNamespace(get_partial_message=self._message)

    def _message(self, message_id: int) -> object:
        async def delete() -> None:
            self.deleted.append(message_id)
            if message_id in self.answers:
                raise self.answers[message_id]
            if message_id == self.hangs_on:
                self.hanging.set()
                await asyncio.Event().wait()

        return SimpleNamespace(delete=delete)


def posts(*places: tuple[int, int]) -> list[PostedMessage]:
    return [PostedMessage(channel, message) for channel, message in places]


async def recorded(post: PostedMessage) -> bool:
    """What the database records of a delete done or failed
    (tests/integration/test_post_deletes_resume)."""
    return True


# Its deletes' records: none (see ``recorded``).
HISTORY = cast(History, SimpleNamespace(post_delete_settled=recorded, post_delete_failed=recorded))


async def test_gone_is_done_a_refusing_channel_keeps_the_rest_a_failure_keeps_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    discord_ = Discord({11: GONE, 20: REFUSED, 30: DOWN, 40: ARCHIVED})
    with caplog.at_level(logging.WARNING, logger="cogs.history"):
        outcome = await delete_posts(
            cast(discord.Client, discord_),
            posts((1, 10), (1, 11), (2, 20), (2, 21), (3, 30), (3, 31), (4, 40), (4, 41)),
            HISTORY,
        )
    # None of channel 2 after its refusal, nor of the archived thread 4 (never unarchived).
    assert discord_.deleted == [10, 11, 20, 30, 31, 40]
    assert outcome.removed == 3
    assert caplog.messages == [
        "posts to delete: 5 of 8 posted message(s) stay (2: in a channel Easel cannot reach, "
        "1: Discord failed to delete (DiscordServerError), 2: in an archived thread)"
    ]


def test_the_outcome_says_what_stayed_why_when_it_is_tried_again_and_who_can_delete_it() -> None:
    kept = Counter({UNREACHABLE: 2, ARCHIVED_THREAD: 3})
    assert outcome_text(PostsOutcome(asked=9, kept=kept)) == (
        "Removed 4 of 9 posted messages from channels. 5 stay for now (3 in an archived "
        "thread, 2 in a channel Easel cannot reach): Easel tries again over the next 5 days; a "
        "moderator of that server can delete them sooner."
    )
    assert outcome_text(PostsOutcome(asked=2, kept=Counter())) == (
        "Removed 2 of 2 posted messages from channels."
    )


async def test_the_member_is_told_the_outcome_once_the_deletes_end() -> None:
    discord_ = Discord({21: ARCHIVED})
    cog = HistoryCog(HISTORY)
    told: list[str] = []
    ended = asyncio.Event()

    async def tell(outcome: str) -> None:
        told.append(outcome)
        ended.set()

    cog.delete_posts_later(cast(discord.Client, discord_), posts((1, 10), (2, 21)), tell)
    async with asyncio.timeout(10):
        await ended.wait()
    assert told == [
        "Removed 1 of 2 posted messages from channels. 1 stays for now (1 in an archived "
        "thread): Easel tries again over the next 5 days; a moderator of that server can "
        "delete it sooner."
    ]


async def test_a_stop_ends_the_deletes_and_says_how_many_stay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    discord_ = Discord({}, hangs_on=11)
    cog = HistoryCog(HISTORY)
    told: list[str] = []

    async def tell(outcome: str) -> None:
        told.append(outcome)

    with caplog.at_level(logging.WARNING, logger="cogs.history"):
        cog.delete_posts_later(
            cast(discord.Client, discord_), posts((1, 10), (1, 11), (1, 12)), tell
        )
        async with asyncio.timeout(10):
            await discord_.hanging.wait()
            await cog.cog_unload()
        # A /forget-me that ends once the bot is stopping starts no deletes.
        cog.delete_posts_later(cast(discord.Client, discord_), posts((1, 13)), tell)
    assert discord_.deleted == [10, 11]
    assert told == []
    assert caplog.messages == [
        "posts to delete: 2 of 3 posted message(s) stay (2: not deleted before the bot stopped)",
        "posts to delete: 1 of 1 posted message(s) stay (1: not deleted before the bot stopped)",
    ]
