"""The size a request renders at when it names none: pure, so the bot can reason about it too."""

from __future__ import annotations

import dataclasses

from inference.limits import MAX_SIZE, MIN_SIZE, SIZE_MULTIPLE
from inference.prompts import resolve_size
from inference.types import RenderRequest

# Models trained at 512 px and up expect sides in multiples of 64; tiny test models are smaller.
_FULL_SIZE_MULTIPLE = 64


def default_size(
    native: int, aspect: str | None, init_size: tuple[int, int] | None
) -> tuple[int, int]:
    """The input picture's size (snapped to multiples of 8) when there is one, else the model's
    native square reshaped to ``aspect`` at about the same pixel count."""
    if init_size is not None:
        init_width, init_height = init_size
        return _snap(init_width, SIZE_MULTIPLE), _snap(init_height, SIZE_MULTIPLE)
    if aspect is None:
        return native, native
    multiple = _FULL_SIZE_MULTIPLE if native >= 8 * _FULL_SIZE_MULTIPLE else SIZE_MULTIPLE
    width, height = resolve_size(aspect, base_pixels=native * native, multiple_of=multiple)
    return _snap(width, multiple), _snap(height, multiple)


def _snap(side: int, multiple: int) -> int:
    return min(MAX_SIZE, max(MIN_SIZE, side // multiple * multiple))


def with_default_size(
    request: RenderRequest, native: int, init_size: tuple[int, int] | None = None
) -> RenderRequest:
    """``request`` with concrete width and height (unchanged when it already has both)."""
    if request.width is not None and request.height is not None:
        return request
    width, height = default_size(native, request.options.get("aspect"), init_size)
    return dataclasses.replace(
        request,
        width=request.width if request.width is not None else width,
        height=request.height if request.height is not None else height,
    )
