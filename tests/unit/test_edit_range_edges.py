"""The picture-side range of every button that renders from a picture, at both of its ends, and
the pan buttons' direction and distance (a mutation audit found ``<`` and ``<=`` swappable here
with no test noticing). Refusals are asserted by type only: the wording is other tests' concern."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bot.edits import (
    InpaintSettings,
    Picture,
    expand_request,
    fix_faces_request,
    inpaint_request,
    request_from_infotext,
    upscale_request,
    vary_request,
)
from bot.requests import MAX_PROMPT_CHARS, RequestError
from inference.face_options import FACE_RESTORE, FIX_FACES
from inference.images import MAX_INPUT_SIDE
from inference.limits import MAX_SEED, MAX_SIZE, MIN_SIZE
from inference.types import RenderRequest

PATH = Path("/data/inputs/a.png")
BASE = RenderRequest("a hat", seed=5)
BUTTONS: dict[str, Callable[[Picture], RenderRequest]] = {
    "vary": lambda picture: vary_request(BASE, picture, "subtle"),
    "expand": lambda picture: expand_request(BASE, picture, zoom_out=1.5),
    "fix faces": lambda picture: fix_faces_request(BASE, picture, restore=False),
    "inpaint": lambda picture: inpaint_request(BASE, picture, picture, InpaintSettings()),
}


@pytest.mark.parametrize("button", BUTTONS)
@pytest.mark.parametrize(
    ("width", "height"), [(MIN_SIZE, MIN_SIZE), (MAX_INPUT_SIDE, MAX_INPUT_SIDE), (64, 4096)]
)
def test_a_picture_with_sides_at_either_end_is_accepted(
    button: str, width: int, height: int
) -> None:
    picture = Picture(PATH, width, height)
    if button == "expand" and max(width, height) * 1.5 > MAX_SIZE:
        # The picture is taken, but its grown canvas passes the engine's side: refused so.
        with pytest.raises(RequestError, match="outpainting would make a"):
            BUTTONS[button](picture)
        return
    request = BUTTONS[button](picture)
    assert request.init_image == str(PATH)


@pytest.mark.parametrize("button", BUTTONS)
@pytest.mark.parametrize(
    ("width", "height"),
    [
        (MIN_SIZE - 1, MIN_SIZE),
        (MIN_SIZE, MIN_SIZE - 1),
        (MAX_INPUT_SIDE + 1, MIN_SIZE),
        (MIN_SIZE, MAX_INPUT_SIDE + 1),
    ],
)
def test_a_picture_one_pixel_past_either_end_is_refused(
    button: str, width: int, height: int
) -> None:
    with pytest.raises(RequestError):
        BUTTONS[button](Picture(PATH, width, height))


@pytest.mark.parametrize(
    ("pan", "width", "height", "added"),
    [("left", 200, 96, 96), ("right", 200, 96, 96), ("up", 96, 200, 96), ("down", 96, 200, 96)],
)
def test_a_pan_adds_half_the_side_it_moves_along_in_eights(
    pan: str, width: int, height: int, added: int
) -> None:
    request = expand_request(BASE, Picture(PATH, width, height), pan=pan)
    assert request.options == {"outpaint": {pan: added}}


@pytest.mark.parametrize("both", [True, False])
def test_a_pan_and_a_zoom_out_together_or_neither_are_refused(both: bool) -> None:
    picture = Picture(PATH, 96, 96)
    with pytest.raises(RequestError):
        if both:
            expand_request(BASE, picture, zoom_out=1.5, pan="left")
        else:
            expand_request(BASE, picture)


@pytest.mark.parametrize("seed", [0, MAX_SEED])
def test_a_fast_upscale_keeps_a_seed_at_either_end_of_the_range(seed: int) -> None:
    base = RenderRequest("a hat", seed=seed)
    assert upscale_request(base, Picture(PATH, 96, 64), 2).seed == seed


def test_a_pictures_prompt_is_held_to_the_typed_prompts_cap_unless_a_typed_one_replaces_it() -> (
    None
):
    def infotext(prompt: str) -> str:
        return f"{prompt}\nSteps: 12, Sampler: Euler a, CFG scale: 6.5, Seed: 77, Size: 64x64"

    longest = "a" * MAX_PROMPT_CHARS
    assert request_from_infotext(infotext(longest), None, None).prompt == longest
    with pytest.raises(RequestError):
        request_from_infotext(infotext(longest + "a"), None, None)
    assert request_from_infotext(infotext(longest + "a"), "a fox", None).prompt == "a fox"


def test_the_fix_faces_button_asks_for_the_faces_pass_and_restores_only_when_asked() -> None:
    picture = Picture(PATH, 96, 64)
    plain = fix_faces_request(BASE, picture, restore=False)
    restored = fix_faces_request(BASE, picture, restore=True)
    assert (plain.mode, plain.options) == ("faces", {FIX_FACES: True})
    assert restored.options == {FIX_FACES: True, FACE_RESTORE: True}
