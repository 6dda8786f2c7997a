"""Prompt editing and alternation schedules, from the web UI wiki's documented behaviour."""

from __future__ import annotations

import itertools
import time

import pytest

from inference.prompts import schedule_prompt


def timeline(prompt: str, steps: int = 10, **options: bool) -> list[tuple[int, str]]:
    return [(s.until_step, s.text) for s in schedule_prompt(prompt, steps, **options)]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("test", [(10, "test")]),
        ("", [(10, "")]),
        ("a [b:3]", [(3, "a "), (10, "a b")]),
        ("a [b: 3]", [(3, "a "), (10, "a b")]),
        ("a [b:3 ]", [(3, "a "), (10, "a b")]),
        ("a [b::3]", [(3, "a b"), (10, "a ")]),
        ("a [b:c:3]", [(3, "a b"), (10, "a c")]),
        ("a [[[b]]:2]", [(2, "a "), (10, "a [[b]]")]),
        ("[(a:2):3]", [(3, ""), (10, "(a:2)")]),
        ("a [b : c : 1] d", [(1, "a b  d"), (10, "a  c  d")]),
        ("a[b:[c:d:2]:1]e", [(1, "abe"), (2, "ace"), (10, "ade")]),
        ("a [unbalanced", [(10, "a [unbalanced")]),
        ("a [b:.5] c", [(5, "a  c"), (10, "a b c")]),
        ("a [b:0.25] c", [(2, "a  c"), (10, "a b c")]),  # 2.5 truncates to 2
        ("a [b:0.99] c", [(9, "a  c"), (10, "a b c")]),
        ("[a:b:1.0]", [(10, "a")]),  # a decimal point means a fraction: all 10 steps
        ("[a:b:1.5]", [(10, "a")]),  # capped at the last step
        ("[a:b:10]", [(10, "a")]),
        ("[a:b:25]", [(10, "a")]),
        ("[a:b:0]", [(10, "b")]),
        ("[a:b:-2]", [(10, "b")]),
        ("[a:b:+4]", [(4, "a"), (10, "b")]),
        ("[a:b:2e0]", [(2, "a"), (10, "b")]),
        ("[a:b:c]", [(10, "[a:b:c]")]),  # not a number: literal text
        ("((a][:b:c [d:3]", [(3, "((a][:b:c "), (10, "((a][:b:c d")]),
        ("[a:b:c:3]", [(10, "[a:b:c:3]")]),
        ("(a [b:c:5] d:1.2)", [(5, "(a b d:1.2)"), (10, "(a c d:1.2)")]),
        ("[a:[b:c:8]:4]", [(4, "a"), (8, "b"), (10, "c")]),
        ("[[a:b:2]:[c:d:6]:4]", [(2, "a"), (4, "b"), (6, "c"), (10, "d")]),
        ("a|b", [(10, "a|b")]),  # '|' outside brackets: the whole prompt is literal
        ("a|b [c:2]", [(10, "a|b [c:2]")]),
        ("trailing \\", [(10, "trailing \\")]),
        ("\\[a:b:2\\]", [(10, "\\[a:b:2\\]")]),
        ("[a|b", [(10, "[a|b")]),
        ("[a:b:2", [(10, "[a:b:2")]),
        ("x)) [a:2] ((", [(2, "x))  (("), (10, "x)) a ((")]),
        ("[a:2]\n[b:3]", [(2, "\n"), (3, "a\n"), (10, "a\nb")]),
    ],
)
def test_editing(prompt: str, expected: list[tuple[int, str]]) -> None:
    assert timeline(prompt) == expected


def test_fraction_uses_steps() -> None:
    assert timeline("[a:b:0.5]", steps=30) == [(15, "a"), (30, "b")]
    assert timeline("[a:b:0.5]", steps=1) == [(1, "b")]


def test_legacy_timeline_reads_one_and_more_as_step_numbers() -> None:
    assert timeline("[a:b:1.5]", legacy_timeline=True) == [(1, "a"), (10, "b")]
    assert timeline("[a:b:0.5]", legacy_timeline=True) == [(5, "a"), (10, "b")]


def hires_timeline(
    prompt: str, steps: int, first_pass_steps: int, legacy_timeline: bool = False
) -> list[tuple[int, str]]:
    segments = schedule_prompt(
        prompt, steps, first_pass_steps=first_pass_steps, legacy_timeline=legacy_timeline
    )
    return [(s.until_step, s.text) for s in segments]


def test_the_hires_pass_counts_on_from_the_first_pass() -> None:
    """The web UI's doctests (10 + 10 steps): a fraction counts from 1.0 and a step number
    from the first pass's steps, so what switched in the first pass stays switched."""
    assert hires_timeline("a [b:.5] c", 10, 10) == [(10, "a b c")]
    assert hires_timeline("a [b:1.5] c", 10, 10) == [(5, "a  c"), (10, "a b c")]
    assert hires_timeline("[dog:cat:0.5]", 10, 10) == [(10, "cat")]
    assert hires_timeline("[dog:cat:5]", 10, 10) == [(10, "cat")]
    assert hires_timeline("[dog:cat:15]", 20, 10) == [(5, "dog"), (20, "cat")]
    # Past the end of both passes: never switches.
    assert hires_timeline("[dog:cat:2.0]", 8, 10) == [(8, "dog")]
    assert hires_timeline("[dog:cat:30]", 8, 10) == [(8, "dog")]
    # Alternation cycles over the hires steps from their first.
    assert hires_timeline("[a|b]", 3, 10) == [(1, "a"), (2, "b"), (3, "a")]
    # The old rule plans the hires pass as a first pass of the first pass's steps.
    assert hires_timeline("[a:b:0.5]", 4, 10, legacy_timeline=True) == [(5, "a"), (10, "b")]


def test_alternation_three_options_over_ten_steps() -> None:
    expected = [(s, "a " + "xyz"[(s - 1) % 3] + " b") for s in range(1, 11)]
    assert timeline("a [x|y|z] b") == expected


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("[fe|]male", [(s, "female" if s % 2 else "male") for s in range(1, 11)]),
        (
            "[fe|||]male",
            [(1, "female"), (4, "male"), (5, "female"), (8, "male"), (9, "female"), (10, "male")],
        ),
        ("[a|(b:1.1)]", [(s, "a" if s % 2 else "(b:1.1)") for s in range(1, 11)]),
        ("[a|a]", [(10, "a")]),
        ("[|]", [(10, "")]),
        (
            "[a|[b:c:4]]",
            [
                (1, "a"),
                (2, "b"),
                (3, "a"),
                (4, "b"),
                (5, "a"),
                (6, "c"),
                (7, "a"),
                (8, "c"),
                (9, "a"),
                (10, "c"),
            ],
        ),
        ("[[a|b]:c:4]", [(1, "a"), (2, "b"), (3, "a"), (4, "b"), (10, "c")]),
        ("[a|b:2]", [(10, "[a|b:2]")]),
    ],
)
def test_alternation(prompt: str, expected: list[tuple[int, str]]) -> None:
    assert timeline(prompt) == expected


def test_segments_cover_every_step_once() -> None:
    segments = schedule_prompt("[a|b|c] [d:e:0.3] [f::7]", 20)
    assert segments[-1].until_step == 20
    steps = [s.until_step for s in segments]
    assert steps == sorted(set(steps))
    assert all(a.text != b.text for a, b in itertools.pairwise(segments))


def test_steps_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        schedule_prompt("a", 0)


def test_deep_nesting_does_not_raise() -> None:
    prompt = "[" * 3000 + "a:b:2" + "]" * 3000
    assert schedule_prompt(prompt, 10)[-1].until_step == 10
    assert schedule_prompt("(" * 3000, 10) == schedule_prompt("(" * 3000, 10)


def test_six_thousand_characters_fast() -> None:
    prompt = ("[castle:ruins:0.4], (sunset:1.2), [oil|ink] painting, " * 120)[:6000]
    start = time.perf_counter()
    segments = schedule_prompt(prompt, 30)
    assert time.perf_counter() - start < 1.0
    assert len(segments) == 30
    assert segments[0].text.count("castle") == prompt.count("[castle")
