"""How often the dashboard asks Discord what its admin may read (``Dashboard._readable``):
once per channel and window, whatever the number of polls, and per admin."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any, cast

from bot.web.dashboard import READING_RIGHTS_S, Dashboard, DashboardSession
from bot.web.links import LinkSigner

GUILD, ADMIN, OTHER_ADMIN = 1, 2, 3


class CountingAdmins:
    """Discord's answers: ``ADMIN`` reads even channel ids, others nothing; every ask kept."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, set[int]]] = []

    async def refusal(self, guild_id: int, user_id: int) -> str | None:
        return None

    def name_of(self, guild_id: int) -> str:
        return "server"

    async def readable_channels(
        self, guild_id: int, user_id: int, channel_ids: Collection[int]
    ) -> set[int]:
        self.asked.append((user_id, set(channel_ids)))
        return {c for c in channel_ids if user_id == ADMIN and c % 2 == 0}


def dashboard(tmp_path: Path, admins: CountingAdmins, now: list[float]) -> Dashboard:
    signer = LinkSigner(b"k" * 32, tmp_path, clock=lambda: now[0])
    # _readable needs neither the database nor the queue.
    return Dashboard(signer, "http://easel", cast(Any, None), cast(Any, None), admins)


async def test_rights_are_asked_once_per_channel_and_window(tmp_path: Path) -> None:
    admins, now = CountingAdmins(), [1000.0]
    site = dashboard(tmp_path, admins, now)
    session = DashboardSession(ADMIN, GUILD, 10_000)
    for _ in range(3):  # polls
        assert await site._readable(session, {10, 11}) == {10}
    assert await site._readable(session, {10, 11, 12}) == {10, 12}  # a new channel: alone
    now[0] += READING_RIGHTS_S - 1
    assert await site._readable(session, {10}) == {10}
    assert admins.asked == [(ADMIN, {10, 11}), (ADMIN, {12})]
    now[0] += 1  # the window is over: everything is asked again
    assert await site._readable(session, {10, 11, 12}) == {10, 12}
    assert admins.asked[-1] == (ADMIN, {10, 11, 12})


async def test_each_admin_has_their_own_rights(tmp_path: Path) -> None:
    admins, now = CountingAdmins(), [1000.0]
    site = dashboard(tmp_path, admins, now)
    assert await site._readable(DashboardSession(ADMIN, GUILD, 10_000), {10}) == {10}
    assert await site._readable(DashboardSession(OTHER_ADMIN, GUILD, 10_000), {10}) == set()
    assert [user for user, _ in admins.asked] == [ADMIN, OTHER_ADMIN]
