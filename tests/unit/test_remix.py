"""The Remix modal's fields: filled in from a job, read back into the edited job."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.remix import RemixFields, remix_fields, remix_request
from bot.requests import RequestError
from inference.types import RenderRequest

SAMPLERS = ("Euler a", "DPM++ 2M Karras", "DDIM", "UniPC")
sides = st.sampled_from([None, 64, 512, 768])


@st.composite
def requests(draw: st.DrawFn) -> RenderRequest:
    width = draw(sides)
    aspect = draw(st.sampled_from([None, "16:9", "2:3"])) if width is None else None
    return RenderRequest(
        prompt=draw(st.sampled_from(["a cat", "a (red:1.2) barn, <lora:x:0.5>", "[a|b] fox"])),
        negative_prompt=draw(st.sampled_from(["", "blurry", "fog, snow"])),
        seed=draw(st.integers(0, 2**32 - 1)),
        steps=draw(st.integers(1, 150)),
        cfg_scale=draw(st.sampled_from([0.0, 1.5, 7.0, 12.25, 30.0])),
        width=width,
        height=width,
        sampler=draw(st.sampled_from(SAMPLERS)),
        count=draw(st.integers(1, 4)),
        options={"hires_scale": 2.0, **({"aspect": aspect} if aspect else {})},
    )


@given(requests())
def test_an_unedited_remix_is_the_same_job(request: RenderRequest) -> None:
    assert remix_request(request, remix_fields(request)) == request


@given(requests(), st.sampled_from(["", "  "]))
def test_an_empty_seed_field_means_a_new_seed(request: RenderRequest, seed: str) -> None:
    fields = dataclasses.replace(remix_fields(request), seed=seed)
    seeds = {remix_request(request, fields).seed for _ in range(4)}
    assert len(seeds) > 1  # four draws of 2**32 seeds never all agree


def test_edits_keep_what_the_fields_do_not_show() -> None:
    varied = RenderRequest(
        prompt="a cat",
        seed=3,
        mode="img2img",
        init_image="/data/images/abc/0.png",
        denoising_strength=0.35,
        model="tiny",
    )
    fields = dataclasses.replace(
        remix_fields(varied),
        prompt="a dog --no fleas",
        steps_cfg="30, 5.5",
        size_sampler="auto, DDIM",
    )
    remixed = remix_request(varied, fields)
    assert (remixed.prompt, remixed.negative_prompt, remixed.seed) == ("a dog", "fleas", 3)
    assert (remixed.steps, remixed.cfg_scale, remixed.sampler) == (30, 5.5, "DDIM")
    assert (remixed.mode, remixed.init_image, remixed.model) == (
        "img2img",
        "/data/images/abc/0.png",
        "tiny",
    )


@pytest.mark.parametrize(
    ("prompt", "size_sampler"), [("a dog", "16:9, Euler a"), ("a dog --ar 16:9", "auto, Euler a")]
)
def test_an_aspect_ratio_shapes_only_a_new_picture(prompt: str, size_sampler: str) -> None:
    """The engine sizes a pass over a picture from it or a WxH: an aspect ratio, typed in the
    size field or as --ar, is refused there naming why, and honoured on a new picture."""
    new = RenderRequest(prompt="a cat", seed=3)
    fields = dataclasses.replace(remix_fields(new), prompt=prompt, size_sampler=size_sampler)
    assert remix_request(new, fields).options["aspect"] == "16:9"
    varied = dataclasses.replace(new, mode="img2img", init_image="/data/images/abc/0.png")
    with pytest.raises(
        RequestError,
        match=r"aspect ratio 16:9: it shapes a new picture, and "
        r"this one is made from a picture; give the size as WxH",
    ):
        remix_request(varied, fields)
    sized = dataclasses.replace(fields, size_sampler="128x64, Euler a", prompt="a dog")
    assert (remix_request(varied, sized).width, remix_request(varied, sized).height) == (128, 64)


def test_a_picture_made_result_journaled_with_an_aspect_ratio_remixes_unchanged() -> None:
    """Before aspect ratios were refused on a pass over a picture, a Remix of a variation given
    ``16:9`` was journaled so: its form shows the picture's own size, not a ratio it would
    refuse unchanged."""
    older = RenderRequest(
        prompt="a cat",
        seed=3,
        mode="img2img",
        init_image="/data/images/abc/0.png",
        options={"aspect": "16:9"},
    )
    fields = remix_fields(older)
    assert fields.size_sampler == f"auto, {older.sampler}"
    assert remix_request(older, fields) == older


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("seed", "lucky", "seed 'lucky' is not a whole number"),
        (
            "seed",
            "-5",
            "seed must be a whole number between 0 and 9223372036854775807, or -1 for a rand",
        ),
        ("steps_cfg", "20", "must be two numbers separated by a comma"),
        ("steps_cfg", "0, 7", "steps"),
        # Two numbers, but steps are whole: said so, not "must be two numbers".
        ("steps_cfg", "1.5, 7", "steps must be a whole number between 1 and 150, got '1.5'"),
        ("steps_cfg", "20, x", "CFG scale must be a number between 0 and 30, got 'x'"),
        ("size_sampler", "512x512", "must be a size (WxH, W:H or `auto`), a comma"),
        ("size_sampler", "500x500, Euler a", "multiple of"),
        ("size_sampler", "auto, Nope", "unknown sampler 'Nope'"),
        ("prompt", "--ar 2:1", "prompt is empty"),
    ],
)
def test_a_bad_field_is_one_sentence_naming_it(field: str, value: str, says: str) -> None:
    original = RenderRequest(prompt="a cat", seed=1)
    fields = RemixFields(**{**vars(remix_fields(original)), field: value})
    with pytest.raises(RequestError) as raised:
        remix_request(original, fields)
    assert says in str(raised.value)
