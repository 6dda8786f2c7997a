"""The prompts a pass over a picture renders (fix faces, the creative upscale): the request's,
and where it leaves one empty the picture's own, read from its infotext. One rule for the
engine and for the bot, which plans and checks those texts at admission."""

from __future__ import annotations

from pathlib import Path

from inference.infotext import InfotextValue, infotext_from_png, parse_infotext
from inference.types import RenderRequest


def picture_infotext(request: RenderRequest) -> tuple[str, str, dict[str, InfotextValue]]:
    """The prompt, negative prompt and parameters of ``request``'s ``init_image`` from its
    infotext; a picture without one: the request's prompts and no parameters."""
    assert request.init_image is not None  # validate_request made sure
    original = infotext_from_png(Path(request.init_image).read_bytes())
    if not original:
        return request.prompt, request.negative_prompt, {}
    return parse_infotext(original)


def rendered_prompts(
    request: RenderRequest, picture: tuple[str, str, object] | None = None
) -> tuple[str, str]:
    """The prompt and negative prompt the pass renders: the request's, each where empty the
    picture's own. ``picture``: its ``picture_infotext``, where already read."""
    prompt, negative, _ = picture_infotext(request) if picture is None else picture
    return request.prompt or prompt, request.negative_prompt or negative
