"""The largest picture the engine may return for a request, and how many: pure, so the bot
can check pictures rendered elsewhere (a broker worker) before it decodes them."""

from __future__ import annotations

from inference.compare import cell_requests, is_comparison
from inference.images import MAX_INPUT_SIDE, InpaintOptions
from inference.limits import MAX_SIZE
from inference.types import RenderRequest
from inference.upscale import (
    MAX_CREATIVE_SIDE,
    MAX_UPSCALED_SIDE,
    HiresOptions,
    UpscaleOptions,
)


def largest_output(request: RenderRequest) -> tuple[int, int]:
    """The widest and the tallest picture a render of ``request`` (validated) may return, by
    the engine's own limits: its size (times its hires fix) when it names one, else the
    largest the engine would choose or allow for its mode (a comparison's cells share the
    size, mode and options of their request)."""
    if request.mode == "upscale":
        fast = UpscaleOptions.from_options(request.options).mode == "fast"
        side = MAX_UPSCALED_SIDE if fast else MAX_CREATIVE_SIDE
        return side, side
    if request.mode == "faces":  # the input picture's own size
        return MAX_INPUT_SIDE, MAX_INPUT_SIDE
    if request.mode == "inpaint" and InpaintOptions.from_options(request.options).only_masked:
        # The render is pasted back into the input picture: its own size, whatever is asked.
        return MAX_INPUT_SIDE, MAX_INPUT_SIDE
    if request.width is None or request.height is None:
        # A size the engine chooses (native, aspect, input picture, outpainted canvas), hires
        # fix included, is at most this on each side.
        return MAX_SIZE, MAX_SIZE
    if request.mode == "txt2img":
        hires = HiresOptions.from_options(request.options, request.width, request.height)
        if hires is not None:
            return hires.size
    return request.width, request.height


def output_count(request: RenderRequest) -> int:
    """How many pictures a render of ``request`` (validated) returns: one per cell of a
    comparison, one for an upscale or a face fix (of its one input picture), else ``count``."""
    if is_comparison(request):
        return len(cell_requests(request))
    if request.mode in ("upscale", "faces"):
        return 1
    return request.count
