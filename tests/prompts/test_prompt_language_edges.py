"""Edges of the prompt language that a mutation audit found no test pinned. Refusals are
asserted by type (their wording is the user-facing texts' own tests' concern)."""

from __future__ import annotations

import pytest

from inference.prompts import NestingError, build_plan
from inference.prompts.attention import MAX_ATTENTION_NESTING, attention_depth, weigh_attention


@pytest.mark.parametrize("opening", ["(", "["])
def test_words_between_opening_brackets_do_not_lower_the_depth(opening: str) -> None:
    """``[a [a [a ...`` nests as deep as ``[[[a``: the words between close nothing."""
    assert attention_depth(f"{opening}a " * MAX_ATTENTION_NESTING) == MAX_ATTENTION_NESTING
    with pytest.raises(NestingError):
        build_plan(f"{opening}a " * (MAX_ATTENTION_NESTING + 1), seed=1)


def test_closed_brackets_in_a_row_are_one_deep() -> None:
    assert attention_depth("[a] " * (2 * MAX_ATTENTION_NESTING)) == 1
    assert attention_depth("(a) " * (2 * MAX_ATTENTION_NESTING)) == 1
    assert attention_depth("(a:1.2) " * (2 * MAX_ATTENTION_NESTING)) == 1
    assert attention_depth("] ) a") == 0  # a closing bracket with none open closes nothing


def test_merged_pieces_keep_the_first_weight_as_typed() -> None:
    """A refusal quotes a weight as the member typed it (``1.50``), merged pieces included."""
    assert weigh_attention("(a:1.50)(b:1.50)") == [("ab", 1.5, "1.50")]


@pytest.mark.parametrize(("opening", "closing"), [("(", ")"), ("[", "]"), ("(", ":1.1)")])
def test_a_closing_bracket_closes_one_level(opening: str, closing: str) -> None:
    """``((a) ((b`` is 3 deep: each closing bracket closes one level, never two."""
    text = f"{opening}{opening}a{closing} {opening}{opening}b"
    assert attention_depth(text) == 3
