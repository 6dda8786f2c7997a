"""Private threads on the reading paths: the answers Discord gave about membership are kept
briefly (``RecentThreadMembers``, one per bot), a thread whose parent discord.py has not cached
counts as unreadable instead of failing the dashboard, so does one Discord says the member is
not in; one Discord hides from Easel is refused saying that Easel lost it, not the member;
while Discord fails (an error answer or a broken connection) the member is refused with a
sentence that says so, and the dashboard hides that thread only; a maker's own job clicked in
a private thread they are no longer in is refused like anyone's."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import discord
import pytest

import cogs.visibility as visibility
from bot.policy.visibility import (
    NOT_YOURS_TO_CLICK,
    THREAD_CHECK_FAILED,
    RecentThreadMembers,
    ThreadMembershipUnknown,
)
from bot.user_errors import Reason, UserError
from cogs.admin import UNANSWERED_KEPT_S, DiscordServerAdmins
from cogs.visibility import (
    EASEL_LOST_SIGHT,
    HiddenFromEasel,
    check_member_may_read_channel,
    member_may_read,
    member_may_see,
)
from tests.fake_discord.payloads import text_channel_payload, thread_payload

GUILD, PARENT, THREAD, MEMBER, OTHER = 1, 2, 3, 4, 5
MANAGES = discord.Permissions(manage_guild=True)


def test_a_member_is_remembered_for_the_ttl_only() -> None:
    recent = RecentThreadMembers(ttl_s=30.0)
    assert not recent.is_member(THREAD, MEMBER, now=100.0)
    recent.remember(THREAD, MEMBER, now=100.0)
    assert recent.is_member(THREAD, MEMBER, now=129.9)
    assert not recent.is_member(THREAD, OTHER, now=110.0)
    assert not recent.is_member(PARENT, MEMBER, now=110.0)
    assert not recent.is_member(THREAD, MEMBER, now=130.0)


def test_remembering_again_extends_and_expired_answers_are_dropped() -> None:
    recent = RecentThreadMembers(ttl_s=30.0)
    recent.remember(THREAD, MEMBER, now=0.0)
    recent.remember(THREAD, OTHER, now=10.0)
    recent.remember(THREAD, MEMBER, now=20.0)  # asked again: 30 s from now
    assert recent.is_member(THREAD, MEMBER, now=45.0)
    assert not recent.is_member(THREAD, OTHER, now=45.0)
    for thread in range(1000):
        recent.remember(thread, MEMBER, now=100.0)
    recent.remember(THREAD, OTHER, now=200.0)
    assert len(recent._members) == 1  # the 1000 expired answers went on the next call


def orphan_thread() -> discord.Thread:
    """A private thread whose parent is not in the (stub) guild's cache."""
    parent = text_channel_payload(PARENT, GUILD, "gone", 0)
    data = thread_payload(
        THREAD, parent, "secret", owner_id=MEMBER, private=True, member_count=1, created_at=0.0
    )
    guild = SimpleNamespace(id=GUILD, get_channel=lambda channel_id: None)
    return discord.Thread(guild=cast(Any, guild), state=cast(Any, None), data=cast(Any, data))


async def test_a_thread_without_its_parent_in_the_cache_is_unreadable() -> None:
    thread = orphan_thread()
    member = cast(discord.Member, SimpleNamespace(id=MEMBER, guild_permissions=MANAGES))
    recent = RecentThreadMembers(ttl_s=30.0)
    assert not await member_may_see(thread, member, recent)
    assert not await member_may_read(thread, member, recent)

    async def fetch_member(user_id: int) -> discord.Member:
        return member

    guild = SimpleNamespace(
        get_channel_or_thread=lambda channel_id: thread if channel_id == THREAD else None,
        fetch_member=fetch_member,
    )
    client = SimpleNamespace(get_guild=lambda guild_id: guild)
    admins = DiscordServerAdmins(cast(discord.Client, client), recent)
    assert (await admins.rights(GUILD, MEMBER, [THREAD])).readable == set()


def not_found() -> discord.NotFound:
    return discord.NotFound(cast(Any, SimpleNamespace(status=404, reason="Not Found")), "")


def forbidden() -> discord.Forbidden:
    return discord.Forbidden(cast(Any, SimpleNamespace(status=403, reason="Forbidden")), "")


@pytest.fixture
def readable_private_thread(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[int]]:
    """Makes the orphan thread's parent grant View Channel and Read Message History, and its
    membership answers come from ``answer`` (a member, or an exception to raise); returns the
    list of members Discord was asked about."""

    def install(answer: Exception | None = None) -> list[int]:
        asked: list[int] = []

        async def fetch_member(self: discord.Thread, member_id: int) -> object:
            asked.append(member_id)
            if answer is not None:
                raise answer
            return SimpleNamespace(id=member_id)

        granted = discord.Permissions(view_channel=True, read_message_history=True)
        monkeypatch.setattr(discord.Thread, "permissions_for", lambda self, obj: granted)
        monkeypatch.setattr(discord.Thread, "fetch_member", fetch_member)
        return asked

    return install


async def test_each_bot_keeps_its_own_thread_members(
    readable_private_thread: Callable[..., list[int]],
) -> None:
    asked = readable_private_thread()
    thread, member = orphan_thread(), cast(discord.Member, SimpleNamespace(id=MEMBER))
    first, second = RecentThreadMembers(ttl_s=30.0), RecentThreadMembers(ttl_s=30.0)
    assert await member_may_read(thread, member, first)
    assert await member_may_read(thread, member, first)
    assert asked == [MEMBER]  # the first bot's "yes" is kept
    assert await member_may_see(thread, member, second)
    assert asked == [MEMBER, MEMBER]  # a second bot (or a restart) asks for itself


async def test_a_thread_discord_says_the_member_is_not_in_is_unreadable(
    readable_private_thread: Callable[..., list[int]],
) -> None:
    asked = readable_private_thread(not_found())
    thread, member = orphan_thread(), cast(discord.Member, SimpleNamespace(id=MEMBER))
    recent = RecentThreadMembers(ttl_s=30.0)
    assert not await member_may_see(thread, member, recent)
    assert not await member_may_read(thread, member, recent)
    assert asked == [MEMBER, MEMBER]  # a "no" is not remembered


async def test_a_thread_discord_hides_from_easel_is_easels_loss_not_the_members(
    readable_private_thread: Callable[..., list[int]],
) -> None:
    """Easel taken out of a private thread: Discord answers Easel's question about its members
    403. Still refused (nothing is known), but told as Easel's loss on every path: the
    reading rules, the dashboard, and a click in the thread (review L1: "you cannot read")."""
    readable_private_thread(forbidden())
    thread, member = orphan_thread(), cast(discord.Member, SimpleNamespace(id=MEMBER))
    recent = RecentThreadMembers(ttl_s=30.0)
    for may in (member_may_see, member_may_read):
        with pytest.raises(HiddenFromEasel):
            await may(thread, member, recent)
    rights = await admins_of(thread, recent).rights(GUILD, MEMBER, [THREAD, PARENT])
    assert rights.readable == {PARENT} and rights.hidden_from_easel == {THREAD}
    sees = discord.Permissions(view_channel=True, read_message_history=True)
    with pytest.raises(UserError, match=re.escape(EASEL_LOST_SIGHT)) as refused:
        await check_member_may_read_channel(
            click_in(thread, sees), THREAD, made_by_clicker=True, restricted_when_made=False
        )
    assert refused.value.reason is Reason.CHANNEL


def admins_of(
    thread: discord.Thread, recent: RecentThreadMembers, clock: Callable[[], float] = time.monotonic
) -> DiscordServerAdmins:
    """The dashboard's rights, over a guild holding ``thread`` and the (readable) parent."""
    parent = SimpleNamespace(
        id=PARENT,
        permissions_for=lambda member: discord.Permissions(
            view_channel=True, read_message_history=True
        ),
    )
    channels = {THREAD: thread, PARENT: parent}

    async def fetch_member(user_id: int) -> object:
        return SimpleNamespace(id=user_id, guild_permissions=MANAGES)

    guild = SimpleNamespace(get_channel_or_thread=channels.get, fetch_member=fetch_member)
    client = SimpleNamespace(get_guild=lambda guild_id: guild)
    return DiscordServerAdmins(cast(discord.Client, client), recent, clock)


@pytest.mark.parametrize(
    "failure",
    [
        discord.DiscordServerError(cast(Any, SimpleNamespace(status=503, reason="")), ""),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientConnectorError(cast(Any, None), OSError(111, "Connection refused")),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
    ],
    ids=["503", "disconnected", "refused", "reset", "timeout"],
)
async def test_a_thread_discord_cannot_answer_for_is_refused_as_an_outage(
    readable_private_thread: Callable[..., list[int]], failure: Exception
) -> None:
    asked = readable_private_thread(failure)
    thread, member = orphan_thread(), cast(discord.Member, SimpleNamespace(id=MEMBER))
    recent = RecentThreadMembers(ttl_s=30.0)
    for may in (member_may_see, member_may_read):
        with pytest.raises(ThreadMembershipUnknown, match=re.escape(THREAD_CHECK_FAILED)):
            await may(thread, member, recent)
    assert asked == [MEMBER, MEMBER]  # a failure is not remembered as an answer
    # The dashboard hides that thread alone, not every channel it was asked about, and says
    # Discord did not answer about it.
    rights = await admins_of(thread, recent).rights(GUILD, MEMBER, [THREAD, PARENT])
    assert rights.refusal is None and rights.readable == {PARENT}
    assert rights.unanswered == {THREAD}


async def test_the_dashboard_bounds_a_silent_thread_and_asks_it_again_a_window_later(
    readable_private_thread: Callable[..., list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether an admin is in a private thread, while Discord does not answer (review R_L1:
    nothing bounded the ask, and every poll asked again): unanswered within
    ``CHANNEL_FETCH_TIMEOUT_S``, and asked again once ``UNANSWERED_KEPT_S`` passed."""
    monkeypatch.setattr(visibility, "CHANNEL_FETCH_TIMEOUT_S", 0.05)
    readable_private_thread()
    asked: list[int] = []

    async def silent(self: discord.Thread, member_id: int) -> object:
        asked.append(member_id)
        await asyncio.Event().wait()  # no answer, ever
        raise AssertionError("answered")

    monkeypatch.setattr(discord.Thread, "fetch_member", silent)
    now = [100.0]
    admins = admins_of(orphan_thread(), RecentThreadMembers(ttl_s=30.0), lambda: now[0])
    async with asyncio.timeout(1.0):  # within a poll's wait (``ANSWERS_WAITED_S``)
        for _ in range(3):  # polls
            rights = await admins.rights(GUILD, MEMBER, [THREAD, PARENT])
            assert rights.readable == {PARENT} and rights.unanswered == {THREAD}
        assert asked == [MEMBER]
        now[0] += UNANSWERED_KEPT_S
        assert (await admins.rights(GUILD, MEMBER, [THREAD])).unanswered == {THREAD}
    assert asked == [MEMBER, MEMBER]


def click_in(thread: discord.Thread, permissions: discord.Permissions) -> discord.Interaction[Any]:
    services = SimpleNamespace(thread_members=RecentThreadMembers(ttl_s=30.0))
    return cast(
        discord.Interaction[Any],
        SimpleNamespace(
            guild_id=GUILD,
            channel_id=thread.id,
            channel=thread,
            permissions=permissions,
            user=SimpleNamespace(id=MEMBER),
            client=SimpleNamespace(services=services),
        ),
    )


async def test_a_maker_out_of_a_private_thread_may_not_click_their_job_there(
    readable_private_thread: Callable[..., list[int]],
) -> None:
    """As the mask editor's submit (``member_may_see``): Easel would post into a thread the
    maker left or was removed from. In it, their own job's buttons skip only Read Message
    History."""
    thread = orphan_thread()
    sees_only = discord.Permissions(view_channel=True)
    readable_private_thread()
    await check_member_may_read_channel(
        click_in(thread, sees_only), THREAD, made_by_clicker=True, restricted_when_made=False
    )
    with pytest.raises(UserError, match=re.escape(NOT_YOURS_TO_CLICK)):
        await check_member_may_read_channel(
            click_in(thread, sees_only), THREAD, made_by_clicker=False, restricted_when_made=False
        )
    readable_private_thread(not_found())
    with pytest.raises(UserError, match=re.escape(NOT_YOURS_TO_CLICK)):
        await check_member_may_read_channel(
            click_in(thread, sees_only), THREAD, made_by_clicker=True, restricted_when_made=False
        )
