"""A stored picture is reused only under the server's banned words of now: what it was
conditioned on (typed and rendered) is read as a new prompt's text is, and the refusal never
names the word."""

from __future__ import annotations

import threading

import pytest

from bot.history import conditioning_texts
from bot.policy.moderation import (
    BANNED_SINCE,
    STORED_TOO_LONG,
    ConditioningTexts,
    check_banned_since,
    find_banned_rendering,
)
from bot.user_errors import Reason, UserError
from inference.infotext import format_infotext
from inference.prompts import renderings
from inference.prompts.stopping import PlanStopped, stopping_when


@pytest.mark.parametrize(
    "texts",
    [
        # a choice, written wide with a zero-width space
        ConditioningTexts(("a [dog|Ｃａ\u200bt] in the rain",)),
        ConditioningTexts(("a [dog:cat:0.5] in the rain",)),  # the later side of a schedule
        ConditioningTexts(("a (red_cat2:1.3)",)),  # a run of letters, as CLIP reads it
        ConditioningTexts(("a dog", "a cat, drawn from the wildcard")),  # only as rendered
        # The engine reads a negative prompt's extra-network tag as words, as submit does.
        ConditioningTexts(("a dog",), ("<lora:cat:1>",)),
    ],
)
def test_a_word_banned_since_refuses_the_picture_without_naming_it(
    texts: ConditioningTexts,
) -> None:
    with pytest.raises(UserError) as refused:
        check_banned_since(texts, ["cat"])
    assert str(refused.value) == BANNED_SINCE and "cat" not in str(refused.value).lower()
    assert refused.value.reason is Reason.BANNED_WORD


@pytest.mark.parametrize(
    ("texts", "banned"),
    [
        # inside a word; a prompt's extra-network tag (applied, not read)
        (ConditioningTexts(("a concatenated dog <lora:cat:0.8>",), ("blurry",)), ["cat"]),
        (ConditioningTexts(("a cat",)), []),  # nothing banned
    ],
)
def test_pictures_that_meet_the_servers_words_are_reused(
    texts: ConditioningTexts, banned: list[str]
) -> None:
    check_banned_since(texts, banned)


def test_the_texts_read_are_the_typed_prompts_and_each_pictures_rendered_ones() -> None:
    request = {
        "prompt": "a __animal__",
        "negative_prompt": "blurry",
        "options": {"fix_faces_prompt": "a smiling face"},
    }
    infotexts = [
        format_infotext("a cat", "blurry", {"Steps": 2, "Sampler": "Euler", "Seed": 1}),
        format_infotext("a dog", "blurry", {"Steps": 2, "Sampler": "Euler", "Seed": 2}),
    ]
    assert conditioning_texts(request, infotexts) == ConditioningTexts(
        ("a __animal__", "a smiling face", "a cat", "a dog"), ("blurry",)
    )


def test_stored_texts_with_too_many_combinations_are_not_the_members_to_simplify() -> None:
    """They passed when typed (under the words of then): refused in the stored picture's own
    words, not "simplify it"."""
    with pytest.raises(UserError) as refused:
        check_banned_since(ConditioningTexts(("[a|b]" * 30,)), ["a much longer banned phrase"])
    assert str(refused.value) == STORED_TOO_LONG


def test_reading_for_banned_words_stops_once_nobody_waits() -> None:
    """Each part of a rendering is a checkpoint: a stored check past its budget frees its
    thread instead of reading 34 long texts on."""
    stop = threading.Event()
    stop.set()
    read = [renderings("a red boat, " * 50)]
    with pytest.raises(PlanStopped):
        stopping_when(stop, find_banned_rendering, read, ["zebra"])
