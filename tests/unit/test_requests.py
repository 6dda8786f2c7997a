import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.requests import (
    MAX_SEED,
    ImagineOptions,
    RequestError,
    build_request,
    parse_size,
    picture_alone,
    reroll,
    resolve_seed,
)
from cogs.imagine import ImagineCog
from inference.sizes import default_size
from inference.types import RenderRequest
from inference.validation import validate_request


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512x768", (512, 768)),
        (" 640 X 384 ", (640, 384)),
        ("1:1", "1:1"),
        (" 16 : 9 ", "16:9"),
    ],
)
def test_sizes_and_aspect_ratios(text: str, expected: tuple[int, int] | str) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("500x512", "multiple of 8"),
        ("4096x512", "between 64 and 2048"),
        # Seven digits and more: the side's range, not "neither WxH" (and no int() of them).
        ("1000000x512", "width must be a multiple of 8 between 64 and 2048"),
        ("512x1024000", "height must be a multiple of 8 between 64 and 2048"),
        pytest.param("512x" + "9" * 5_000, "height must be a multiple", id="5,000 digits"),
        ("30:1", "1..21"),
        ("big", "neither WxH"),
    ],
)
def test_bad_sizes_explain_the_accepted_form(text: str, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        parse_size(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("512x" + "9" * 5_000, id="a side"),
        pytest.param("1:" + "2" * 5_000, id="an aspect ratio past int()'s digits"),
        pytest.param("1:²", id="a digit int() does not read"),
        pytest.param("big" * 2_000, id="neither"),
    ],
)
def test_a_bad_size_repeats_only_the_start_of_what_was_typed(text: str) -> None:
    with pytest.raises(RequestError) as refused:
        parse_size(text)
    error = str(refused.value)
    assert error.startswith(f"size '{text[:20]}") and len(error) < 250
    assert ("…" in error) == (len(text) > 100)


@given(st.integers(1, 21), st.integers(1, 21), st.sampled_from([64, 512, 768, 1024]))
def test_aspect_ratios_keep_area_and_model_multiples(w: int, h: int, native: int) -> None:
    width, height = default_size(native, f"{w}:{h}", None)
    multiple = 64 if native >= 512 else 8
    assert width % multiple == 0 and height % multiple == 0
    assert 64 <= width <= 2048 and 64 <= height <= 2048
    if native >= 512 and 1 / 3 <= w / h <= 3:
        assert 0.7 <= width * height / native**2 <= 1.3
        assert (width >= height) == (w >= h) or abs(width - height) <= multiple


def test_missing_size_is_native_or_the_input_picture() -> None:
    assert default_size(1024, None, None) == (1024, 1024)
    assert default_size(512, "16:9", None) == (704, 384)
    assert default_size(512, None, (1001, 767)) == (1000, 760)


def test_seed_minus_one_becomes_concrete_and_bounds_are_named() -> None:
    assert 0 <= resolve_seed(-1) < 2**32  # drawn as the web UI draws its own
    assert resolve_seed(7) == 7
    # Past 2**32 - 1 too (the web UI's seed + i): rendered and recorded as given.
    assert resolve_seed(2**32 + 1) == 2**32 + 1
    assert resolve_seed(MAX_SEED) == MAX_SEED
    with pytest.raises(RequestError, match="between 0 and 9223372036854775807, or -1"):
        resolve_seed(2**63)


def test_imagine_takes_a_caption_s_seed_past_32_bits_as_option_and_flag() -> None:
    """A grid past 2**32 - 1 names seeds such as 4294967296: typed back, as the seed option
    or ``--seed``, each renders at that seed, as /use-settings reads it."""
    [seed_option] = [p for p in ImagineCog.imagine.parameters if p.name == "seed"]
    assert seed_option.max_value == 2**53 - 1  # Discord's integer options stop there
    for options in (
        ImagineOptions(prompt="a fox", seed=4294967296),
        ImagineOptions(prompt="a fox --seed 4294967296"),
    ):
        assert build_request(options).seed == 4294967296


def test_build_request_fills_defaults_and_validates() -> None:
    request = build_request(ImagineOptions(prompt="  a cat ", seed=3, size="16:9"))
    assert (request.prompt, request.seed, request.steps, request.sampler) == (
        "a cat",
        3,
        20,
        "Euler a",
    )
    assert (request.width, request.height, request.options) == (None, None, {"aspect": "16:9"})
    sized = build_request(ImagineOptions(prompt="a cat", size="512x768"))
    assert (sized.width, sized.height) == (512, 768)
    with pytest.raises(RequestError, match="sampler"):
        build_request(ImagineOptions(prompt="x", sampler="Euler z"))
    with pytest.raises(RequestError, match="count must be a whole number between 1 and 4, got 5"):
        build_request(ImagineOptions(prompt="x", count=5))
    with pytest.raises(RequestError, match="steps must be a whole number between 1 and 150, got 0"):
        build_request(ImagineOptions(prompt="x", steps=0))
    with pytest.raises(RequestError, match="prompt is empty"):
        build_request(ImagineOptions(prompt="   "))


def test_reroll_changes_only_the_seed() -> None:
    request = build_request(ImagineOptions(prompt="a cat", seed=3))
    rolled = reroll(request)
    assert rolled.seed != request.seed or reroll(request).seed != request.seed
    assert rolled.prompt == request.prompt and rolled.steps == request.steps


def test_one_picture_of_a_batch_alone_keeps_its_recorded_seed_and_its_variation_seed() -> None:
    varied = RenderRequest("a cat", seed=10, count=3, variation_seed=MAX_SEED)
    varied = dataclasses.replace(varied, variation_strength=0.3)
    assert (picture_alone(varied, 2, 10).seed, picture_alone(varied, 2, 10).variation_seed) == (
        10,
        1,  # wrapped past the largest seed, as the engine renders it
    )
    # A job stored before variation seeds were resolved: the seed drawn is not known.
    unknown = dataclasses.replace(varied, variation_seed=-1)
    assert picture_alone(unknown, 1, 10).variation_seed == -1
    # The seed is the one recorded (a job rendered before batches kept their seed: 11).
    plain = RenderRequest("a cat", seed=10, count=2)
    assert (picture_alone(plain, 1, 11).seed, picture_alone(plain, 1, 11).variation_seed) == (
        11,
        None,
    )


def test_inline_flags_fill_the_request_and_explicit_options_win() -> None:
    request = build_request(
        ImagineOptions(
            prompt="a castle --ar 16:9 --seed 5 --no cars, people --steps 30 --cfg 6 "
            '--sampler "DPM++ 2M Karras" --count 2',
            negative="blurry",
            steps=12,
        )
    )
    assert request.prompt == "a castle"
    assert request.options == {"aspect": "16:9"}
    assert (request.seed, request.steps, request.cfg_scale, request.count) == (5, 12, 6, 2)
    assert request.sampler == "DPM++ 2M Karras"
    assert request.negative_prompt == "blurry, cars, people"
    assert request.notes == ["the steps option (12) overrides the prompt's flag (30)"]

    sized = build_request(ImagineOptions(prompt="a castle --ar 16:9", size="512x512"))
    assert (sized.width, sized.height, sized.options) == (512, 512, {})
    assert sized.notes == ["the size option (512x512) overrides the prompt's --ar"]


def test_fast_is_off_unless_asked_and_keeps_batches_apart() -> None:
    plain = build_request(ImagineOptions(prompt="a cat", seed=3))
    assert plain.fast is False
    typed = build_request(ImagineOptions(prompt="a cat --fast", seed=3))
    assert (typed.prompt, typed.fast) == ("a cat", True)
    assert build_request(ImagineOptions(prompt="a cat", seed=3, fast=True)).fast is True
    refused = build_request(ImagineOptions(prompt="a cat --fast", seed=3, fast=False))
    assert refused.fast is False
    assert refused.notes == ["the fast option (False) overrides the prompt's flag (True)"]
    # A fast render and a plain one cannot share a pipeline call.
    assert typed.pipeline_key() != plain.pipeline_key()
    assert typed.batch_key() != plain.batch_key()
    assert RenderRequest.from_json(typed.to_json()) == typed


def test_unknown_flag_lists_the_known_ones() -> None:
    with pytest.raises(RequestError, match=r"--ar.*--count"):
        build_request(ImagineOptions(prompt="a cat --weird 3"))


@pytest.mark.parametrize(
    "request_",
    [
        RenderRequest("x", steps=2, mode="img2img", init_image="a.png", denoising_strength=0.35),
        RenderRequest("x", steps=2, mode="img2img", init_image="a.png", denoising_strength=0.0),
        RenderRequest(
            "x", steps=2, mode="upscale", init_image="a.png", options={"upscale_mode": "creative"}
        ),
    ],
)
def test_an_img2img_pass_below_one_step_s_worth_is_accepted(request_: RenderRequest) -> None:
    """The web UI runs int(denoising x steps) + 1 steps, one at the least (SD3/Flux, whose
    pipelines run none at 0, are refused at render time, once the family is known)."""
    validate_request(request_)
