"""``split_subprompts`` (``AND`` and trailing ``:weight``) reads a prompt in linear work: the
same split as the web UI's regex, without its cost in the square of a run of spaces."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from inference.prompts import PromptError, composition
from inference.prompts.composition import MAX_SUBPROMPTS, split_subprompts
from inference.prompts.weights import MAX_WEIGHT

# The split as it was (and as the web UI reads it): the reference the new one must equal.
_AND = re.compile(r"\bAND\b")
_TRAILING_WEIGHT = re.compile(r"^(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$", re.DOTALL)


def regex_split(prompt: str) -> list[tuple[str, float]]:
    split = []
    for part in _AND.split(prompt):
        match = _TRAILING_WEIGHT.match(part)
        assert match is not None
        text, weight = match.groups()
        split.append((text, float(weight) if weight is not None else 1.0))
    return split


# What weights are written with, and what could be mistaken for them: other digits (Arabic-
# Indic), other whitespace (em space, file separator), signs, colons, dots, AND.
_PIECES = st.sampled_from(
    [
        " ",
        "  ",
        "\n",
        "\t",
        "\u2003",
        "\x1c",
        ":",
        ".",
        "+",
        "-",
        "0",
        "1",
        "25",
        "\u0663",
        "a",
        "cat",
        "AND",
        " AND ",
        "ANDy",
        "(",
        ")",
        "_",
    ]
)


def assert_split_as_the_web_ui(prompt: str) -> None:
    """The web UI's split, or (a weight it reads past the bound, or weights adding up past it
    without their signs) a refusal naming the range."""
    expected = regex_split(prompt)
    if all(-MAX_WEIGHT <= weight <= MAX_WEIGHT for _, weight in expected):
        if sum(abs(weight) for _, weight in expected) <= MAX_WEIGHT:
            assert [(s.text, s.weight) for s in split_subprompts(prompt)] == expected
        else:
            with pytest.raises(PromptError, match=r"AND parts add up to .*; together they may be"):
                split_subprompts(prompt)
    else:
        with pytest.raises(PromptError, match="a weight must be a number between -100 and 100"):
            split_subprompts(prompt)


@given(st.lists(_PIECES, max_size=24).map("".join))
def test_the_split_is_the_web_uis_on_any_mix_of_weights_and_whitespace(prompt: str) -> None:
    assume(len(_AND.split(prompt)) <= MAX_SUBPROMPTS)
    assert_split_as_the_web_ui(prompt)


@given(st.text(max_size=60))
def test_the_split_is_the_web_uis_on_any_text(prompt: str) -> None:
    assume(len(_AND.split(prompt)) <= MAX_SUBPROMPTS)
    assert_split_as_the_web_ui(prompt)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a cat:1.5", [("a cat", 1.5)]),
        ("a cat AND a dog :0.5  ", [("a cat", 1.0), (" a dog", 0.5)]),
        ("a: -.5", [("a", -0.5)]),
        ("a::1", [("a:", 1.0)]),
        ("a:1.2.3", [("a:1.2.3", 1.0)]),
        ("a:.", [("a:.", 1.0)]),
        ("ratio 16:9", [("ratio 16", 9.0)]),  # as the web UI reads it
    ],
)
def test_weights_as_written(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert [(s.text, s.weight) for s in split_subprompts(prompt)] == expected


def lines_run(function: Callable[[], Any]) -> int:
    """How many lines of ``inference.prompts.composition`` ``function`` runs."""
    count = 0

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if frame.f_code.co_filename != composition.__file__:
            return None
        if event == "line":
            count += 1
        return trace

    sys.settrace(trace)
    try:
        function()
    finally:
        sys.settrace(None)
    return count


# The old regex needed about n**2 / 2 steps for a run of n spaces: hours at this length
# (0.9 s at 16,000). The timeout is only a backstop; the bound is counted in lines run.
@pytest.mark.timeout(60)
def test_the_work_grows_with_the_weight_written_not_with_runs_of_spaces() -> None:
    def split(prompt: str) -> Callable[[], Any]:
        return lambda: split_subprompts(prompt)

    short = lines_run(split("a" + " " * 10 + "b :1.5 AND c" + " " * 10))
    spaced = lines_run(split("a" + " " * 1_000_000 + "b :1.5 AND c" + " " * 1_000_000))
    assert spaced == short
    # Only the digits of a weight are read one at a time: each once (a weight of 1.0).
    digits = lines_run(split("a:" + "0" * 9_999 + "1"))
    assert digits - short <= 2 * 10_000
