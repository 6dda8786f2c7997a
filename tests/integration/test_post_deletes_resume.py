"""/forget-me's deletes of the erased member's posts survive a stop: the erase leaves each post
to delete in the database (a real SQLite file), a stop while Discord holds the deletes leaves
them there, and the next start deletes them through the fake Discord, each once. A delete
Discord refused (a channel Easel cannot see) or failed (a 5xx) is tried again while the bot
runs, once due, until its last try; a post deleted, or given up, is no longer left. A result
posted while its maker's /forget-me erased the job is left to delete the same way: the sink's
own delete of it settles it, and one that failed is deleted by the sweep, after a restart too."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from pathlib import Path

import aiosqlite
import discord
import pytest

from bot.history import POST_DELETE_FIRST_WAIT_S, POST_DELETE_TRIES, History, PostedMessage
from bot.jobs.queue import JobQueue, Submission
from bot.jobs.retention import DAY_S
from bot.policy.guild import GuildPolicy
from bot.policy.member_settings import MemberSettings
from bot.policy.prompt_safety import PromptPlanner
from cogs.history import HistoryCog
from cogs.results.posting import DiscordResults
from db import jobs as journal
from db.database import connect
from inference.types import RenderRequest
from inference.worker import DeviceWorker
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.fake_discord.fixtures import running_bot
from tests.fake_discord.payloads import PERMISSION_VIEW_CHANNEL
from tests.support import polling
from tests.support.engines import InstantEngine

NOW = 1_800_000_000.0
MAKER = 7
DELETE_ROUTE = "/channels/{channel}/messages/{message}"
# Long enough that the stop comes while discord.py waits it out.
HELD_S = 60.0
WAIT_S = 10.0
until = functools.partial(polling.until, timeout_s=WAIT_S)
SWEEP_S = 0.01  # the sweep of deletes due again, as often as the test can count it


def bot_client() -> discord.Client:
    return discord.Client(intents=discord.Intents(guilds=True), guild_ready_timeout=0.05)


def history_of(
    conn: aiosqlite.Connection, tmp_path: Path, clock: Callable[[], float] = lambda: NOW
) -> History:
    return History(
        conn, tmp_path / "images", tmp_path / "inputs", MemberSettings(conn), clock=clock
    )


async def posted_job(
    conn: aiosqlite.Connection,
    fake: FakeDiscord,
    job_id: str,
    message_id: int,
    *,
    channel_id: int | None = None,
) -> None:
    """The maker's job, posted as ``message_id`` in ``channel_id`` (default: the first)."""
    channel_id = channel_id or fake.channel_id
    request = RenderRequest("a barn", seed=1, steps=2).to_json()
    await journal.insert_job(
        conn, journal.NewJob(job_id, "imagine", MAKER, fake.guild_id, channel_id, request, NOW)
    )
    await journal.mark_done(conn, job_id, [], 0.1, NOW)
    await journal.record_job_message(conn, job_id, message_id)


async def test_the_deletes_a_stop_left_are_done_at_the_next_start(
    fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    fake = fake_discord
    database = tmp_path / "easel.sqlite3"

    conn = await connect(database)
    try:
        async with running_bot(fake, bot_client()) as client:
            channel = client.get_partial_messageable(fake.channel_id)
            sent = [await channel.send(f"picture {n}") for n in range(3)]
            for n, message in enumerate(sent):
                await posted_job(conn, fake, f"{n:016x}", message.id)
            history = history_of(conn, tmp_path)
            cog = HistoryCog(history)
            forgotten = await history.forget(MAKER)
            await history.erasure_told(MAKER, forgotten.asked_at)  # the member's answer
            assert forgotten.posts == tuple(PostedMessage(fake.channel_id, m.id) for m in sent)

            async def tell(outcome: str) -> None:
                raise AssertionError(f"told {outcome!r} though the bot stopped")

            fake.rate_limit("DELETE", DELETE_ROUTE, retry_after=HELD_S)
            cog.delete_posts_later(client, forgotten.posts, tell)
            async with asyncio.timeout(WAIT_S):  # Discord holds the first delete
                while not fake.rate_limits:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            await cog.cog_unload()  # the bot stops (discord.py removes its cogs first)
            assert len(await history.pending_post_deletes()) == 3
    finally:
        await conn.close()
    assert not any(fake.messages[m.id].deleted for m in sent)

    conn = await connect(database)  # the next start
    try:
        async with running_bot(fake, bot_client()) as client:
            history = history_of(conn, tmp_path)
            settled = asyncio.Queue[PostedMessage]()
            record_settled = history.post_delete_settled

            async def settle(post: PostedMessage) -> None:
                await record_settled(post)
                settled.put_nowait(post)

            history.post_delete_settled = settle  # type: ignore[method-assign]
            cog = HistoryCog(history)
            cog.resume_forget_me(client)
            async with asyncio.timeout(WAIT_S):
                assert [await settled.get() for _ in sent] == list(forgotten.posts)
            await cog.cog_unload()
            assert await history.pending_post_deletes() == ()
    finally:
        await conn.close()
    deletes = [call for call in fake.calls_to("DELETE", DELETE_ROUTE) if call.status == 204]
    assert sorted(call.path.rsplit("/", 1)[1] for call in deletes) == sorted(
        str(m.id) for m in sent
    )
    # A new process does not know the 429 its predecessor was sent (Discord would answer it
    # with another, which discord.py waits out): the fake counts its first delete as early.
    assert [v.split(":")[0] for v in fake.take_violations()] == ["rate-limit-ignored"]


class Clock:
    """The history's time, moved by the test (``step``: this much later at each read)."""

    def __init__(self, step: float = 0.0) -> None:
        self.now = NOW
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def counting_sweeps(history: History) -> list[None]:
    """One entry per read of the deletes due (one per sweep, once the member's are done)."""
    sweeps: list[None] = []
    read = history.pending_post_deletes

    async def counted() -> tuple[PostedMessage, ...]:
        sweeps.append(None)
        return await read()

    history.pending_post_deletes = counted  # type: ignore[method-assign]
    return sweeps


def deletes_of(fake: FakeDiscord, message_id: int) -> list[int]:
    """The statuses Discord answered ``message_id``'s deletes with, in order."""
    calls = fake.calls_to("DELETE", DELETE_ROUTE)
    return [call.status for call in calls if call.path.endswith(f"/{message_id}")]


async def test_refused_and_failed_deletes_are_tried_again_while_the_bot_runs(
    fake_discord: FakeDiscord, conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    fake = fake_discord
    hidden = fake.add_text_channel("hidden")
    clock = Clock()
    async with running_bot(fake, bot_client()) as client:
        posted = [
            await client.get_partial_messageable(channel).send("a picture")
            for channel in (fake.channel_id, fake.channel_id, hidden)
        ]
        for n, message in enumerate(posted):
            await posted_job(conn, fake, f"{n:016x}", message.id, channel_id=message.channel.id)
        history = history_of(conn, tmp_path, clock)
        forgotten = await history.forget(MAKER)
        await history.erasure_told(MAKER, forgotten.asked_at)  # the member's answer
        fake.set_overwrite(hidden, fake.bot_user_id, deny=PERMISSION_VIEW_CHANNEL)
        fake.fail("DELETE", DELETE_ROUTE, times=1, status=503)  # the first post's delete
        told = asyncio.Queue[str]()
        cog = HistoryCog(history, pending_sweep_s=SWEEP_S)
        cog.delete_posts_later(client, forgotten.posts, told.put)
        async with asyncio.timeout(WAIT_S):
            outcome = await told.get()
        assert outcome == (
            "Removed 1 of 3 posted messages from channels. 2 stay for now (1 Discord failed "
            "to delete (DiscordServerError), 1 in a channel Easel cannot reach): Easel tries "
            "again over the next 5 days; a moderator of that server can delete them sooner."
        )
        assert [fake.messages[m.id].deleted for m in posted] == [False, True, False]

        sweeps = counting_sweeps(history)
        cog.resume_forget_me(client)
        await until(lambda: len(sweeps) >= 3)  # neither is due again yet: not asked
        assert len(fake.calls_to("DELETE", DELETE_ROUTE)) == 3
        fake.set_overwrite(hidden, fake.bot_user_id)  # Easel sees the channel again
        clock.now += POST_DELETE_FIRST_WAIT_S
        await until(lambda: all(fake.messages[m.id].deleted for m in posted))
        await cog.cog_unload()
    assert [deletes_of(fake, m.id) for m in posted] == [[503, 204], [204], [403, 204]]
    clock.now += 365 * DAY_S
    assert await history.pending_post_deletes() == ()


async def test_a_delete_refused_at_every_try_is_given_up_at_the_last_and_logged(
    fake_discord: FakeDiscord,
    conn: aiosqlite.Connection,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = fake_discord
    hidden = fake.add_text_channel("hidden")
    clock = Clock(step=2 * DAY_S)  # each try is due at the next sweep
    async with running_bot(fake, bot_client()) as client:
        message = await client.get_partial_messageable(hidden).send("a picture")
        await posted_job(conn, fake, "0" * 16, message.id, channel_id=hidden)
        history = history_of(conn, tmp_path, clock)
        forgotten = await history.forget(MAKER)
        await history.erasure_told(MAKER, forgotten.asked_at)  # the member's answer
        fake.set_overwrite(hidden, fake.bot_user_id, deny=PERMISSION_VIEW_CHANNEL)
        told = asyncio.Queue[str]()
        cog = HistoryCog(history, pending_sweep_s=SWEEP_S)
        cog.delete_posts_later(client, forgotten.posts, told.put)
        async with asyncio.timeout(WAIT_S):
            await told.get()
        sweeps = counting_sweeps(history)
        with caplog.at_level(logging.WARNING, logger="bot.history"):
            cog.resume_forget_me(client)
            # The member's try, then one a sweep, then sweeps with nothing left to try.
            await until(lambda: len(sweeps) >= POST_DELETE_TRIES + 2)
            await cog.cog_unload()
    assert deletes_of(fake, message.id) == [403] * POST_DELETE_TRIES
    assert [r.getMessage() for r in caplog.records if r.name == "bot.history"] == [
        f"/forget-me: message {message.id} stays in channel {hidden}: its delete failed "
        f"{POST_DELETE_TRIES} times, given up"
    ]
    assert await history.pending_post_deletes() == ()


def erased_as_posted(history: History) -> None:
    """The maker's /forget-me erases each job while its result is posted: between Discord's
    answer and its record (``History.result_posted``), so the queue asks the sink to retract
    it."""
    record = history.result_posted

    async def erased_first(
        job_id: str, guild_id: int | None, channel_id: int | None, message_id: int
    ) -> bool:
        forgotten = await history.forget(MAKER)
        await history.erasure_told(MAKER, forgotten.asked_at)  # the member's answer
        return await record(job_id, guild_id, channel_id, message_id)

    history.result_posted = erased_first  # type: ignore[method-assign]


async def erased_while_posted(
    fake: FakeDiscord,
    client: discord.Client,
    history: History,
    conn: aiosqlite.Connection,
    tmp_path: Path,
) -> StoredMessage:
    """A job rendered and delivered by the real queue and sink while its maker's /forget-me
    erases it (``erased_as_posted``): its result, once the sink's delete of it was tried."""
    erased_as_posted(history)
    results = DiscordResults(client)
    results.history = history
    results.guild_policy = GuildPolicy(conn, prompts=PromptPlanner(wildcards_dir=None))
    engine = InstantEngine()
    queue = JobQueue(conn, [DeviceWorker("cpu", lambda _: engine)], tmp_path / "images")
    queue.set_sink(results)
    await queue.start()
    try:
        request = RenderRequest("a barn", seed=1, steps=2)
        await queue.submit(Submission("imagine", request, MAKER, fake.guild_id, fake.channel_id))
        await until(lambda: bool(fake.calls_to("DELETE", DELETE_ROUTE)))
    finally:
        await queue.stop()
    [result] = [m for m in fake.messages.values() if m.channel_id == fake.channel_id]
    return result


async def test_an_erased_job_s_result_deleted_at_once_is_not_left_to_delete(
    fake_discord: FakeDiscord, conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    clock = Clock()
    async with running_bot(fake_discord, bot_client()) as client:
        history = history_of(conn, tmp_path, clock)
        result = await erased_while_posted(fake_discord, client, history, conn, tmp_path)
    assert result.deleted
    clock.now += 365 * DAY_S
    assert await history.pending_post_deletes() == ()  # no sweep deletes it again


async def test_an_erased_job_s_result_its_retract_failed_to_delete_is_deleted_at_the_next_start(
    fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    """The result posted while its maker's /forget-me erased the job: the sink's delete of it
    (``DiscordResults.retract``) fails, and it is left for /forget-me's sweep, which deletes
    it once due, after a restart too."""
    fake = fake_discord
    database = tmp_path / "easel.sqlite3"
    clock = Clock()
    conn = await connect(database)
    try:
        async with running_bot(fake, bot_client()) as client:
            history = history_of(conn, tmp_path, clock)
            fake.fail("DELETE", DELETE_ROUTE, times=1, status=503)
            result = await erased_while_posted(fake, client, history, conn, tmp_path)
            assert deletes_of(fake, result.id) == [503]
            assert not result.deleted
            assert await history.pending_post_deletes() == ()  # not due yet
    finally:
        await conn.close()

    conn = await connect(database)  # the next start, once its next try is due
    clock.now += POST_DELETE_FIRST_WAIT_S
    try:
        async with running_bot(fake, bot_client()) as client:
            history = history_of(conn, tmp_path, clock)
            cog = HistoryCog(history, pending_sweep_s=SWEEP_S)
            cog.resume_forget_me(client)
            await until(lambda: result.deleted)
            await cog.cog_unload()
            clock.now += 365 * DAY_S
            assert await history.pending_post_deletes() == ()
    finally:
        await conn.close()
    assert deletes_of(fake, result.id) == [503, 204]
