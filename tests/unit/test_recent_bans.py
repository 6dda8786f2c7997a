"""Whom a ban keeps from queueing more: the pair (server, member) for an hour, at most the
latest ``capacity`` pairs, until an unban; never a DM."""

from __future__ import annotations

from bot.bans import RecentBans


def test_a_ban_holds_in_its_server_for_an_hour_until_an_unban() -> None:
    now = [1000.0]
    recent = RecentBans(ttl_s=3600.0, clock=lambda: now[0])
    recent.add(5, 77)
    assert recent.holds(5, 77)
    assert not recent.holds(6, 77) and not recent.holds(None, 77) and not recent.holds(5, 78)
    now[0] += 3599.0
    assert recent.holds(5, 77)
    now[0] += 2.0
    assert not recent.holds(5, 77)
    recent.add(5, 77)
    recent.forget(5, 77)
    assert not recent.holds(5, 77)


def test_a_raid_of_bans_keeps_the_latest_ones() -> None:
    recent = RecentBans(capacity=3)
    for member in range(5):
        recent.add(5, member)
    assert [recent.holds(5, member) for member in range(5)] == [False, False, True, True, True]
