"""No server age-gates a direct message: a picture made under the server's age restriction
never goes to one (``cogs.results.copies.may_go_to_direct_messages``, the one rule behind DM
me, results by DM and a result delivered by DM)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import itertools
import logging
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import aiosqlite
import discord
import pytest
from multidict import CIMultiDict
from PIL import Image
from yarl import URL

from bot.history import StoredJob
from bot.jobs.queue import FinishedJob
from bot.policy.guild import GuildPolicy
from bot.policy.member_settings import MemberSettings
from bot.policy.moderation import NsfwPolicy, kept_in_age_restricted_channels
from bot.policy.prompt_safety import PromptPlanner
from bot.user_errors import Reason, UserError
from cogs import history as history_cog
from cogs import visibility
from cogs.history import check_may_show_here, checked_for_showing
from cogs.results import copies, story
from cogs.results.copies import (
    CHANNEL_UNCHECKED,
    MADE_AGE_RESTRICTED,
    may_go_to_direct_messages,
    why_kept_in_the_server,
)
from cogs.results.posting import DiscordResults
from inference.types import RenderRequest

GUILD, ADMIN = 100, 1
PLAIN, AGE_RESTRICTED, THREAD, THREAD_OF_AGE_RESTRICTED, GONE = 11, 12, 13, 14, 15


@pytest.mark.parametrize(
    ("made_age_restricted", "policy"), itertools.product([False, True], NsfwPolicy)
)
def test_only_pictures_made_outside_the_servers_age_restriction_leave_it(
    made_age_restricted: bool, policy: NsfwPolicy
) -> None:
    kept = kept_in_age_restricted_channels(
        made_age_restricted=made_age_restricted, nsfw_policy=policy
    )
    assert kept is (made_age_restricted or policy is NsfwPolicy.AGE_RESTRICTED_ONLY)


class Channel:
    def __init__(self, nsfw: bool) -> None:
        self.nsfw = nsfw

    def is_nsfw(self) -> bool:
        return self.nsfw


class FetchedThread(discord.Thread):
    """A thread as ``fetch_channel`` returns it before the cache is filled: its parent is
    unknown to it, so only ``parent_id`` can be read."""

    def __init__(self, parent_id: int) -> None:
        self.parent_id = parent_id


class Client:
    """discord.Client's cache (``cached``: the channels its guild holds, None: the guild is
    not cached: Easel left it, or, not ``ready``, the gateway has not described it yet) and
    Discord behind it (``on_discord``; ``named``: the guild's name, None: Discord does not
    answer for it)."""

    def __init__(
        self,
        cached: dict[int, object] | None,
        on_discord: dict[int, object],
        *,
        ready: bool = True,
        named: str | None = None,
    ) -> None:
        self.cached = cached
        self.on_discord = on_discord
        self.fetched: list[int] = []
        self.ready = ready
        self.named = named

    def is_ready(self) -> bool:
        return self.ready

    async def fetch_guild(self, guild_id: int) -> object:
        if guild_id != GUILD or self.named is None:
            response = SimpleNamespace(status=503, reason="Service Unavailable")
            raise discord.DiscordServerError(cast(Any, response), "down")
        return SimpleNamespace(name=self.named)

    def get_guild(self, guild_id: int) -> object | None:
        cached = self.cached
        if guild_id != GUILD or cached is None:
            return None
        return SimpleNamespace(
            get_channel_or_thread=cached.get, get_channel=cached.get, name="Barn", unavailable=False
        )

    async def fetch_channel(self, channel_id: int) -> object:
        self.fetched.append(channel_id)
        if channel_id not in self.on_discord:
            response = SimpleNamespace(status=404, reason="Not Found")
            raise discord.NotFound(cast(Any, response), {"code": 10003, "message": "Unknown"})
        return self.on_discord[channel_id]


ON_DISCORD: dict[int, object] = {
    PLAIN: Channel(False),
    AGE_RESTRICTED: Channel(True),
    THREAD: FetchedThread(PLAIN),
    THREAD_OF_AGE_RESTRICTED: FetchedThread(AGE_RESTRICTED),
}


async def policy_of(conn: aiosqlite.Connection, policy: NsfwPolicy) -> GuildPolicy:
    guild_policy = GuildPolicy(conn, prompts=PromptPlanner(wildcards_dir=None))
    await guild_policy.set_nsfw_policy(GUILD, ADMIN, policy)
    return guild_policy


async def may_go(
    conn: aiosqlite.Connection,
    client: Client,
    channel_id: int | None,
    policy: NsfwPolicy = NsfwPolicy.ALLOW,
    guild_id: int | None = GUILD,
    restricted_when_made: bool = False,
) -> bool:
    return await may_go_to_direct_messages(
        cast(discord.Client, client),
        await policy_of(conn, policy),
        guild_id,
        channel_id,
        restricted_when_made=restricted_when_made,
        thread_parent_id=None,
    )


async def why_kept(
    conn: aiosqlite.Connection, client: Client, channel_id: int, policy: NsfwPolicy
) -> str | None:
    return await why_kept_in_the_server(
        cast(discord.Client, client),
        await policy_of(conn, policy),
        GUILD,
        channel_id,
        restricted_when_made=False,
    )


async def test_the_channel_in_the_cache_and_the_servers_policy_decide(
    conn: aiosqlite.Connection,
) -> None:
    client = Client({PLAIN: Channel(False), AGE_RESTRICTED: Channel(True)}, ON_DISCORD)
    assert await may_go(conn, client, PLAIN)
    assert await may_go(conn, client, PLAIN, NsfwPolicy.SPOILER)
    assert not await may_go(conn, client, AGE_RESTRICTED)
    # Made before the server turned age_restricted_only on: kept in the server all the same.
    assert not await may_go(conn, client, PLAIN, NsfwPolicy.AGE_RESTRICTED_ONLY)
    # A job made in direct messages is there already, whatever any server says.
    assert await may_go(conn, client, None, NsfwPolicy.AGE_RESTRICTED_ONLY, guild_id=None)
    assert client.fetched == []


async def test_a_picture_made_under_an_age_restriction_keeps_it_once_its_channel_is_plain(
    conn: aiosqlite.Connection,
) -> None:
    """The job journals its channel's flag when it is made: a moderator who turns it off later
    frees none of its pictures (the channel is plain now, in the cache and on Discord), and
    Discord is not asked."""
    for client in (Client({PLAIN: Channel(False)}, ON_DISCORD), Client(None, ON_DISCORD)):
        assert not await may_go(conn, client, PLAIN, restricted_when_made=True)
        assert client.fetched == []


async def test_a_channel_the_cache_lacks_is_asked_of_discord(conn: aiosqlite.Connection) -> None:
    """A result delivered at start-up, before the gateway fills the cache; a thread's parent
    decides; a channel Discord does not show Easel (deleted, hidden) keeps the picture."""
    empty = Client(None, ON_DISCORD)
    assert await may_go(conn, empty, PLAIN)
    assert not await may_go(conn, empty, AGE_RESTRICTED)
    assert await may_go(conn, empty, THREAD)
    assert not await may_go(conn, empty, THREAD_OF_AGE_RESTRICTED)
    assert empty.fetched == [
        PLAIN,
        AGE_RESTRICTED,
        THREAD,
        PLAIN,
        THREAD_OF_AGE_RESTRICTED,
        AGE_RESTRICTED,
    ]
    assert not await may_go(conn, Client({}, ON_DISCORD), GONE)
    assert not await may_go(conn, Client({}, ON_DISCORD), None)


async def test_a_server_keeping_its_pictures_in_age_restricted_channels_is_not_asked_about_one(
    conn: aiosqlite.Connection,
) -> None:
    """Its policy decides: no channel is fetched (a call to Discord per delivery saved)."""
    empty = Client(None, ON_DISCORD)
    assert not await may_go(conn, empty, PLAIN, NsfwPolicy.AGE_RESTRICTED_ONLY)
    assert empty.fetched == []
    kept_because = await why_kept(conn, empty, PLAIN, NsfwPolicy.AGE_RESTRICTED_ONLY)
    assert kept_because == MADE_AGE_RESTRICTED and empty.fetched == []


async def test_an_archived_threads_parent_in_the_cache_is_not_asked_of_discord(
    conn: aiosqlite.Connection,
) -> None:
    """A thread the cache lacks (archived) is asked of Discord; its parent, cached, is not."""
    client = Client({PLAIN: Channel(False), AGE_RESTRICTED: Channel(True)}, ON_DISCORD)
    assert await may_go(conn, client, THREAD)
    assert not await may_go(conn, client, THREAD_OF_AGE_RESTRICTED)
    assert client.fetched == [THREAD, THREAD_OF_AGE_RESTRICTED]


class Unanswering(Client):
    """Discord does not answer (a 5xx, a dropped connection) when asked for a channel."""

    def __init__(self, error: Exception, cached: dict[int, object] | None = None) -> None:
        super().__init__(cached, ON_DISCORD)
        self.error = error

    async def fetch_channel(self, channel_id: int) -> object:
        self.fetched.append(channel_id)
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        discord.DiscordServerError(cast(Any, SimpleNamespace(status=503, reason="")), "down"),
        aiohttp.ServerDisconnectedError(),
    ],
)
async def test_a_channel_discord_does_not_answer_for_keeps_the_picture_and_says_so(
    conn: aiosqlite.Connection, error: Exception
) -> None:
    """Kept in the server to be safe, but logged as what it is: not an age restriction."""
    unanswering = Unanswering(error)
    assert await why_kept(conn, unanswering, PLAIN, NsfwPolicy.ALLOW) == CHANNEL_UNCHECKED
    assert unanswering.fetched == [PLAIN]


class Silent(Client):
    """Discord never answers when asked for a channel (a request hanging on)."""

    async def fetch_channel(self, channel_id: int) -> object:
        self.fetched.append(channel_id)
        await asyncio.Event().wait()
        raise AssertionError("never answered")


async def test_a_channel_discord_is_slow_to_answer_for_is_unchecked_not_waited_for(
    conn: aiosqlite.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(copies, "COPY_CHANNEL_FETCH_TIMEOUT_S", 0.05)
    silent = Silent(None, ON_DISCORD)
    async with asyncio.timeout(10):  # unbounded, it would wait for ever
        assert await why_kept(conn, silent, PLAIN, NsfwPolicy.ALLOW) == CHANNEL_UNCHECKED
    assert silent.fetched == [PLAIN]


class Slow(Client):
    """Discord answers a little after /show's wait for it (``CHANNEL_FETCH_TIMEOUT_S``)."""

    async def fetch_channel(self, channel_id: int) -> object:
        await asyncio.sleep(visibility.CHANNEL_FETCH_TIMEOUT_S * 1.1)
        return await super().fetch_channel(channel_id)


async def test_a_copys_check_waits_for_discord_longer_than_shows(
    conn: aiosqlite.Connection,
) -> None:
    """/show answers within Discord's 3 s, so it waits 1 s for a channel's answer; a copy
    for direct messages answers no interaction and waits longer, so a slow answer still
    sends it (timers fire in order: no race between the two waits)."""
    slow = Slow(None, ON_DISCORD)
    shown = visibility.made_age_restricted(
        cast(discord.Client, slow), GUILD, PLAIN, restricted_when_made=False
    )
    copied = why_kept(conn, slow, PLAIN, NsfwPolicy.ALLOW)
    async with asyncio.timeout(10):
        show_check, copy_check = await asyncio.gather(shown, copied, return_exceptions=True)
    assert isinstance(show_check, TimeoutError)
    assert copy_check is None


class DirectMessages:
    """The member's direct-message channel: what Easel sends there."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, object]]] = []

    async def send(self, content: str, **kwargs: object) -> object:
        self.sent.append((content, kwargs))
        return SimpleNamespace(id=len(self.sent))


@pytest.mark.parametrize(
    ("succeeded", "error", "told"),
    [
        (False, "cancelled", "was cancelled; `/history` there lists it."),
        (False, "The prompt 'a secret barn' is too long.", "failed; `/history` there lists it."),
    ],
)
async def test_a_job_kept_in_the_server_ends_with_a_notice_in_words_only(
    conn: aiosqlite.Connection, succeeded: bool, error: str, told: str
) -> None:
    """A private job whose token expired, in a server that keeps its pictures in
    age-restricted channels: the member learns by DM that it ended, with no prompt or reason."""
    direct = DirectMessages()
    client = SimpleNamespace(
        get_guild=lambda guild_id: SimpleNamespace(name="Barn *club*", unavailable=False),
        create_dm=lambda user: asyncio.sleep(0, direct),
        is_ready=lambda: True,
    )
    results = DiscordResults(cast(discord.Client, client))
    results.guild_policy = await policy_of(conn, NsfwPolicy.AGE_RESTRICTED_ONLY)
    # The result itself was posted nowhere.
    assert await results.deliver(finished(succeeded, error)) is None
    [(notice, sent_with)] = direct.sent
    assert notice == f"Your job `j1` in Barn \\*club\\* {told}"
    assert "files" not in sent_with and "secret" not in notice


def finished(succeeded: bool, error: str | None = None) -> FinishedJob:
    """A private job of the server's PLAIN channel whose token expired (delivered by DM)."""
    return FinishedJob(
        job_id="j1",
        kind="imagine",
        succeeded=succeeded,
        error=error,
        request=RenderRequest(prompt="a secret barn"),
        user_id=7,
        guild_id=GUILD,
        channel_id=PLAIN,
        application_id=None,
        interaction_token=None,
        interaction_created_at=None,
        images=(),
        private=True,
    )


@pytest.mark.parametrize(
    ("client", "channel_id", "told"),
    [
        # Made in an age-restricted channel: /show brings it back in one.
        (Client({AGE_RESTRICTED: Channel(True)}, {}), AGE_RESTRICTED, "in an age-restricted"),
        # Discord did not say what its channel is: no claim that it is age-restricted.
        (Unanswering(aiohttp.ServerDisconnectedError(), cached={}), PLAIN, "there"),
        # A server Easel is no longer in (its channels gone with it): none either.
        (Client(None, {}), PLAIN, "there"),
        # Before READY, the gateway has not described the server yet: its name is asked.
        (Client(None, {}, ready=False, named="Barn"), PLAIN, "there"),
        # ...and Discord did not answer: said so, not named.
        (Client(None, {}, ready=False), PLAIN, "there"),
    ],
    ids=["age-restricted", "unanswered-channel", "left", "before-ready", "before-ready-unnamed"],
)
async def test_a_ready_notice_names_an_age_restricted_channel_only_where_the_picture_is_kept(
    conn: aiosqlite.Connection, client: Client, channel_id: int, told: str
) -> None:
    direct = DirectMessages()
    client.create_dm = lambda user: asyncio.sleep(0, direct)  # type: ignore[attr-defined]
    results = DiscordResults(cast(discord.Client, client))
    results.guild_policy = await policy_of(conn, NsfwPolicy.ALLOW)
    picture = io.BytesIO()
    Image.new("RGB", (8, 8)).save(picture, format="PNG")
    job_id = "0123456789abcdef"  # a real one: its buttons are built before the notice
    job = dataclasses.replace(
        finished(succeeded=True), job_id=job_id, channel_id=channel_id, composed=picture.getvalue()
    )
    assert await results.deliver(job) is None
    [(notice, _)] = direct.sent
    server = {
        (True, True): "Barn",
        (False, True): "a server Easel is no longer in",
        (False, False): client.named or "a server Easel cannot name right now",
    }[client.cached is not None, client.ready]
    assert notice == f"Your job `{job_id}` in {server} is ready; `/show {job_id}` {told}" + (
        " channel of the server brings it back." if told != "there" else " brings it back."
    )


async def show_here(
    conn: aiosqlite.Connection,
    client: Client,
    made_in: int,
    checks: Callable[[discord.Interaction[Any], StoredJob], Awaitable[object]] = (
        check_may_show_here
    ),
    policy: GuildPolicy | None = None,
) -> None:
    """A member's private /show, in the server's ordinary PLAIN channel, of their job made
    in ``made_in``: /show's ``checks`` before it answers, by default the channel's."""
    client.services = SimpleNamespace(  # type: ignore[attr-defined]
        guild_policy=policy or await policy_of(conn, NsfwPolicy.ALLOW),
        member_settings=MemberSettings(conn),
    )
    interaction = SimpleNamespace(
        client=client,
        user=SimpleNamespace(id=7),
        permissions=discord.Permissions(use_application_commands=True),
        guild_id=GUILD,
        guild=client.get_guild(GUILD),
        channel_id=PLAIN,
        channel=Channel(False),
    )
    job = StoredJob(
        job_id="j1",
        user_id=7,
        guild_id=GUILD,
        private=True,
        spoiler=False,
        status="done",
        prompt="a barn",
        image_paths=[],
        seeds=[1],
        infotexts=[""],
        channel_id=made_in,
    )
    await checks(cast(discord.Interaction[Any], interaction), job)


async def test_show_asks_discord_about_a_channel_the_cache_lacks_as_direct_messages_do(
    conn: aiosqlite.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """An archived thread is not in the gateway's cache: its parent decides, as for a DM copy."""
    await show_here(conn, Client({}, ON_DISCORD), THREAD)
    with pytest.raises(UserError, match=r"^That picture comes from an age-restricted channel"):
        await show_here(conn, Client({}, ON_DISCORD), THREAD_OF_AGE_RESTRICTED)
    with pytest.raises(UserError, match=r"^That picture comes from an age-restricted channel"):
        await show_here(conn, Client({}, ON_DISCORD), GONE)
    unanswering = Unanswering(aiohttp.ServerDisconnectedError(), cached={})
    not_said = r"^Discord did not say whether the channel job `j1`"
    with (
        caplog.at_level(logging.WARNING, logger="cogs.visibility"),
        pytest.raises(UserError, match=not_said) as told,
    ):
        await show_here(conn, unanswering, THREAD)
    # Discord's failure, none of the member's: counted under its own reason, and logged.
    assert told.value.reason is Reason.DISCORD
    logged = [r.getMessage() for r in caplog.records if r.name == "cogs.visibility"]
    assert logged == [
        f"Discord failed to say what channel {THREAD} is (job j1, /show) "
        "(ServerDisconnectedError); the check failed closed"
    ]


@pytest.mark.parametrize(
    ("failed", "named"),
    [
        (
            aiohttp.ClientResponseError(
                aiohttp.RequestInfo(
                    URL("https://discord.com/api/v10/channels/1"),
                    "GET",
                    CIMultiDict({"Authorization": "Bot SECRET-TOKEN"}),
                    URL("https://discord.com/api/v10/channels/1"),
                ),
                (),
                status=503,
                message="Service Unavailable",
            ),
            "ClientResponseError, status 503",
        ),
        (
            discord.HTTPException(
                cast(Any, SimpleNamespace(status=500, reason="SECRET-BODY")),
                {"code": 0, "message": "SECRET-BODY"},
            ),
            "HTTPException, status 500, code 0",
        ),
    ],
)
def test_discord_s_failure_is_logged_without_its_request_or_answer(
    failed: BaseException, named: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An aiohttp error's ``repr`` holds the request's headers (``Authorization: Bot …``), an
    ``HTTPException``'s Discord's whole answer: the log names the failure's type, status and
    code only."""
    with caplog.at_level(logging.WARNING, logger="cogs.visibility"):
        visibility.log_discord_failed("what channel 1 is", failed)
    assert [r.getMessage() for r in caplog.records] == [
        f"Discord failed to say what channel 1 is ({named}); the check failed closed"
    ]


async def test_a_named_picture_whose_channel_discord_does_not_say_is_discords_refusal(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An upload named after a result, its channel's age restriction not answered: refused
    to try again, counted as Discord's failure (not the member's) and logged."""
    job = StoredJob("j1", 7, GUILD, False, False, "done", "a barn", [], [1], [""], THREAD)

    async def named(*_: object) -> tuple[StoredJob, int]:
        return job, 0

    async def unanswered(*_: object) -> None:
        raise aiohttp.ServerDisconnectedError()

    monkeypatch.setattr(story, "_named_job", named)
    monkeypatch.setattr(story, "check_stored_pictures_usable", unanswered)
    interaction = cast(discord.Interaction[Any], SimpleNamespace())
    with (
        caplog.at_level(logging.WARNING, logger="cogs.visibility"),
        pytest.raises(UserError, match=r"^Discord did not say whether the channel") as told,
    ):
        await story.check_named_picture(interaction, "easel-0123456789abcdef-0.png")
    assert told.value.reason is Reason.DISCORD
    logged = [r.getMessage() for r in caplog.records if r.name == "cogs.visibility"]
    assert [f"what channel {THREAD} is (job j1)" in message for message in logged] == [True]


TOOK_TOO_LONG = r"^Checking whether job `j1` may be shown here took"


class Answering(Client):
    """Discord answers what a channel is after ``delay_s``."""

    def __init__(self, delay_s: float) -> None:
        super().__init__({}, ON_DISCORD)
        self.delay_s = delay_s

    async def fetch_channel(self, channel_id: int) -> object:
        await asyncio.sleep(self.delay_s)
        return await super().fetch_channel(channel_id)


async def test_shows_checks_before_its_answer_share_one_budget(
    conn: aiosqlite.Connection, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The stored pictures' check and Discord's answer about the channel each come within
    their own waits, but not both within /show's budget: refused, to try again, and the wait
    that ran out logged (Discord's: not kept as the member's refusal; the stored check's
    alone: Easel busy)."""
    budget_s = 0.5
    monkeypatch.setattr(history_cog, "SHOW_CHECKS_BUDGET_S", budget_s)
    policy = await policy_of(conn, NsfwPolicy.ALLOW)
    stored_checks: list[str] = []

    async def slow_stored_check(
        guild_id: int | None, job_id: str, *_: object, **__: object
    ) -> None:
        stored_checks.append(job_id)
        await asyncio.sleep(budget_s * 0.8)

    async def refused(answering: Answering) -> tuple[Reason, str]:
        """/show refused for taking too long: its reason, and the one line logged."""
        caplog.clear()
        with (
            caplog.at_level(logging.WARNING, logger="cogs.history"),
            pytest.raises(UserError, match=TOOK_TOO_LONG) as told,
        ):
            async with asyncio.timeout(10):
                await show_here(conn, answering, PLAIN, checked_for_showing, policy)
        [logged] = [r.getMessage() for r in caplog.records if r.name == "cogs.history"]
        return told.value.reason, logged

    monkeypatch.setattr(policy, "check_reuse", slow_stored_check)
    reason, logged = await refused(Answering(budget_s / 2))
    assert stored_checks == ["j1"]
    assert reason is Reason.DISCORD  # not kept as the member's refusal
    assert "waiting on Discord or the database (whether it may be shown here)" in logged
    # The stored check alone past the budget: Easel's own wait, not Discord's.
    monkeypatch.setattr(policy, "check_reuse", lambda *_, **__: asyncio.sleep(budget_s * 2))
    reason, logged = await refused(Answering(0))
    assert reason is Reason.BUSY
    assert "waiting on the stored pictures' banned-word check" in logged
    # Quick ones: shown.
    monkeypatch.setattr(policy, "check_reuse", lambda *_, **__: asyncio.sleep(0))
    await show_here(conn, Answering(budget_s / 20), PLAIN, checked_for_showing, policy)
