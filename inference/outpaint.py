"""Outpainting: grow the canvas around a picture and paint only the new area.

Pure PIL (no torch). ``options["outpaint"] = {"left": 64, "right": 0, "up": 0, "down": 0}``
adds pixels per side; ``options["zoom_out"] = 1.5`` grows both sides by that factor around
the centre. The new area is pre-filled with the picture's edge colours blurred outwards (the
web UI's "fill"), masked exactly, inpainted, and the original pixels are put back unchanged.
The canvas is rounded up to multiples of 8 by growing the right and bottom edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from inference.images import InpaintCanvas, fill_masked_area
from inference.limits import MAX_SIZE, SIZE_MULTIPLE
from inference.types import RenderInputError

OUTPAINT = "outpaint"
ZOOM_OUT = "zoom_out"
SIDES = ("left", "right", "up", "down")
MAX_ZOOM_OUT = 4.0


@dataclass(frozen=True)
class Margins:
    """Pixels added on each side of the picture."""

    left: int
    right: int
    up: int
    down: int

    def canvas_size(self, width: int, height: int) -> tuple[int, int]:
        return width + self.left + self.right, height + self.up + self.down

    def describe(self) -> str:
        return " ".join(f"{side} {getattr(self, side)}" for side in SIDES)


@dataclass(frozen=True)
class OutpaintOptions:
    """What the request asked for: pixels per side, or a zoom-out factor."""

    sides: Margins | None = None
    zoom: float | None = None

    @classmethod
    def from_options(cls, options: dict[str, object]) -> OutpaintOptions | None:
        """None when the request does not outpaint; ``RenderInputError`` for bad values."""
        sides, zoom = options.get(OUTPAINT), options.get(ZOOM_OUT)
        if sides is None and zoom is None:
            return None
        if sides is not None and zoom is not None:
            raise RenderInputError(f"use either {OUTPAINT!r} or {ZOOM_OUT!r}, not both")
        if zoom is not None:
            if isinstance(zoom, bool) or not isinstance(zoom, int | float):
                raise RenderInputError(f"zoom out must be a number, got {zoom!r}")
            if not 1.0 < zoom <= MAX_ZOOM_OUT:
                raise RenderInputError(
                    f"zoom out must be above 1 and at most {MAX_ZOOM_OUT:g}, got {zoom!r}"
                )
            return cls(zoom=float(zoom))
        return cls(sides=_margins(sides))

    def margins(self, width: int, height: int) -> Margins:
        """The margins for a ``width`` x ``height`` picture, canvas rounded up to 8s."""
        if self.zoom is not None:
            added_x = _round_up(math.ceil(width * self.zoom)) - width
            added_y = _round_up(math.ceil(height * self.zoom)) - height
            left, up = added_x // 2, added_y // 2
            margins = Margins(left, added_x - left, up, added_y - up)
        else:
            assert self.sides is not None  # from_options sets one of the two
            margins = self.sides
        canvas_width, canvas_height = margins.canvas_size(width, height)
        rounded = Margins(
            margins.left,
            margins.right + _round_up(canvas_width) - canvas_width,
            margins.up,
            margins.down + _round_up(canvas_height) - canvas_height,
        )
        final_width, final_height = rounded.canvas_size(width, height)
        if max(final_width, final_height) > MAX_SIZE:
            raise RenderInputError(
                f"outpainting would make a {final_width}x{final_height} picture; each side "
                f"may be at most {MAX_SIZE} pixels"
            )
        return rounded


def _round_up(side: int) -> int:
    return -(-side // SIZE_MULTIPLE) * SIZE_MULTIPLE


def _margins(value: object) -> Margins:
    if not isinstance(value, dict) or not set(value) <= set(SIDES):
        raise RenderInputError(
            f"outpaint must map some of {', '.join(SIDES)} to pixel counts, got {value!r}"
        )
    pixels = {side: value.get(side, 0) for side in SIDES}
    for side, amount in pixels.items():
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= MAX_SIZE:
            raise RenderInputError(
                f"outpaint {side} must be a whole number of pixels from 0 to {MAX_SIZE}, "
                f"got {amount!r}"
            )
    if not any(pixels.values()):
        raise RenderInputError("outpaint needs at least one side above 0 pixels")
    return Margins(**pixels)


def outpaint_canvas(image: Image.Image, margins: Margins) -> InpaintCanvas:
    """The grown picture with its new area filled and masked (white = new)."""
    size = margins.canvas_size(*image.size)
    grown = Image.new("RGB", size)
    grown.paste(image, (margins.left, margins.up))
    mask = Image.new("L", size, 255)
    mask.paste(0, (margins.left, margins.up, margins.left + image.width, margins.up + image.height))
    filled = fill_masked_area(grown, mask)
    # A hard mask both ways: the pipeline repaints exactly the new area, and compositing
    # takes every original pixel back untouched.
    return InpaintCanvas(image=filled, mask=mask, backdrop=filled, backdrop_mask=mask, crop=None)
