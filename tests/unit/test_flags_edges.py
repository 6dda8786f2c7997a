"""Edges of the Midjourney-style flags (``inference.prompts.flags``) that a mutation audit found
no test pinned. Refusals are asserted by type (their wording is the user-facing texts' own
tests' concern)."""

from __future__ import annotations

import pytest

from inference.limits import MAX_SEED
from inference.prompts import InlineFlagError
from inference.prompts.flags import (
    parse_inline_flags,
    picture_seed,
    picture_seeds,
)


@pytest.mark.parametrize("ratio", ["1:21", "21:1"])
def test_an_aspect_ratio_side_may_be_1_or_21(ratio: str) -> None:
    width, height = ratio.split(":")
    assert parse_inline_flags(f"a castle --ar {ratio}")[1].aspect_ratio == (int(width), int(height))


@pytest.mark.parametrize("ratio", ["0:9", "16:0", "22:9", "16:22"])
def test_an_aspect_ratio_side_past_1_to_21_is_refused(ratio: str) -> None:
    with pytest.raises(InlineFlagError):
        parse_inline_flags(f"a castle --ar {ratio}")


@pytest.mark.parametrize("ratio", ["+16:9", "16:+9", "1_6:9", "16:-9"])
def test_an_aspect_ratio_side_is_digits_only(ratio: str) -> None:
    """``int()`` reads a sign and underscores: each side must be digits (``--ar 16:9``)."""
    with pytest.raises(InlineFlagError):
        parse_inline_flags(f"a castle --ar {ratio}")


# Each numeric flag's range, as its usage line gives it: (flag, field, lowest, highest, step).
RANGES = [
    ("seed", "seed", 0, 2**63 - 1, 1),  # past 2**32 - 1 too, as the web UI takes
    ("steps", "steps", 1, 150, 1),
    ("count", "count", 1, 4, 1),
    ("chaos", "chaos", 0, 100, 1),
    ("repeat", "repeat", 1, 4, 1),
    ("stop", "stop", 10, 100, 1),
    ("cfg", "cfg", 0, 30, 0.5),
    ("sref-strength", "sref_strength", 0, 2, 0.5),
]


@pytest.mark.parametrize(("flag", "field", "lowest", "highest", "step"), RANGES)
def test_a_numeric_flag_takes_both_ends_of_its_range(
    flag: str, field: str, lowest: float, highest: float, step: float
) -> None:
    for value in (lowest, highest):
        _, flags = parse_inline_flags(f"a castle --{flag} {value}")
        assert getattr(flags, field) == value


@pytest.mark.parametrize(("flag", "field", "lowest", "highest", "step"), RANGES)
def test_a_numeric_flag_refuses_one_past_either_end(
    flag: str, field: str, lowest: float, highest: float, step: float
) -> None:
    for value in (lowest - step, highest + step):
        if flag == "seed" and value == -1:
            value = -2  # -1 is random, not out of range
        with pytest.raises(InlineFlagError):
            parse_inline_flags(f"a castle --{flag} {value}")


@pytest.mark.parametrize("prompt", ["a castle --v5", "a castle --no cars --v5"])
def test_an_unknown_flag_of_one_letter_and_a_digit_is_refused(prompt: str) -> None:
    """``--v5`` is a flag (a letter after ``--``), unknown: refused, not dropped from the
    prompt or read as words of the flag before it."""
    with pytest.raises(InlineFlagError):
        parse_inline_flags(prompt)


def test_a_batch_s_seeds_go_on_past_32_bits_and_wrap_only_past_the_top() -> None:
    """Picture i is seed + i, past 2**32 - 1 as the web UI counts; only past ``MAX_SEED``
    (the journal's largest integer) does it wrap to 0, a seed a member can give again."""
    assert [picture_seed(2**32 - 1, index) for index in range(2)] == [2**32 - 1, 2**32]
    assert [picture_seed(MAX_SEED - 1, index) for index in range(3)] == [MAX_SEED - 1, MAX_SEED, 0]


def test_a_varied_batch_keeps_its_seed_and_steps_only_the_variation_seed() -> None:
    assert picture_seeds(7, 100, 0.5, 2) == (7, 102)
    assert picture_seeds(7, 100, 0.0, 2) == (9, 102)  # strength 0: no variation
    assert picture_seeds(7, None, 0.5, 2) == (9, None)
