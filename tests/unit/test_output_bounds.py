"""The largest picture a request may come back as (inference.output_bounds), which the bot
holds a broker worker's pictures to."""

from __future__ import annotations

import pytest

from inference.images import MAX_INPUT_SIDE
from inference.limits import MAX_SIZE
from inference.output_bounds import largest_output, output_count
from inference.types import RenderRequest
from inference.upscale import MAX_CREATIVE_SIDE, MAX_UPSCALED_SIDE


@pytest.mark.parametrize(
    ("request_", "largest"),
    [
        (RenderRequest("a", width=512, height=256), (512, 256)),
        (RenderRequest("a", width=512, height=256, options={"hires_scale": 1.5}), (768, 384)),
        (RenderRequest("a"), (MAX_SIZE, MAX_SIZE)),  # the model's native size, chosen later
        (RenderRequest("a", mode="img2img", init_image="in.png"), (MAX_SIZE, MAX_SIZE)),
        (RenderRequest("a", mode="faces", init_image="in.png"), (MAX_INPUT_SIDE,) * 2),
        (
            RenderRequest("a", mode="upscale", init_image="in.png", options={"upscale_factor": 4}),
            (MAX_UPSCALED_SIDE,) * 2,
        ),
        (
            RenderRequest(
                "a", mode="upscale", init_image="in.png", options={"upscale_mode": "creative"}
            ),
            (MAX_CREATIVE_SIDE,) * 2,
        ),
        # The hires fix is txt2img's: an img2img of a named size comes back at that size.
        (
            RenderRequest(
                "a",
                mode="img2img",
                init_image="in.png",
                width=64,
                height=64,
                options={"hires_scale": 2},
            ),
            (64, 64),
        ),
        # Only masked: the render pasted back into the input picture, of the input's size.
        (
            RenderRequest(
                "a",
                mode="inpaint",
                init_image="in.png",
                mask_image="mask.png",
                width=512,
                height=512,
                options={"only_masked": True},
            ),
            (MAX_INPUT_SIDE,) * 2,
        ),
    ],
    ids=[
        "named",
        "hires",
        "native",
        "img2img",
        "faces",
        "upscale",
        "creative",
        "img2img-sized",
        "only-masked",
    ],
)
def test_the_largest_picture_each_kind_of_request_may_return(
    request_: RenderRequest, largest: tuple[int, int]
) -> None:
    assert largest_output(request_) == largest


@pytest.mark.parametrize(
    ("request_", "count"),
    [
        (RenderRequest("a", count=3), 3),
        (RenderRequest("a", mode="img2img", init_image="in.png", count=2), 2),
        # One picture in, one out, whatever count the request carries.
        (RenderRequest("a", mode="faces", init_image="in.png", count=4), 1),
        (RenderRequest("a", mode="upscale", init_image="in.png", count=4), 1),
        # A comparison: one picture per cell.
        (RenderRequest("a", options={"compare": {"cells": [{"seed": 1}, {"seed": 2}]}}), 2),
    ],
    ids=["txt2img", "img2img", "faces", "upscale", "comparison"],
)
def test_how_many_pictures_each_kind_of_request_returns(
    request_: RenderRequest, count: int
) -> None:
    assert output_count(request_) == count
