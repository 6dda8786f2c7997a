"""Edges of the banned-word check that a mutation audit found no test pinned: the cap on the
endings checked one by one, at the cap and one choice past it. Refusals are asserted by type
(their wording is the user-facing texts' own tests' concern)."""

from __future__ import annotations

import math

import pytest

from bot.policy.moderation import MAX_CHECKED_ENDINGS, TooManyCombinations, find_banned_rendering
from inference.prompts import renderings

# Longer than the choices below, so each variant's whole text is an ending of its own.
LONG_PHRASE = {"a much longer banned phrase"}
CHOICES_AT_THE_CAP = int(math.log2(MAX_CHECKED_ENDINGS))


def test_a_prompt_ending_in_exactly_as_many_ways_as_the_cap_is_checked_not_refused() -> None:
    assert 2**CHOICES_AT_THE_CAP == MAX_CHECKED_ENDINGS
    prompt = "[a|b]" * CHOICES_AT_THE_CAP
    assert find_banned_rendering([renderings(prompt)], LONG_PHRASE) is None
    # Checked, not waved through: the one variant of them all that spells a banned word.
    assert find_banned_rendering([renderings(prompt)], {"ab" * 6}) == "ab" * 6


def test_one_choice_more_than_the_cap_allows_is_refused() -> None:
    with pytest.raises(TooManyCombinations):
        find_banned_rendering([renderings("[a|b]" * (CHOICES_AT_THE_CAP + 1))], LONG_PHRASE)


@pytest.mark.parametrize(
    ("text", "banned"),
    [
        # A phrase's last letter decides what may follow it, not its first: Korean writes a
        # noun's particle onto it (``가``), a script without spaces runs on into the next word.
        ("a bad 고양이가 here", "bad 고양이"),
        ("a cat 猫s here", "cat 猫"),
        ("a 고양이 bad here", "고양이 bad"),
    ],
)
def test_a_phrase_mixing_scripts_is_bounded_by_its_last_letter(text: str, banned: str) -> None:
    assert find_banned_rendering([renderings(text)], {banned}) == banned


def test_a_phrase_ending_in_a_spaced_letter_is_not_found_inside_a_longer_word() -> None:
    assert find_banned_rendering([renderings("a 고양이 badly here")], {"고양이 bad"}) is None
    assert find_banned_rendering([renderings("a 猫 cats here")], {"猫 cat"}) is None
    assert find_banned_rendering([renderings("a r2dx here")], {"r2d"}) is None
    assert find_banned_rendering([renderings("a r2d here")], {"r2d"}) == "r2d"


def test_a_word_a_choice_ends_with_is_whole_only_if_the_text_after_the_choice_says_so() -> None:
    """``[cat|dog]s`` renders ``cats`` or ``dogs``: neither holds the whole word ``cat``."""
    assert find_banned_rendering([renderings("a [cat|dog]s here")], {"cat"}) is None
    assert find_banned_rendering([renderings("a [cat|dog] here")], {"cat"}) == "cat"
    assert find_banned_rendering([renderings("a [dog|cat]")], {"cat"}) == "cat"
