"""Midjourney-style inline flags and aspect-ratio sizes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference.prompts import (
    InlineFlagError,
    InlineFlags,
    parse_inline_flags,
    resolve_flags,
    resolve_size,
)
from inference.prompts.flags import insert_before_flags


def test_all_flags() -> None:
    prompt, flags = parse_inline_flags(
        "a castle, dusk --ar 16:9 --seed 5 --no cars, people --steps 30 --cfg 6.5 "
        '--sampler "DPM++ 2M Karras" --model sdxl-base --count 2'
    )
    assert prompt == "a castle, dusk"
    assert flags == InlineFlags(
        (16, 9), 5, "cars, people", 30, 6.5, "DPM++ 2M Karras", "sdxl-base", 2
    )


@pytest.mark.parametrize(
    ("prompt", "expected_prompt", "expected"),
    [
        ("a cat", "a cat", InlineFlags()),
        ("a cat --seed -1", "a cat", InlineFlags(seed=-1)),
        ("a cat --aspect 2:3", "a cat", InlineFlags(aspect_ratio=(2, 3))),
        ("a--b cat --sampler Euler", "a--b cat", InlineFlags(sampler="Euler")),
        ("a cat --no people's faces", "a cat", InlineFlags(no="people's faces")),
        ("--steps 1", "", InlineFlags(steps=1)),
        ("a -- b", "a -- b", InlineFlags()),
    ],
)
def test_flag_parsing(prompt: str, expected_prompt: str, expected: InlineFlags) -> None:
    assert parse_inline_flags(prompt) == (expected_prompt, expected)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a --v 5", "unknown flag --v: known flags are --ar, --seed, --no, --steps"),
        (
            "a --ar 22:9",
            "bad value '22:9' for --ar: expected --ar W:H with whole numbers between 1 and 21",
        ),
        ("a --ar 16x9", "bad value '16x9' for --ar"),
        ("a --ar 1:²", "bad value '1:²' for --ar"),  # a digit int() does not read
        ("a --ar 1:" + "2" * 5_000, "for --ar: expected --ar W:H"),  # past int()'s digits
        (
            "a --steps 0",
            "bad value '0' for --steps: expected --steps N with N a whole number between 1 and 150",
        ),
        ("a --steps 151", "between 1 and 150"),
        (
            "a --cfg 31",
            "bad value '31' for --cfg: expected --cfg X with X a number between 0 and 30",
        ),
        ("a --cfg inf", "--cfg"),
        ("a --count 5", "N a whole number between 1 and 4"),
        (
            "a --seed 9223372036854775808",
            "between 0 and 9223372036854775807, or -1 for a random seed",
        ),
        ("a --seed -2", "--seed"),
        ("a --sampler DPM++ 2M", "quoted when it has spaces"),
        ("a --no", "--no followed by"),
        ("a --seed 1 --seed 2", "--seed is given twice"),
        ("a --steps", "--steps takes one value"),
    ],
)
def test_flag_errors_teach(prompt: str, message: str) -> None:
    with pytest.raises(InlineFlagError) as caught:
        parse_inline_flags(prompt)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("typed", "repeated"),
    [
        pytest.param("--ar 1:" + "2" * 5_000, "bad value '1:222", id="a bad value"),
        pytest.param("--steps " + "x " * 3_000, "got 'x x x", id="values past one"),
        pytest.param("--" + "v" * 5_000, "unknown flag --vvv", id="an unknown flag"),
    ],
)
def test_a_flag_error_repeats_only_the_start_of_what_was_typed(typed: str, repeated: str) -> None:
    with pytest.raises(InlineFlagError) as caught:
        parse_inline_flags(f"a cat {typed}")
    error = str(caught.value)
    assert repeated in error and "…" in error and len(error) < 400


def test_fast_is_a_flag_without_a_value() -> None:
    assert parse_inline_flags("a cat --fast") == ("a cat", InlineFlags(fast=True))
    assert parse_inline_flags("a cat --fast --seed 3") == ("a cat", InlineFlags(seed=3, fast=True))
    assert parse_inline_flags("a cat")[1].fast is None  # absent: never on by default
    with pytest.raises(InlineFlagError, match="bad value 'yes' for --fast: expected --fast alone"):
        parse_inline_flags("a cat --fast yes")
    with pytest.raises(InlineFlagError, match="--fast is given twice"):
        parse_inline_flags("a cat --fast --fast")


def test_explicit_options_win_and_conflicts_are_reported() -> None:
    typed = InlineFlags(seed=5, steps=30, no="cars")
    merged, warnings = resolve_flags(typed, InlineFlags(seed=7, cfg=4.0))
    assert merged == InlineFlags(seed=7, steps=30, no="cars", cfg=4.0)
    assert warnings == ["the seed option (7) overrides the prompt's flag (5)"]
    assert resolve_flags(typed, InlineFlags(seed=5)) == (typed, [])


@pytest.mark.parametrize(
    ("aspect", "base", "multiple", "expected"),
    [
        ("1:1", 512 * 512, 64, (512, 512)),
        ("16:9", 512 * 512, 64, (704, 384)),
        ("9:16", 512 * 512, 64, (384, 704)),
        ("2:3", 1024 * 1024, 64, (832, 1280)),
        ((21, 1), 512 * 512, 64, (2368, 128)),
        ("3:2", 512 * 512, 8, (624, 416)),
    ],
)
def test_resolve_size(
    aspect: str | tuple[int, int], base: int, multiple: int, expected: tuple[int, int]
) -> None:
    width, height = resolve_size(aspect, base, multiple)
    assert (width, height) == expected
    assert width % multiple == 0 and height % multiple == 0
    assert abs(width * height - base) / base < 0.2  # extreme ratios lose most to rounding


def test_resolve_size_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        resolve_size("1:1", multiple_of=4)
    with pytest.raises(InlineFlagError, match="between 1 and 21"):
        resolve_size("0:1")


def test_text_added_to_a_prompt_goes_before_its_flags() -> None:
    assert insert_before_flags("a cat --ar 16:9 --seed 5", "<lora:x:0.8>") == (
        "a cat <lora:x:0.8> --ar 16:9 --seed 5"
    )
    assert insert_before_flags("a cat", "<lora:x:0.8>") == "a cat <lora:x:0.8>"


@given(
    words=st.text(alphabet="abc ,()-", max_size=30),
    seed=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
)
def test_added_text_keeps_the_flags_and_joins_the_words(words: str, seed: int | None) -> None:
    prompt = words if seed is None else f"{words} --seed {seed}"
    try:
        before_words, before_flags = parse_inline_flags(prompt)
    except InlineFlagError:
        return  # "-a" style words: refused with or without the added text
    after_words, after_flags = parse_inline_flags(insert_before_flags(prompt, "<lora:x:1>"))
    assert after_flags == before_flags
    assert after_words.endswith("<lora:x:1>")
    assert after_words.removesuffix("<lora:x:1>").strip() == before_words.strip()
