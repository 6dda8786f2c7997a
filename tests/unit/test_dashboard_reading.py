"""How often the dashboard asks Discord what its admin may do and read (``Dashboard._rights``):
once per window, and once per channel first seen within it, whatever the number of polls, and
per admin; rights lost end the session at the next window."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import Callable, Collection
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import discord
import pytest

import cogs.admin as admin_cog
import cogs.visibility as visibility
from bot.policy.visibility import RecentThreadMembers
from bot.web.dashboard import (
    READING_RIGHTS_S,
    AdminRights,
    Dashboard,
    DashboardSession,
    ServerAdmins,
)
from bot.web.links import LinkRefused, LinkSigner
from cogs.admin import UNANSWERED_KEPT_S, DiscordServerAdmins
from tests.fake_discord.payloads import text_channel_payload, thread_payload

GUILD, ADMIN, OTHER_ADMIN = 1, 2, 3
MANAGES = discord.Permissions(manage_guild=True)


class CountingAdmins:
    """Discord's answers: ``ADMIN`` reads even channel ids, others nothing; every ask kept."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, set[int]]] = []
        self.windows: list[tuple[int, set[int], bool]] = []  # with ``within_window``
        self.refusal: str | None = None
        self.discord_failed = False

    def name_of(self, guild_id: int) -> str:
        return "server"

    async def rights(
        self,
        guild_id: int,
        user_id: int,
        channel_ids: Collection[int],
        *,
        within_window: bool = False,
    ) -> AdminRights:
        self.asked.append((user_id, set(channel_ids)))
        self.windows.append((user_id, set(channel_ids), within_window))
        readable = {c for c in channel_ids if user_id == ADMIN and c % 2 == 0}
        return AdminRights(self.refusal, frozenset(readable), discord_failed=self.discord_failed)


def dashboard(tmp_path: Path, admins: ServerAdmins, now: list[float]) -> Dashboard:
    signer = LinkSigner(b"k" * 32, tmp_path, clock=lambda: now[0])
    # _rights needs neither the database, the queue nor the settings.
    return Dashboard(
        signer, "http://easel", cast(Any, None), cast(Any, None), admins, cast(Any, None), tmp_path
    )


async def readable(site: Dashboard, session: DashboardSession, channels: set[int]) -> set[int]:
    return (await site._rights(session, channels)).shown(channels)


async def test_rights_are_asked_once_per_channel_and_window(tmp_path: Path) -> None:
    admins, now = CountingAdmins(), [1000.0]
    site = dashboard(tmp_path, admins, now)
    session = DashboardSession(ADMIN, GUILD, 10_000, "nonce")
    for _ in range(3):  # polls
        assert await readable(site, session, {10, 11}) == {10}
    assert await readable(site, session, {10, 11, 12}) == {10, 12}  # a new channel: alone
    now[0] += READING_RIGHTS_S - 1
    assert await readable(site, session, {10}) == {10}
    assert admins.asked == [(ADMIN, {10, 11}), (ADMIN, {12})]
    now[0] += 1  # the window is over: everything is asked again
    assert await readable(site, session, {10, 11, 12}) == {10, 12}
    assert admins.asked[-1] == (ADMIN, {10, 11, 12})


async def test_each_admin_has_their_own_rights(tmp_path: Path) -> None:
    admins, now = CountingAdmins(), [1000.0]
    site = dashboard(tmp_path, admins, now)
    assert await readable(site, DashboardSession(ADMIN, GUILD, 10_000, "nonce"), {10}) == {10}
    assert (
        await readable(site, DashboardSession(OTHER_ADMIN, GUILD, 10_000, "nonce"), {10}) == set()
    )
    assert [user for user, _ in admins.asked] == [ADMIN, OTHER_ADMIN]


async def test_rights_lost_end_the_session_at_the_next_window(tmp_path: Path) -> None:
    admins, now = CountingAdmins(), [1000.0]
    site = dashboard(tmp_path, admins, now)
    session = DashboardSession(ADMIN, GUILD, 10_000, "nonce")
    assert await readable(site, session, set()) == set()  # asked, with no channel at all
    admins.refusal = "You are no longer a member of that server."
    assert await readable(site, session, set()) == set()  # within the window: as it was
    now[0] += READING_RIGHTS_S
    with pytest.raises(LinkRefused, match="no longer a member"):
        await site._rights(session, set())
    assert admins.asked == [(ADMIN, set()), (ADMIN, set())]


async def test_a_channel_discord_did_not_answer_about_is_asked_again_at_the_next_poll(
    tmp_path: Path,
) -> None:
    """Not readable meanwhile, and said so (not "a channel you cannot read"); asked again at
    the next poll, not only at the next window. One Discord hides from Easel is said so too."""
    admins, now = CountingAdmins(), [1000.0]
    unanswered: set[int] = {12}

    async def rights(
        guild_id: int, user_id: int, channel_ids: Collection[int], *, within_window: bool = False
    ) -> AdminRights:
        admins.asked.append((user_id, set(channel_ids)))
        answered = set(channel_ids) - unanswered
        return AdminRights(
            None,
            frozenset(c for c in answered if c in (10, 12)),
            hidden_from_easel=frozenset(c for c in answered if c == 14),
            unanswered=frozenset(set(channel_ids) & unanswered),
        )

    admins.rights = rights  # type: ignore[method-assign]
    site = dashboard(tmp_path, admins, now)
    session = DashboardSession(ADMIN, GUILD, 10_000, "nonce")
    asked = await site._rights(session, {10, 12, 14})
    assert asked.shown({10, 12, 14}) == {10}
    assert [asked.unread_because(c) for c in (10, 12, 14)] == [None, "discord", "easel"]
    unanswered.clear()  # Discord answers again
    asked = await site._rights(session, {10, 12, 14})
    assert asked.shown({10, 12, 14}) == {10, 12} and asked.unread_because(12) is None
    assert admins.asked == [(ADMIN, {10, 12, 14}), (ADMIN, {12})]
    assert await readable(site, session, {10, 12, 14}) == {10, 12}
    assert len(admins.asked) == 2  # all answered: nothing more within the window


def http_error(kind: type[discord.HTTPException], status: int) -> discord.HTTPException:
    return kind(cast(Any, SimpleNamespace(status=status, reason="")), "")


@pytest.mark.parametrize(
    ("answer", "refusal"),
    [
        (discord.Permissions(manage_guild=True), None),
        (discord.Permissions(administrator=True), None),
        (discord.Permissions(manage_messages=True), "no longer have the Manage Server"),
        (http_error(discord.NotFound, 404), "no longer a member"),  # kicked or banned
        (http_error(discord.DiscordServerError, 503), "Discord did not answer"),
    ],
    ids=["manager", "administrator", "demoted", "gone", "outage"],
)
async def test_discord_says_whether_the_admin_still_manages_the_server(
    answer: discord.Permissions | Exception, refusal: str | None
) -> None:
    readable = discord.Permissions(view_channel=True, read_message_history=True)
    channels = {
        10: SimpleNamespace(id=10, permissions_for=lambda member: readable, is_nsfw=lambda: True),
        12: SimpleNamespace(id=12, permissions_for=lambda member: readable, is_nsfw=lambda: False),
    }

    async def fetch_member(user_id: int) -> object:
        if isinstance(answer, Exception):
            raise answer
        return SimpleNamespace(id=user_id, guild_permissions=answer)

    async def fetch_channel(channel_id: int) -> object:
        raise http_error(discord.NotFound, 404)  # 14: deleted

    guild = SimpleNamespace(id=GUILD, get_channel_or_thread=channels.get, fetch_member=fetch_member)
    client = cast(
        discord.Client,
        SimpleNamespace(get_guild=lambda guild_id: guild, fetch_channel=fetch_channel),
    )
    rights = await DiscordServerAdmins(client, RecentThreadMembers(ttl_s=30.0)).rights(
        GUILD, ADMIN, [10, 12, 14]
    )
    if refusal is None:
        assert rights == AdminRights(None, frozenset({10, 12}), frozenset({10}))
    else:
        assert rights.refusal is not None and refusal in rights.refusal
        assert not rights.readable


async def test_channels_the_cache_lacks_are_asked_of_discord_once_for_every_window() -> None:
    """A deleted channel (404) and one Discord hides from Easel (403) are asked once in
    ``LOOKED_UP_KEPT_S``, not at each window of each admin; one Discord did not answer about
    is said to be so, and asked again once ``UNANSWERED_KEPT_S`` passed, whoever asks."""
    asked: list[int] = []
    answers: dict[int, Exception] = {
        14: http_error(discord.NotFound, 404),
        16: http_error(discord.Forbidden, 403),
        18: http_error(discord.DiscordServerError, 503),
    }

    async def fetch_channel(channel_id: int) -> object:
        asked.append(channel_id)
        raise answers[channel_id]

    guild = uncached_guild(lambda user_id: None)
    client = cast(
        discord.Client,
        SimpleNamespace(get_guild=lambda guild_id: guild, fetch_channel=fetch_channel),
    )
    now = [1000.0]
    admins = DiscordServerAdmins(client, RecentThreadMembers(ttl_s=30.0), clock=lambda: now[0])
    for user_id in (ADMIN, OTHER_ADMIN, ADMIN):  # windows of two admins
        rights = await admins.rights(GUILD, user_id, [14, 16, 18])
        assert rights == AdminRights(
            None, hidden_from_easel=frozenset({16}), unanswered=frozenset({18})
        )
        now[0] += UNANSWERED_KEPT_S / 2
    assert sorted(asked) == [14, 16, 18, 18]


def uncached_guild(fetched: Callable[[int], None]) -> Any:
    """A server whose cache holds no channel; its admins manage it (each fetch told)."""
    guild = SimpleNamespace(id=GUILD, get_channel_or_thread=lambda channel_id: None)

    async def fetch_member(user_id: int) -> object:
        fetched(user_id)
        return SimpleNamespace(id=user_id, guild_permissions=MANAGES, guild=guild)

    guild.fetch_member = fetch_member
    return guild


async def test_an_outage_asks_discord_a_few_channels_at_a_time_and_once_per_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Many archived threads while Discord is slow (review R_L1: every 3 s poll asked all of
    them at once, and the admin again, and logged each): no more than
    ``ASKED_AT_ONCE_PER_SERVER`` in flight, the newest first, and no more queued than a poll
    can see answered (review R_FL1: all of them were queued at once), each once in the window
    whatever the polls, the admin asked once, one log line each; a poll waits
    ``ANSWERS_WAITED_S`` at most, and what comes later is kept."""
    monkeypatch.setattr(visibility, "CHANNEL_FETCH_TIMEOUT_S", 0.1)
    monkeypatch.setattr(admin_cog, "ANSWERS_WAITED_S", 0.2)
    threads = set(range(100, 160))
    calls = {"in_flight": 0, "most_in_flight": 0}
    fetched: list[int] = []
    members: list[int] = []

    async def fetch_channel(channel_id: int) -> object:
        fetched.append(channel_id)
        calls["in_flight"] += 1
        calls["most_in_flight"] = max(calls["most_in_flight"], calls["in_flight"])
        try:
            await asyncio.sleep(1.0)  # past the timeout
        finally:
            calls["in_flight"] -= 1
        raise AssertionError("timed out before")

    guild = uncached_guild(members.append)
    client = SimpleNamespace(get_guild=lambda guild_id: guild, fetch_channel=fetch_channel)
    admins = DiscordServerAdmins(cast(discord.Client, client), RecentThreadMembers(ttl_s=30.0))
    now = [1000.0]
    site = dashboard(tmp_path, admins, now)
    session = DashboardSession(ADMIN, GUILD, 10_000, "nonce")

    def logged() -> list[str]:
        return [r.getMessage() for r in caplog.records if "the dashboard" in r.getMessage()]

    async def lookups_ended() -> None:  # those cut off by the polls' wait end in the background
        seen = None
        for _ in range(100):
            now_seen = (calls["in_flight"], len(fetched), len(logged()))
            if now_seen == seen and now_seen[0] == 0 and now_seen[1] == now_seen[2]:
                return  # none in flight, each ended (logged), nor any begun since the last look
            seen = now_seen
            await asyncio.sleep(0.05)

    for poll in range(5):  # five polls, 3 s apart: one window
        began = time.monotonic()
        asked = await site._rights(session, threads)
        assert time.monotonic() - began < 0.6  # not the 1 s all 60 take, a few at a time
        assert asked.shown(threads) == set() and asked.unanswered == threads
        if poll == 0:  # the newest first, no more than a poll sees answered (at R_FL1: all)
            await lookups_ended()
            assert len(fetched) == admin_cog.QUEUED_PER_SERVER < len(threads)
            assert fetched == sorted(threads, reverse=True)[: len(fetched)]
        now[0] += 3
    assert now[0] - 1000 <= READING_RIGHTS_S
    await lookups_ended()
    assert len(fetched) == len(set(fetched))  # each once; at R_L1: 5 times as many
    assert 0 < calls["most_in_flight"] <= admin_cog.ASKED_AT_ONCE_PER_SERVER
    assert members == [ADMIN]  # at HEAD of R_L1: once a poll
    assert len(logged()) == len(fetched)  # once each in the window, not at each poll


async def test_a_failed_ask_mid_window_leaves_the_page_as_it_was(tmp_path: Path) -> None:
    """A channel first seen mid-window is asked with the admin as asked at the window's start
    (review R_L1: a blip fetching them again ended the page); at the next window the admin is
    asked again, and a failure then still ends it."""
    members: list[int] = []
    failing = [False]
    guild = uncached_guild(members.append)
    plain_fetch_member = guild.fetch_member

    async def fetch_member(user_id: int) -> object:
        if failing[0]:
            raise http_error(discord.DiscordServerError, 503)
        return await plain_fetch_member(user_id)

    guild.fetch_member = fetch_member
    reads = discord.Permissions(view_channel=True, read_message_history=True)
    channels = {
        c: SimpleNamespace(id=c, permissions_for=lambda member: reads, is_nsfw=lambda: False)
        for c in (10, 12)
    }
    guild.get_channel_or_thread = channels.get
    client = SimpleNamespace(get_guild=lambda guild_id: guild)
    admins = DiscordServerAdmins(cast(discord.Client, client), RecentThreadMembers(ttl_s=30.0))
    now = [1000.0]
    site = dashboard(tmp_path, admins, now)
    session = DashboardSession(ADMIN, GUILD, 10_000, "nonce")
    assert await readable(site, session, {10}) == {10}
    failing[0] = True  # Discord fails from now on
    now[0] += 3
    assert await readable(site, session, {10, 12}) == {10, 12}  # the window's admin
    assert members == [ADMIN]
    now[0] += READING_RIGHTS_S
    with pytest.raises(LinkRefused, match="Discord did not answer"):
        await site._rights(session, {10, 12})


async def test_a_failed_ask_mid_window_keeps_the_rights_and_asks_again_later(
    tmp_path: Path,
) -> None:
    """``Dashboard._rights``: a mid-window ask whose admin Discord did not give leaves the
    window's rights, the new channels unanswered (asked again at the next poll)."""
    admins, now = CountingAdmins(), [1000.0]
    site = dashboard(tmp_path, admins, now)
    session = DashboardSession(ADMIN, GUILD, 10_000, "nonce")
    assert await readable(site, session, {10}) == {10}
    admins.refusal, admins.discord_failed = "Discord did not answer", True
    now[0] += 3
    asked = await site._rights(session, {10, 12})
    assert asked.shown({10, 12}) == {10} and asked.unread_because(12) == "discord"
    admins.refusal, admins.discord_failed = None, False
    assert await readable(site, session, {10, 12}) == {10, 12}
    assert [within for _, _, within in admins.windows] == [False, True, True]


def thread_of(guild: object, thread_id: int, *, private: bool) -> discord.Thread:
    """A thread of ``guild`` as discord.py builds it from Discord's answer."""
    parent = text_channel_payload(7, GUILD, "parent", 0)
    data = thread_payload(
        thread_id, parent, "thread", owner_id=5, private=private, member_count=1, created_at=0.0
    )
    return discord.Thread(guild=cast(Any, guild), state=cast(Any, None), data=cast(Any, data))


class Server:
    """A server as discord.py holds it (one object until a reconnect rebuilds it): its cache
    holds ``threads`` only, and its admins manage it."""

    def __init__(self, guild_id: int, threads: dict[int, discord.Thread] | None = None) -> None:
        self.id = guild_id
        self.threads = threads or {}

    def get_channel_or_thread(self, channel_id: int) -> discord.Thread | None:
        return self.threads.get(channel_id)

    def get_channel(self, channel_id: int) -> None:
        return None

    async def fetch_member(self, user_id: int) -> object:
        return SimpleNamespace(id=user_id, guild_permissions=MANAGES, guild=self)


BUSY_SERVER, QUIET_SERVER, QUIET_THREAD = 1, 2, 999
BUSY_HISTORY = range(100, 400)  # the busy server's archived threads


async def test_one_servers_history_does_not_hold_up_another_servers_page(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review R_FL1 (scaled down 10x): a server's first poll queued a look-up for each of its
    hundreds of archived threads, every server's in one line, and another server's admin waited
    behind them all (0 answers in 60 s). Each server has a few places among the questions in
    flight, and queues no more than a poll may see answered: the other's is answered at once."""
    monkeypatch.setattr(visibility, "CHANNEL_FETCH_TIMEOUT_S", 0.1)
    monkeypatch.setattr(admin_cog, "ANSWERS_WAITED_S", 0.2)
    servers = {BUSY_SERVER: Server(BUSY_SERVER), QUIET_SERVER: Server(QUIET_SERVER)}

    async def fetch_channel(channel_id: int) -> object:
        if channel_id == QUIET_THREAD:
            raise http_error(discord.NotFound, 404)  # answered at once: gone
        await asyncio.sleep(1.0)  # the busy server's: Discord is slow (past the timeout)
        raise AssertionError("timed out before")

    client = SimpleNamespace(get_guild=servers.get, fetch_channel=fetch_channel)
    admins = DiscordServerAdmins(cast(discord.Client, client), RecentThreadMembers(ttl_s=30.0))
    assert (await admins.rights(BUSY_SERVER, ADMIN, BUSY_HISTORY)).unanswered
    quiet = await admins.rights(QUIET_SERVER, OTHER_ADMIN, [QUIET_THREAD])
    assert quiet == AdminRights(None)  # answered (gone); at R_FL1: unanswered, poll after poll


async def test_a_private_threads_answer_carries_over_to_the_next_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review R_FL1: whether an admin is in a private thread was asked behind every server's
    look-ups, and each poll's wait cancelled the question, asked again last at the next poll:
    never answered while Discord took longer than a poll waits. It is asked among the server's
    own places, once, and its answer is kept for the next poll."""
    monkeypatch.setattr(admin_cog, "ANSWERS_WAITED_S", 0.2)
    quiet = Server(QUIET_SERVER)
    quiet.threads[QUIET_THREAD] = thread_of(quiet, QUIET_THREAD, private=True)
    servers = {BUSY_SERVER: Server(BUSY_SERVER), QUIET_SERVER: quiet}
    reads = discord.Permissions(view_channel=True, read_message_history=True)
    monkeypatch.setattr(discord.Thread, "permissions_for", lambda self, member: reads)
    asked: list[int] = []
    answers = asyncio.Event()

    async def fetch_member(self: discord.Thread, member_id: int) -> object:
        asked.append(member_id)
        await answers.wait()  # after the first poll stopped waiting
        return SimpleNamespace(id=member_id)

    monkeypatch.setattr(discord.Thread, "fetch_member", fetch_member)

    async def fetch_channel(channel_id: int) -> object:
        await asyncio.sleep(10.0)  # the busy server's archived threads: Discord is slow
        raise AssertionError("timed out before")

    client = SimpleNamespace(get_guild=servers.get, fetch_channel=fetch_channel)
    admins = DiscordServerAdmins(cast(discord.Client, client), RecentThreadMembers(ttl_s=30.0))
    busy = asyncio.ensure_future(admins.rights(BUSY_SERVER, ADMIN, BUSY_HISTORY))
    try:
        await asyncio.sleep(0)  # the busy server's look-ups queued first
        first = await admins.rights(QUIET_SERVER, OTHER_ADMIN, [QUIET_THREAD])
        assert first.unanswered == {QUIET_THREAD}
        answers.set()
        second = await admins.rights(QUIET_SERVER, OTHER_ADMIN, [QUIET_THREAD])
    finally:
        await busy
    assert second.readable == {QUIET_THREAD}  # at R_FL1: unanswered, behind the busy server
    assert asked == [OTHER_ADMIN]  # asked once (at R_FL1: again at each poll)


async def test_an_admin_is_asked_again_once_their_window_passed() -> None:
    """The member kept for a window's later asks is not used past the window (review R_FL1:
    kept until a thousand other admins pushed it out)."""
    members: list[int] = []
    guild = uncached_guild(members.append)
    now = [1000.0]
    client = cast(discord.Client, SimpleNamespace(get_guild=lambda guild_id: guild))
    admins = DiscordServerAdmins(client, RecentThreadMembers(ttl_s=30.0), clock=lambda: now[0])
    await admins.rights(GUILD, ADMIN, [])
    await admins.rights(GUILD, ADMIN, [], within_window=True)
    assert members == [ADMIN]
    now[0] += READING_RIGHTS_S
    await admins.rights(GUILD, ADMIN, [], within_window=True)
    assert members == [ADMIN, ADMIN]


async def test_a_rebuilt_server_lets_go_of_the_old_one() -> None:
    """Archived threads asked of Discord are bound to the server discord.py held then; once a
    reconnect rebuilds it, they are let go at its next poll (review R_FL1: they kept the old
    server, all its members and channels, alive until pushed out of the memo)."""
    old = Server(GUILD)
    servers: dict[int, Server] = {GUILD: old}

    async def fetch_channel(channel_id: int) -> discord.Thread:
        return thread_of(servers[GUILD], channel_id, private=False)

    client = SimpleNamespace(get_guild=servers.get, fetch_channel=fetch_channel)
    admins = DiscordServerAdmins(cast(discord.Client, client), RecentThreadMembers(ttl_s=30.0))
    await admins.rights(GUILD, ADMIN, [50, 51])
    old_server = weakref.ref(old)
    servers[GUILD] = Server(GUILD)  # a reconnect
    del old
    await admins.rights(GUILD, ADMIN, [])
    gc.collect()
    assert old_server() is None


async def test_a_private_threads_answer_serves_the_poll_that_takes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whether an admin is in a private thread, kept for the next poll when a poll stopped
    waiting, is not kept past the poll that takes it: an admin added since gets in at once."""
    server = Server(GUILD)
    server.threads[QUIET_THREAD] = thread_of(server, QUIET_THREAD, private=True)
    reads = discord.Permissions(view_channel=True, read_message_history=True)
    monkeypatch.setattr(discord.Thread, "permissions_for", lambda self, member: reads)
    added = [False]

    async def fetch_member(self: discord.Thread, member_id: int) -> object:
        if not added[0]:
            raise http_error(discord.NotFound, 404)  # not in the thread
        return SimpleNamespace(id=member_id)

    monkeypatch.setattr(discord.Thread, "fetch_member", fetch_member)
    client = cast(discord.Client, SimpleNamespace(get_guild=lambda guild_id: server))
    admins = DiscordServerAdmins(client, RecentThreadMembers(ttl_s=30.0), clock=lambda: 1000.0)
    assert not (await admins.rights(GUILD, ADMIN, [QUIET_THREAD])).readable
    added[0] = True
    assert (await admins.rights(GUILD, ADMIN, [QUIET_THREAD])).readable == {QUIET_THREAD}
