"""Each request range at both of its ends: the last value inside is accepted, the first outside
refused (a mutation audit found ``<`` and ``<=`` swappable in these checks with no test noticing).
Refusals are asserted by type only: their wording is the user-facing texts' own tests' concern."""

from __future__ import annotations

import pytest

from bot.requests import (
    MAX_PROMPT_CHARS,
    ImagineOptions,
    RequestError,
    build_request,
    build_requests,
    check_prompt_length,
    check_saved_values,
    parse_size,
    resolve_seed,
)
from inference.limits import (
    MAX_CLIP_SKIP,
    MAX_COUNT,
    MAX_SEED,
    MAX_SIZE,
    MIN_SIZE,
    SIZE_MULTIPLE,
)


@pytest.mark.parametrize("seed", [0, 1, MAX_SEED])
def test_a_seed_at_either_end_of_the_range_is_kept(seed: int) -> None:
    assert resolve_seed(seed) == seed


@pytest.mark.parametrize("seed", [2**32, 2**32 + 1])
def test_a_seed_past_32_bits_is_kept_as_given(seed: int) -> None:
    """The web UI's seed past 2**32 - 1, typed: rendered and recorded as it is."""
    assert resolve_seed(seed) == seed


@pytest.mark.parametrize("seed", [-2, MAX_SEED + 1])
def test_a_seed_just_past_the_range_is_refused(seed: int) -> None:
    with pytest.raises(RequestError):
        resolve_seed(seed)


@pytest.mark.parametrize(
    "text",
    [
        f"{MIN_SIZE}x{MIN_SIZE}",
        f"{MAX_SIZE}x{MAX_SIZE}",
        f"{MIN_SIZE + SIZE_MULTIPLE}x{MAX_SIZE - SIZE_MULTIPLE}",
    ],
)
def test_sizes_at_the_ends_of_the_range_are_accepted(text: str) -> None:
    width, height = (int(side) for side in text.split("x"))
    assert parse_size(text) == (width, height)


@pytest.mark.parametrize(
    "text",
    [
        f"{MIN_SIZE - SIZE_MULTIPLE}x{MIN_SIZE}",
        f"{MIN_SIZE}x{MIN_SIZE - SIZE_MULTIPLE}",
        f"{MAX_SIZE + SIZE_MULTIPLE}x{MIN_SIZE}",
        f"{MIN_SIZE}x{MAX_SIZE + SIZE_MULTIPLE}",
        f"{MIN_SIZE + SIZE_MULTIPLE // 2}x{MIN_SIZE}",
        f"{MIN_SIZE}x{MIN_SIZE + 1}",
    ],
)
def test_sizes_just_past_the_range_or_off_the_multiple_are_refused(text: str) -> None:
    with pytest.raises(RequestError):
        parse_size(text)


def test_a_side_of_six_digits_is_read_and_one_of_seven_is_refused_unread() -> None:
    assert parse_size("000512x000768") == (512, 768)
    with pytest.raises(RequestError):
        parse_size("0000512x512")
    with pytest.raises(RequestError):
        parse_size("512x0000512")


def test_a_prompt_of_the_longest_length_is_accepted_and_one_more_character_refused() -> None:
    check_prompt_length("a" * MAX_PROMPT_CHARS, "prompt")
    with pytest.raises(RequestError):
        check_prompt_length("a" * (MAX_PROMPT_CHARS + 1), "prompt")
    assert build_request(ImagineOptions("a" * MAX_PROMPT_CHARS, seed=1)).prompt == (
        "a" * MAX_PROMPT_CHARS
    )
    with pytest.raises(RequestError):
        build_request(ImagineOptions("a" * (MAX_PROMPT_CHARS + 1), seed=1))


@pytest.mark.parametrize(
    ("steps", "cfg", "clip_skip"),
    [(1, 0, 1), (150, 30, MAX_CLIP_SKIP), (1, 0.0, MAX_CLIP_SKIP), (150, 30.0, 1)],
)
def test_saved_values_at_either_end_are_accepted(steps: int, cfg: float, clip_skip: int) -> None:
    check_saved_values(steps, cfg, f"{MIN_SIZE}x{MAX_SIZE}", clip_skip, None)


@pytest.mark.parametrize(
    ("steps", "cfg", "clip_skip"),
    [
        (0, None, None),
        (151, None, None),
        (None, -0.1, None),
        (None, 30.1, None),
        (None, None, 0),
        (None, None, MAX_CLIP_SKIP + 1),
    ],
)
def test_saved_values_just_past_either_end_are_refused(
    steps: int | None, cfg: float | None, clip_skip: int | None
) -> None:
    with pytest.raises(RequestError):
        check_saved_values(steps, cfg, None, clip_skip, None)


def test_clip_skip_at_either_end_reaches_the_request_and_past_them_is_refused() -> None:
    for clip_skip in (1, MAX_CLIP_SKIP):
        request = build_request(ImagineOptions("a cat", seed=1, clip_skip=clip_skip))
        assert request.options["clip_skip"] == clip_skip
    for clip_skip in (0, MAX_CLIP_SKIP + 1):
        with pytest.raises(RequestError):
            build_request(ImagineOptions("a cat", seed=1, clip_skip=clip_skip))


def test_a_count_at_either_end_is_kept_and_zero_is_refused() -> None:
    assert MAX_COUNT == 4  # the Discord contract: 1-4 pictures a request (a 2x2 grid)
    assert build_request(ImagineOptions("a cat", seed=1, count=1)).count == 1
    assert build_request(ImagineOptions("a cat", seed=1, count=4)).count == 4
    assert build_request(ImagineOptions("a cat --count 4", seed=1)).count == 4
    for count in (0, 5):
        with pytest.raises(RequestError):
            build_request(ImagineOptions("a cat", seed=1, count=count))


def test_stop_at_100_runs_every_step_and_below_it_stops_early() -> None:
    assert "stop" not in build_request(ImagineOptions("a cat --stop 100", seed=1)).options
    assert build_request(ImagineOptions("a cat --stop 99", seed=1)).options["stop"] == 99
    assert build_request(ImagineOptions("a cat --stop 10", seed=1)).options["stop"] == 10


def test_repeat_1_outside_imagine_adds_no_note_and_repeat_2_does() -> None:
    assert not any(
        "--repeat" in note for note in build_request(ImagineOptions("a --repeat 1")).notes
    )
    assert any("--repeat" in note for note in build_request(ImagineOptions("a --repeat 2")).notes)


def test_a_repeated_typed_seed_wraps_past_the_largest_to_zero() -> None:
    jobs = build_requests(ImagineOptions(f"a cat --repeat 3 --seed {MAX_SEED - 1} --count 1"))
    assert [job.seed for job in jobs] == [MAX_SEED - 1, MAX_SEED, 0]
