"""A server's banned words are read, not rebuilt, for each prompt (AUD21): the operator's
words have one matcher, built once; a server's own list has its own, built once and kept
until the list changes (R_FX21: never joined with the operator's, so neither many servers nor
their lists rebuild or copy those); and a word is as long as it is matched, not as typed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiosqlite
import pytest

from bot.policy import moderation
from bot.policy.guild import GuildList
from bot.policy.moderation import BANNED_WORD_MAX_LENGTH, banned_word_too_long, read_banned_words
from bot.user_errors import UserError
from inference.types import RenderRequest
from tests.unit.test_operator_banned_words import services_banning

GUILD, ADMIN = 100, 1
PLAIN = RenderRequest("a red cat on a chair", seed=1, steps=2)
# 100 characters typed, 90 normalised (``normalise`` drops variation selectors), 185 with its
# marks read apart (``_marks_apart``: each selector a boundary).
MARKS_APART_TOO_LONG = "\ufdfa" * 5 + "\ufe00" * 95


class Builds:
    """The banned-word lists a matcher was built for."""

    def __init__(self) -> None:
        self.lists: list[frozenset[str]] = []


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> Iterator[Builds]:
    built = Builds()
    matcher_init = moderation._Matcher.__init__

    def counting(matcher: moderation._Matcher, words: dict[str, str]) -> None:
        built.lists.append(frozenset(words.values()))
        matcher_init(matcher, words)

    monkeypatch.setattr(moderation._Matcher, "__init__", counting)
    kept = (moderation._matcher_for, moderation._operator_matcher_for)
    for cache in kept:
        cache.cache_clear()  # none kept from another test's lists
    yield built
    for cache in kept:
        cache.cache_clear()


async def test_a_servers_matcher_is_built_once_and_again_only_when_its_list_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, conn: aiosqlite.Connection, builds: Builds
) -> None:
    policy = services_banning("gore\n", tmp_path, monkeypatch, conn).guild_policy
    await policy.change_list(GUILD, ADMIN, GuildList.BANNED_WORD, "dog", add=True)
    for member in range(3):  # three members' prompts and a stored job's check
        await policy.admit(GUILD, None, False, PLAIN, member_id=member)
    with pytest.raises(UserError, match="'dog' is banned"):
        await policy.admit(GUILD, None, False, RenderRequest("a dog", seed=1, steps=2))
    assert builds.lists == [{"dog"}, {"gore"}]  # the server's own, then the operator's
    # The same set each time (its hash computed once), until the list changes.
    assert (await policy.banned_words_where(GUILD)).own is (
        await policy.banned_words_where(GUILD)
    ).own

    await policy.change_list(GUILD, ADMIN, GuildList.BANNED_WORD, "cat", add=True)
    with pytest.raises(UserError, match="'cat' is banned"):
        await policy.admit(GUILD, None, False, PLAIN, member_id=4)
    with pytest.raises(UserError, match="'gore' is banned"):
        await policy.admit(GUILD, None, False, RenderRequest("gore", seed=1, steps=2))
    await policy.change_list(GUILD, ADMIN, GuildList.BANNED_WORD, "cat", add=False)
    await policy.admit(GUILD, None, False, PLAIN, member_id=5)
    # Back to the list of before, whose matcher is still kept (by the words, not the set).
    assert builds.lists == [{"dog"}, {"gore"}, {"cat", "dog"}]


async def test_more_servers_than_matchers_kept_never_build_the_operators_words_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, conn: aiosqlite.Connection, builds: Builds
) -> None:
    """R_FX21: an admin of ``MATCHERS_KEPT`` + 1 servers, each banning a word, prompting in
    each in turn, evicts only servers' own lists; the operator's words (tens of thousands in
    a large file) are built into one matcher, once."""
    policy = services_banning("gore\n", tmp_path, monkeypatch, conn).guild_policy
    servers = range(GUILD, GUILD + moderation.MATCHERS_KEPT + 1)
    for server in servers:
        await policy.change_list(server, ADMIN, GuildList.BANNED_WORD, f"w{server}", add=True)
    for server in [*servers, GUILD]:  # the first server's list is evicted by then
        await policy.admit(server, None, False, PLAIN, member_id=1)
    with pytest.raises(UserError, match="'gore' is banned"):
        await policy.admit(GUILD, None, False, RenderRequest("gore", seed=1, steps=2))
    assert sum("gore" in words for words in builds.lists) == 1
    assert builds.lists.count({f"w{GUILD}"}) == 2


def test_the_operators_file_measures_a_word_as_it_is_matched() -> None:
    """Six U+FDFA are 6 characters typed, 108 as matched (NFKC spells each out as 18)."""
    with pytest.raises(ValueError, match=r"line 2 is 108 characters long as prompts are comp"):
        read_banned_words("ok\n" + "\ufdfa" * 6)
    assert read_banned_words("\ufdfa" * 5) == {"\ufdfa" * 5}  # 90 as matched
    # R_FX21: 90 normalised, but 185 with its variation selectors read apart, as the matcher
    # also looks for it (``_marks_apart``): it would carry 185 characters with every ending.
    with pytest.raises(ValueError, match=r"line 1 is 185 characters long as prompts are comp"):
        read_banned_words(MARKS_APART_TOO_LONG)


def test_every_word_accepted_is_carried_at_most_its_limit_by_the_matcher() -> None:
    """Each form the matcher looks for a word in is at most ``BANNED_WORD_MAX_LENGTH`` long
    for every word the limit lets through: each ending carries the longest, plus one."""
    accepted = ["x" * 100, "\ufdfa" * 5, "a\u0301" * 50, "\ufdfa" * 5 + "\ufe00" * 10]
    for word in accepted:
        assert read_banned_words(word) == {word}
        matcher = moderation._matcher_for(frozenset({word}))
        assert matcher is not None and matcher.keep <= BANNED_WORD_MAX_LENGTH + 1, word
    assert banned_word_too_long(MARKS_APART_TOO_LONG) is not None
