"""Whom a ban keeps from queueing more: the pair (server, member) for an hour, for the work
begun before the ban, at most the latest ``capacity`` pairs, until an unban; never a DM."""

from __future__ import annotations

from bot.bans import StoppedMembers


def test_a_ban_holds_in_its_server_for_an_hour_until_an_unban() -> None:
    now = [1000.0]
    recent = StoppedMembers(ttl_s=3600.0, clock=lambda: now[0], monotonic=lambda: now[0])
    begun = now[0] - 1.0  # a command of theirs, under way when the ban came
    recent.add(5, 77)
    assert recent.holds(5, 77, began_at=begun)
    assert not recent.holds(6, 77, began_at=begun)
    assert not recent.holds(None, 77, began_at=begun)
    assert not recent.holds(5, 78, began_at=begun)
    now[0] += 3599.0
    assert recent.holds(5, 77, began_at=begun)
    now[0] += 2.0
    assert not recent.holds(5, 77, began_at=begun)
    recent.add(5, 77)
    recent.forget(5, 77)
    assert not recent.holds(5, 77, began_at=begun)


def test_a_bans_hour_is_measured_on_the_monotonic_clock() -> None:
    """A step of the host's wall clock neither ends a ban's hour (forward) nor lengthens it
    (back): its stop lasts an hour of the monotonic clock (review AUD3)."""
    wall, monotonic = [1000.0], [50.0]
    recent = StoppedMembers(ttl_s=3600.0, clock=lambda: wall[0], monotonic=lambda: monotonic[0])
    begun = wall[0] - 1.0
    recent.add(5, 77)
    wall[0] += 3600.0  # stepped forward an hour, seconds after the ban
    monotonic[0] += 5.0
    assert recent.holds(5, 77, began_at=begun)
    wall[0] -= 2 * 3600.0  # stepped back two hours
    monotonic[0] += 3600.0
    assert not recent.holds(5, 77, began_at=begun)


def test_a_raid_of_bans_keeps_the_latest_ones() -> None:
    recent = StoppedMembers(capacity=3, clock=lambda: 1000.0)
    for member in range(5):
        recent.add(5, member)
    held = [recent.holds(5, member, began_at=999.0) for member in range(5)]
    assert held == [False, False, True, True, True]
