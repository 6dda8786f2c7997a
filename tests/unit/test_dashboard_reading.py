"""How often the dashboard asks Discord what its admin may do and read (``Dashboard._rights``):
once per window, and once per channel first seen within it, whatever the number of polls, and
per admin; rights lost end the session at the next window."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import discord
import pytest

from bot.policy.visibility import RecentThreadMembers
from bot.web.dashboard import READING_RIGHTS_S, AdminRights, Dashboard, DashboardSession
from bot.web.links import LinkRefused, LinkSigner
from cogs.admin import DiscordServerAdmins

GUILD, ADMIN, OTHER_ADMIN = 1, 2, 3


class CountingAdmins:
    """Discord's answers: ``ADMIN`` reads even channel ids, others nothing; every ask kept."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, set[int]]] = []
        self.refusal: str | None = None

    def name_of(self, guild_id: int) -> str:
        return "server"

    async def rights(
        self, guild_id: int, user_id: int, channel_ids: Collection[int]
    ) -> AdminRights:
        self.asked.append((user_id, set(channel_ids)))
        readable = {c for c in channel_ids if user_id == ADMIN and c % 2 == 0}
        return AdminRights(self.refusal, frozenset(readable))


def dashboard(tmp_path: Path, admins: CountingAdmins, now: list[float]) -> Dashboard:
    signer = LinkSigner(b"k" * 32, tmp_path, clock=lambda: now[0])
    # _rights needs neither the database, the queue nor the settings.
    return Dashboard(
        signer, "http://easel", cast(Any, None), cast(Any, None), admins, cast(Any, None)
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

    guild = SimpleNamespace(get_channel_or_thread=channels.get, fetch_member=fetch_member)
    client = cast(discord.Client, SimpleNamespace(get_guild=lambda guild_id: guild))
    rights = await DiscordServerAdmins(client, RecentThreadMembers(ttl_s=30.0)).rights(
        GUILD, ADMIN, [10, 12, 14]
    )
    if refusal is None:
        assert rights == AdminRights(None, frozenset({10, 12}), frozenset({10}))
    else:
        assert rights.refusal is not None and refusal in rights.refusal
        assert not rights.readable
