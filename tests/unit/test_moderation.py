"""Guild rules on a request (bot.policy.moderation), without Discord."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.policy.moderation import (
    NsfwPolicy,
    check_request,
    find_banned_rendering,
    normalise,
)
from bot.user_errors import UserError
from inference.prompts import PromptError, build_plan
from inference.prompts.attention import BREAK_MARKER


def banned_in(texts: list[str], banned: set[str]) -> str | None:
    """The banned word found in plain texts (renderings without choices)."""
    return find_banned_rendering([(text,) for text in texts], banned)


def rules(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": None,
        "channel_id": 1,
        "channel_is_age_restricted": False,
        "allowed_channels": set(),
        "allowed_models": set(),
        "nsfw_policy": NsfwPolicy.ALLOW,
    }
    return base | overrides


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("An UGLY dog", "ugly"),
        ("uglyish dog", None),
        ("(ugly:1.3)", "ugly"),
        ("a big bad wolf", "bad wolf"),
        ("a big bad wolfhound", None),
    ],
)
def test_banned_words_match_whole_words_in_any_case(text: str, found: str | None) -> None:
    assert banned_in([text], {"ugly", "bad wolf"}) == found


def test_everything_is_allowed_by_default() -> None:
    check_request(**rules())


def test_channel_and_model_lists() -> None:
    with pytest.raises(UserError, match="not enabled in this channel; use it in <#2>"):
        check_request(**rules(allowed_channels={2}))
    check_request(**rules(allowed_channels={1, 2}))
    with pytest.raises(UserError, match="You may use: a, b"):
        check_request(**rules(model="c", allowed_models={"b", "a"}))
    check_request(**rules(model="a", allowed_models={"a"}))


def test_age_restricted_only_policy() -> None:
    with pytest.raises(UserError, match="age-restricted"):
        check_request(**rules(nsfw_policy=NsfwPolicy.AGE_RESTRICTED_ONLY))
    check_request(
        **rules(nsfw_policy=NsfwPolicy.AGE_RESTRICTED_ONLY, channel_is_age_restricted=True)
    )


# --- what the model reads, not what was typed ------------------------------------------------

INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u034f", "\ufe0f"]


def test_normalise_removes_invisible_characters_folds_width_and_case() -> None:
    assert normalise("ｃＡ\u200bT\u00ad  \tＤog") == "cat dog"
    assert normalise("STRASSE") == normalise("straße")


@settings(max_examples=300)
@given(
    word=st.sampled_from(["cat", "gore", "bad wolf"]),
    inserts=st.lists(st.tuples(st.integers(0, 8), st.sampled_from(INVISIBLE)), max_size=5),
    upper=st.booleans(),
    fullwidth=st.booleans(),
)
def test_invisible_characters_anywhere_in_a_banned_word_are_still_caught(
    word: str, inserts: list[tuple[int, str]], upper: bool, fullwidth: bool
) -> None:
    disguised = word.upper() if upper else word
    if fullwidth:  # NFKC folds full-width letters to ASCII
        disguised = "".join(chr(ord(c) + 0xFEE0) if c.isalpha() else c for c in disguised)
    for position, char in inserts:
        at = position % (len(disguised) + 1)
        disguised = disguised[:at] + char + disguised[at:]
    assert banned_in([f"a {disguised}, photo"], {word}) == word
    assert banned_in([f"a x{disguised}, photo"], {word}) is None  # whole words only


@pytest.mark.parametrize(
    "prompt",
    [
        "a {c|c}at",
        "a c<x:y>at",
        "a [c|c]at",
        "a [c|d]at",
        "a [dog:cat:0.5] on a mat",
        "a [cat::3]",
        "a [c|x][a|y]t",
        "a (c:1.2)at",
        "a [[c|d]at:dog:2]",
        "a dog AND a cat:0.5",
        "a c)cat",
        "a __cat__",  # no wildcards folder: the model reads the name
        "a red_cat2",  # CLIP splits words at "_" and digits
    ],
)
def test_every_text_the_prompt_can_render_is_checked(prompt: str) -> None:
    assert banned_in([prompt], {"cat"}) is None or "cat" in prompt
    plan = build_plan(prompt, seed=1)
    assert find_banned_rendering(plan.renderings(), {"cat"}) == "cat"


@pytest.mark.parametrize(
    "prompt", ["a [c|d]ats", "con[c|d]at", "a [dog:cats:0.5]", "c, at", "a c\\(at"]
)
def test_renderings_keep_whole_word_matching(prompt: str) -> None:
    assert find_banned_rendering(build_plan(prompt, seed=1).renderings(), {"cat"}) is None


def test_the_negative_prompt_is_checked_after_expansion() -> None:
    assert find_banned_rendering(build_plan("a dog", "no GORE").renderings(), {"gore"}) == "gore"
    plan = build_plan("a dog", "{go|go}re", seed=1)
    assert find_banned_rendering(plan.renderings(), {"gore"}) == "gore"


def test_a_prompt_with_too_many_combinations_to_check_is_refused() -> None:
    plan = build_plan("[a|b]" * 30, seed=1)
    with pytest.raises(UserError, match="more than 4,096"):
        find_banned_rendering(plan.renderings(), {"a much longer banned phrase"})
    assert find_banned_rendering(plan.renderings(), set()) is None  # nothing to check


_PIECES = st.sampled_from(
    [
        *("c", "a", "t", "cat", "CAT", "ｃ", " ", ",", "\u200b", "<x:y>", "__w__"),
        *("[", "]", "|", ":", "::", "(", ")", "{", "}", "\\", "\\(", "1", "0.5", "2]"),
        *("[c:", "[c|", ":0.5]", "a:1.1)", " AND ", " BREAK "),
    ]
)


@settings(max_examples=2000, deadline=None)
@given(prompt=st.lists(_PIECES, max_size=16).map("".join), steps=st.integers(1, 8))
def test_whatever_any_step_shows_the_text_encoder_is_checked(prompt: str, steps: int) -> None:
    try:
        plan = build_plan(prompt, seed=1, steps=steps)
    except PromptError:
        return
    shown = [
        "".join(" " if (text, weight) == BREAK_MARKER else text for text, weight in entry.pieces)
        for sub in (*plan.subprompts, plan.negative)
        for entry in sub.schedule
    ]
    if banned_in(shown, {"cat"}) is not None:
        assert find_banned_rendering(plan.renderings(), {"cat"}) == "cat", shown
