"""A /show or U1-U4 post made as its job's maker erased it (/forget-me): deleted at once and
settled, or left to /forget-me's sweep when Discord refuses the delete. Real SQLite."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import discord
import pytest

from bot.history import History, PostedMessage, StoredJob
from bot.policy.member_settings import MemberSettings
from cogs.results.buttons import link_post_again
from db import jobs as journal
from db.database import connect
from inference.types import RenderRequest

NOW = 1_800_000_000.0
MEMBER, GUILD, CHANNEL, OTHER_CHANNEL = 7, 11, 22, 33
JOB = "a" * 16


class Post:
    """The post just sent: its delete answers as Discord does (``refusal``, or done)."""

    def __init__(self, message_id: int, refusal: discord.HTTPException | None = None) -> None:
        self.id = message_id
        self._refusal = refusal
        self.deleted = 0

    async def delete(self) -> None:
        self.deleted += 1
        if self._refusal is not None:
            raise self._refusal


def refused(status: int) -> discord.HTTPException:
    answer = SimpleNamespace(status=status, reason="refused")
    return discord.HTTPException(cast(object, answer), "refused")  # type: ignore[arg-type]


async def shown(tmp_path: Path) -> tuple[History, StoredJob]:
    """A finished job in the history, as /show or U1 loads it before posting it again."""
    conn = await connect(tmp_path / "db.sqlite3")
    history = History(conn, tmp_path, tmp_path, MemberSettings(conn), clock=lambda: NOW)
    request = RenderRequest("a barn", seed=1, steps=2).to_json()
    await journal.insert_job(
        conn, journal.NewJob(JOB, "imagine", MEMBER, GUILD, CHANNEL, request, NOW)
    )
    await journal.mark_done(conn, JOB, [], 0.1, NOW)
    job = await history.job(JOB)
    assert job is not None
    return history, job


async def shown_then_erased(tmp_path: Path) -> tuple[History, StoredJob]:
    history, job = await shown(tmp_path)
    await history.forget(MEMBER)
    return history, job


async def test_a_post_of_an_erased_job_deleted_at_once_is_settled(tmp_path: Path) -> None:
    history, job = await shown_then_erased(tmp_path)
    post = Post(502)
    await link_post_again(history, job, OTHER_CHANNEL, cast(discord.Message, post))
    assert post.deleted == 1
    assert await history.pending_post_deletes() == ()  # the sweep asks nothing more


async def test_a_refused_delete_is_left_to_the_sweep(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    history, job = await shown_then_erased(tmp_path)
    post = Post(502, refused(503))
    with caplog.at_level(logging.WARNING):
        await link_post_again(history, job, OTHER_CHANNEL, cast(discord.Message, post))
    assert post.deleted == 1
    # Due again later (/forget-me's wait after a failure), not given up.
    assert await history.pending_post_deletes() == ()
    history._clock = lambda: NOW + 86_400
    assert await history.pending_post_deletes() == (PostedMessage(OTHER_CHANNEL, 502),)
    assert not any("given up" in line for line in caplog.messages)


async def test_a_post_of_a_job_still_there_is_linked_not_deleted(tmp_path: Path) -> None:
    history, job = await shown(tmp_path)
    post = Post(503)
    await link_post_again(history, job, OTHER_CHANNEL, cast(discord.Message, post))
    assert post.deleted == 0
    assert await history.posts_of(JOB) == (PostedMessage(OTHER_CHANNEL, 503),)
    assert await history.pending_post_deletes() == ()
