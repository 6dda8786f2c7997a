"""One record of "members stopped in a server until T", whatever stopped them: a timeout
holds until its end (the latest word wins, a removal forgets it), a ban or kick for an hour;
a full record drops the stops that ended before the oldest ones still running. It holds the
work begun before the stop, never the work begun after it. The owner and administrators are
exempt from a timeout."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot.bans import StoppedMembers, timed_out_refusal
from cogs.bans import ADMINISTRATOR, is_exempt_from_timeouts


def test_a_timeout_holds_until_its_end_and_its_removal_frees_the_member() -> None:
    now = [1000.0]
    stopped = StoppedMembers(ttl_s=3600.0, clock=lambda: now[0])
    begun = now[0] - 1.0  # a command of theirs, under way when the timeout came
    stopped.add(5, 77, until=1000.0 + 7 * 86400)  # a week: longer than a ban's hour
    now[0] += 2 * 86400
    assert stopped.holds(5, 77, began_at=begun)
    assert not stopped.holds(6, 77, began_at=begun)
    assert not stopped.holds(None, 77, began_at=begun)
    stopped.add(5, 77, until=now[0] + 60.0)  # shortened: the latest word holds
    now[0] += 61.0
    assert not stopped.holds(5, 77, began_at=begun)
    stopped.add(5, 77, until=now[0] + 600.0)
    stopped.forget(5, 77)  # removed early
    assert not stopped.holds(5, 77, began_at=begun)


def test_a_kick_holds_the_work_begun_before_it_not_the_work_begun_after() -> None:
    """Easel hears no joins: a kicked member back within the hour makes pictures again, while
    their ``--repeat`` begun before the kick stays stopped."""
    now = [1000.0]
    stopped = StoppedMembers(ttl_s=3600.0, clock=lambda: now[0])
    repeat_begun = now[0] - 30.0
    stopped.add(5, 77)
    now[0] += 300.0  # joined again
    assert stopped.holds(5, 77, began_at=repeat_begun)
    assert not stopped.holds(5, 77, began_at=now[0])
    # Kicked again: the work begun since the first kick is held too.
    stopped.add(5, 77)
    assert stopped.holds(5, 77, began_at=now[0] - 1.0)


def test_a_commands_receipt_is_placed_against_the_stop_on_the_monotonic_clock() -> None:
    """A command's work is placed by when Easel received it against when it heard the stop,
    not by Discord's time against Easel's wall clock: a host 10 s behind Discord's holds
    the command sent 5 s before the ban, and frees one received after it (review AUD3)."""
    wall, monotonic = [2_000_000.0], [500.0]
    stopped = StoppedMembers(clock=lambda: wall[0], monotonic=lambda: monotonic[0])
    stopped.add(10, 21)  # heard at 500.0 (monotonic)
    sent_before = wall[0] + 10.0 - 5.0  # Discord's time, 10 s ahead of the host's
    assert stopped.holds(10, 21, began_at=sent_before, received_at=499.0)
    sent_after = wall[0] - 20.0  # a host ahead of Discord's: read as before the ban
    assert not stopped.holds(10, 21, began_at=sent_after, received_at=501.0)
    assert stopped.holds(10, 21, began_at=sent_after)  # a journaled job: its start


def test_a_full_record_drops_ended_stops_before_running_ones() -> None:
    now = [1000.0]
    stopped = StoppedMembers(ttl_s=3600.0, capacity=2, clock=lambda: now[0])
    begun = now[0] - 1.0
    stopped.add(5, 1)  # a ban: an hour
    stopped.add(5, 2, until=now[0] + 10.0)  # a short timeout, added later
    now[0] += 20.0
    stopped.add(5, 3)
    # The ended timeout made room, not the oldest stop still running.
    held = [stopped.holds(5, member, began_at=begun) for member in (1, 2, 3)]
    assert held == [True, False, True]


def test_the_timeout_refusal_says_until_when() -> None:
    until = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    sentence = timed_out_refusal(until)
    assert f"<t:{int(until.timestamp())}:f>" in sentence and "timeout" in sentence


def member(user_id: int, *roles: int) -> Any:
    return {"user": {"id": str(user_id)}, "roles": [str(role) for role in roles]}


def test_the_owner_and_administrators_are_exempt_from_timeouts() -> None:
    """What the start-up check reads of GET /guilds/{g}: Discord exempts them, though a member
    timed out and then made one keeps the timeout's date."""
    guild_id, owner, admin_role, other_role = 5, 1, 9, 10
    roles = [(guild_id, 0), (admin_role, ADMINISTRATOR), (other_role, 1 << 11)]
    guild: Any = {
        "id": str(guild_id),
        "owner_id": str(owner),
        "roles": [{"id": str(role), "permissions": str(bits)} for role, bits in roles],
    }
    assert is_exempt_from_timeouts(member(owner), guild)
    assert is_exempt_from_timeouts(member(2, other_role, admin_role), guild)
    assert not is_exempt_from_timeouts(member(3, other_role), guild)
    everyone_admin = {**guild, "roles": [{"id": str(guild_id), "permissions": str(ADMINISTRATOR)}]}
    assert is_exempt_from_timeouts(member(3), everyone_admin)


def test_the_jobs_a_stop_ended_at_their_start_are_that_stops_only() -> None:
    """The start gate's ends are noted for the stop's audit: a job begun after the stop is
    neither held nor noted, and a later stop (a ban after a timeout) starts a list of its own."""
    now = [1000.0]
    stopped = StoppedMembers(ttl_s=3600.0, clock=lambda: now[0])
    timeout = stopped.add(5, 77, until=now[0] + 600.0)
    elsewhere = stopped.add(6, 77)
    assert stopped.ends_at_start(5, 77, "before", began_at=now[0] - 1.0)
    assert not stopped.ends_at_start(5, 77, "after", began_at=now[0] + 1.0)
    assert timeout.ended_at_start == {"before"}
    assert elsewhere.ended_at_start == set()
    now[0] += 10.0
    ban = stopped.add(5, 77)
    assert stopped.ends_at_start(5, 77, "queued", began_at=now[0] - 5.0)
    # The timeout's cancels, still running, find its job theirs: the ban's list is its own.
    assert (timeout.ended_at_start, ban.ended_at_start) == ({"before"}, {"queued"})
    # AutoMod's end, learnt later, keeps the list.
    stopped.ends_at(5, 77, now[0] + 60.0, of=ban)
    assert stopped.ends_at_start(5, 77, "late", began_at=now[0] - 5.0)
    assert ban.ended_at_start == {"queued", "late"}
