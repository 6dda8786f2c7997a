"""bot.unheard_deletions: which posts are asked of Discord before their pictures are used
again (the gateway's sessions; the end-to-end paths are tests/e2e/test_gateway_gaps.py)."""

from __future__ import annotations

import pytest

from bot import unheard_deletions
from bot.snowflakes import CLOCK_SLACK_S, DISCORD_EPOCH_MS, made_at
from bot.unheard_deletions import UnheardDeletions


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def post_made_at(seconds: float, sequence: int = 0) -> int:
    """A message id whose snowflake says it was made at ``seconds`` since the epoch."""
    return (int(seconds * 1000) - DISCORD_EPOCH_MS) << 22 | sequence


START = 1_800_000_000.0
GUILD, CHANNEL, THREAD, ELSEWHERE = 11, 12, 13, 14
HERE = (GUILD, CHANNEL)  # where a post is: its server and channel


def test_made_at_reads_the_snowflakes_time() -> None:
    assert made_at(post_made_at(START, sequence=7)) == START
    assert made_at(175928847299117063) == 1462015105.796  # Discord's documented example


def test_every_post_is_asked_about_before_the_first_ready() -> None:
    """A mask editor's submit may come before the gateway connects."""
    unheard = UnheardDeletions(Clock(START))
    assert unheard.may_be_gone_unheard(post_made_at(START + 3600), *HERE)


def test_a_post_made_in_the_session_is_not_asked_about_one_made_before_it_once() -> None:
    clock = Clock(START)
    unheard = UnheardDeletions(clock)
    unheard.session_began()
    earlier, later = post_made_at(START - 10), post_made_at(START + CLOCK_SLACK_S + 1)
    clock.now += 3600
    assert not unheard.may_be_gone_unheard(later, *HERE)
    assert unheard.may_be_gone_unheard(earlier, *HERE)
    unheard.seen_there(earlier, *HERE, unheard.session)
    assert not unheard.may_be_gone_unheard(earlier, *HERE)


def test_a_post_made_within_the_clock_slack_after_the_ready_is_asked_about() -> None:
    """Easel's clock may be behind Discord's: such a post may predate the session."""
    unheard = UnheardDeletions(Clock(START))
    unheard.session_began()
    assert unheard.may_be_gone_unheard(post_made_at(START + CLOCK_SLACK_S - 1), *HERE)


def test_a_new_session_forgets_what_was_found_there() -> None:
    clock = Clock(START)
    unheard = UnheardDeletions(clock)
    unheard.session_began()
    earlier = post_made_at(START - 10)
    unheard.seen_there(earlier, *HERE, unheard.session)
    made_in_it = post_made_at(START + CLOCK_SLACK_S + 1)
    clock.now += 3600
    unheard.session_began()
    assert unheard.may_be_gone_unheard(earlier, *HERE)
    assert unheard.may_be_gone_unheard(made_in_it, *HERE)


def test_an_answer_asked_before_a_new_session_does_not_count_in_it() -> None:
    """Discord's answer came before the READY: a deletion in the gap after it is not heard."""
    unheard = UnheardDeletions(Clock(START))
    unheard.session_began()
    earlier = post_made_at(START - 10)
    asked_in = unheard.session
    unheard.session_began()
    unheard.seen_there(earlier, *HERE, asked_in)
    assert unheard.may_be_gone_unheard(earlier, *HERE)


def test_while_disconnected_every_post_is_asked_about_until_a_resume() -> None:
    clock = Clock(START)
    unheard = UnheardDeletions(clock)
    unheard.session_began()
    made_in_it = post_made_at(START + CLOCK_SLACK_S + 1)
    clock.now += 3600
    unheard.disconnected()
    assert unheard.may_be_gone_unheard(made_in_it, *HERE)
    unheard.resumed()
    assert not unheard.may_be_gone_unheard(made_in_it, *HERE)


def test_hearing_more_asks_about_every_earlier_post_again() -> None:
    """Added to a server again, or View Channel got: a deletion before it was never announced,
    though the gateway stayed connected; a post made after it is not asked about."""
    clock = Clock(START)
    unheard = UnheardDeletions(clock)
    unheard.session_began()
    found, made_in_it = post_made_at(START - 10), post_made_at(START + CLOCK_SLACK_S + 1)
    unheard.seen_there(found, *HERE, unheard.session)
    clock.now += 3600
    asked_in = unheard.session
    unheard.began_hearing_more()
    unheard.seen_there(found, *HERE, asked_in)  # an answer from before it counts no more
    assert unheard.may_be_gone_unheard(found, *HERE)
    assert unheard.may_be_gone_unheard(made_in_it, *HERE)
    assert not unheard.may_be_gone_unheard(post_made_at(clock.now + CLOCK_SLACK_S + 1), *HERE)


def test_hearing_more_while_disconnected_still_asks_about_every_post() -> None:
    clock = Clock(START)
    unheard = UnheardDeletions(clock)
    unheard.session_began()
    unheard.disconnected()
    unheard.began_hearing_more()
    assert unheard.may_be_gone_unheard(post_made_at(clock.now + CLOCK_SLACK_S + 1), *HERE)


def test_what_was_found_there_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """One session may last months: the oldest found go first, and are asked about again."""
    monkeypatch.setattr(unheard_deletions, "SEEN_KEPT", 2)
    unheard = UnheardDeletions(Clock(START))
    unheard.session_began()
    posts = [post_made_at(START - 10, sequence) for sequence in range(3)]
    for post in posts:
        unheard.seen_there(post, *HERE, unheard.session)
    assert [unheard.may_be_gone_unheard(post, *HERE) for post in posts] == [True, False, False]


def test_a_server_back_from_an_outage_asks_about_its_earlier_posts_alone() -> None:
    """GUILD_DELETE unavailable, then GUILD_CREATE: its deletions meanwhile went unannounced;
    an earlier post there found before is asked about once more, one elsewhere is not."""
    clock = Clock(START)
    unheard = UnheardDeletions(clock)
    unheard.session_began()
    there, elsewhere = post_made_at(START - 10, 1), post_made_at(START - 10, 2)
    unheard.seen_there(there, *HERE, unheard.session)
    unheard.seen_there(elsewhere, ELSEWHERE, CHANNEL, unheard.session)
    made_in_it = post_made_at(START + CLOCK_SLACK_S + 1)
    clock.now += 3600
    unheard.began_hearing_in(GUILD)
    assert unheard.may_be_gone_unheard(there, *HERE)
    assert unheard.may_be_gone_unheard(made_in_it, *HERE)
    assert not unheard.may_be_gone_unheard(elsewhere, ELSEWHERE, CHANNEL)
    assert not unheard.may_be_gone_unheard(post_made_at(clock.now + CLOCK_SLACK_S + 1), *HERE)
    unheard.seen_there(there, *HERE, unheard.session)
    assert not unheard.may_be_gone_unheard(there, *HERE)


def test_a_thread_easel_is_in_again_asks_about_its_earlier_posts_alone() -> None:
    """Added back to a private thread: its posts are asked about, not those of its server's
    other channels; an answer asked before Easel was back counts no more."""
    clock = Clock(START)
    unheard = UnheardDeletions(clock)
    unheard.session_began()
    in_thread, in_channel = post_made_at(START - 10, 1), post_made_at(START - 10, 2)
    asked_in = unheard.session
    clock.now += 3600
    unheard.began_hearing_in(THREAD)
    unheard.seen_there(in_thread, GUILD, THREAD, asked_in)
    unheard.seen_there(in_channel, *HERE, asked_in)
    assert unheard.may_be_gone_unheard(in_thread, GUILD, THREAD)
    assert not unheard.may_be_gone_unheard(in_channel, *HERE)


def test_a_ready_after_a_servers_own_session_asks_about_everything_again() -> None:
    clock = Clock(START)
    unheard = UnheardDeletions(clock)
    unheard.session_began()
    unheard.began_hearing_in(GUILD)
    found = post_made_at(START - 10)
    unheard.seen_there(found, *HERE, unheard.session)
    clock.now += 3600
    unheard.session_began()
    assert unheard.may_be_gone_unheard(found, *HERE)


def test_past_the_places_kept_a_place_begins_a_session_everywhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(unheard_deletions, "PLACES_KEPT", 1)
    clock = Clock(START)
    unheard = UnheardDeletions(clock)
    unheard.session_began()
    found = post_made_at(START - 10)
    unheard.seen_there(found, *HERE, unheard.session)
    unheard.began_hearing_in(THREAD)
    assert not unheard.may_be_gone_unheard(found, *HERE)
    unheard.began_hearing_in(ELSEWHERE)  # one place too many: every post is asked once more
    assert unheard.may_be_gone_unheard(found, *HERE)
