import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.requests import (
    MAX_SEED,
    ImagineOptions,
    RequestError,
    build_request,
    parse_size,
    reroll,
    resolve_seed,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512x768", (512, 768)),
        (" 640 X 384 ", (640, 384)),
        ("1:1", (512, 512)),
        ("16:9", (704, 384)),
        ("9:16", (384, 704)),
        ("2:3", (448, 640)),
    ],
)
def test_sizes_and_aspect_ratios(text: str, expected: tuple[int, int]) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("500x512", "multiple of 8"),
        ("4096x512", "between 64 and 2048"),
        ("30:1", "between 1 and 21"),
        ("big", "neither WxH"),
    ],
)
def test_bad_sizes_explain_the_accepted_form(text: str, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        parse_size(text)


@given(st.integers(1, 21), st.integers(1, 21))
def test_aspect_ratios_keep_area_and_multiples_of_64(w: int, h: int) -> None:
    width, height = parse_size(f"{w}:{h}")
    assert width % 64 == 0 and height % 64 == 0
    assert width >= 64 and height >= 64
    if 1 / 4 <= w / h <= 4:
        assert 0.7 <= width * height / 512**2 <= 1.3


def test_seed_minus_one_becomes_concrete_and_bounds_are_named() -> None:
    assert 0 <= resolve_seed(-1) <= MAX_SEED
    assert resolve_seed(7) == 7
    with pytest.raises(RequestError, match="between 0 and 4294967295"):
        resolve_seed(MAX_SEED + 1)


def test_build_request_fills_defaults_and_validates() -> None:
    request = build_request(ImagineOptions(prompt="  a cat ", seed=3, size="16:9"))
    assert (request.prompt, request.seed, request.steps, request.sampler) == (
        "a cat",
        3,
        20,
        "Euler a",
    )
    assert (request.width, request.height) == (704, 384)
    with pytest.raises(RequestError, match="steps must be between 1 and 150"):
        build_request(ImagineOptions(prompt="x", steps=0))
    with pytest.raises(RequestError, match="prompt is empty"):
        build_request(ImagineOptions(prompt="   "))


def test_reroll_changes_only_the_seed() -> None:
    request = build_request(ImagineOptions(prompt="a cat", seed=3))
    rolled = reroll(request)
    assert rolled.seed != request.seed or reroll(request).seed != request.seed
    assert rolled.prompt == request.prompt and rolled.steps == request.steps
