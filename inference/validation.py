"""Request checks that need no model and no torch, so the bot and the CLI can refuse a bad
request up front with the same teaching messages the engine gives."""

from __future__ import annotations

import math
from dataclasses import dataclass

from inference.control_units import control_units
from inference.face_options import FaceOptions
from inference.image_prompts import image_prompt
from inference.images import InpaintOptions
from inference.limits import (
    CFG_ACCEPTS,
    COUNT_ACCEPTS,
    MAX_CFG,
    MAX_COUNT,
    MAX_SIZE,
    MAX_STEPS,
    MIN_CFG,
    MIN_COUNT,
    MIN_SIZE,
    MIN_STEPS,
    SIZE_MULTIPLE,
    STEPS_ACCEPTS,
    between,
    out_of_range,
    seed_refusal,
)
from inference.outpaint import OutpaintOptions
from inference.prompts import parse_aspect_ratio
from inference.refiner import check_refiner_request
from inference.samplers import scheduler_spec
from inference.types import RenderInputError, RenderRequest
from inference.upscale import HiresOptions, UpscaleOptions


def _check_range(
    name: str, value: float, low: float, high: float, accepts: str | None = None
) -> None:
    """``accepts``: what the value accepts as its refusals say it (None: its range)."""
    if not low <= value <= high:
        raise RenderInputError(out_of_range(name, accepts or between(low, high), value))


def validate_request(request: RenderRequest) -> None:
    """Refuse a request with a message that names the problem and the accepted range."""
    for name, size in (("width", request.width), ("height", request.height)):
        if size is None:  # the engine picks the native (or the input picture's) size
            continue
        if not MIN_SIZE <= size <= MAX_SIZE or size % SIZE_MULTIPLE:
            raise RenderInputError(
                f"{name} must be a multiple of {SIZE_MULTIPLE} between {MIN_SIZE} and "
                f"{MAX_SIZE}, got {size}"
            )
    _check_range("steps", request.steps, MIN_STEPS, MAX_STEPS, STEPS_ACCEPTS)
    if request.steps != int(request.steps):
        raise RenderInputError(out_of_range("steps", STEPS_ACCEPTS, request.steps))
    _check_range("CFG scale", request.cfg_scale, MIN_CFG, MAX_CFG, CFG_ACCEPTS)
    _check_range("count", request.count, MIN_COUNT, MAX_COUNT, COUNT_ACCEPTS)
    for name, seed in (("seed", request.seed), ("variation seed", request.variation_seed)):
        if (refusal := seed_refusal(name, seed)) is not None:
            raise RenderInputError(refusal)
    _check_range("variation strength", request.variation_strength, 0.0, 1.0)
    _check_range("denoising strength", request.denoising_strength, 0.0, 1.0)
    scheduler_spec(request.sampler, request.schedule_type)
    faces = FaceOptions.from_options(request.options)
    if request.mode == "faces" and not faces.wanted:
        raise RenderInputError("a faces job must ask to fix or restore faces (or both)")
    if request.mode in ("img2img", "inpaint", "upscale", "faces") and not request.init_image:
        raise RenderInputError(f"{request.mode} needs an init image")
    if request.mode == "upscale":
        UpscaleOptions.from_options(request.options)
    if "aspect" in request.options:
        parse_aspect_ratio(str(request.options["aspect"]))
    if request.mode == "txt2img" and request.width is not None and request.height is not None:
        HiresOptions.from_options(request.options, request.width, request.height)
    check_refiner_request(request.mode, request.options)
    if control_units(request.options) and request.mode == "upscale":
        raise RenderInputError("a ControlNet guides txt2img, img2img and inpaint, not upscale")
    if image_prompt(request.options) is not None and request.mode == "upscale":
        raise RenderInputError("an image prompt guides txt2img, img2img and inpaint, not upscale")
    outpaint = OutpaintOptions.from_options(request.options)
    if outpaint is not None:
        if request.mode not in ("img2img", "inpaint") or request.mask_image:
            raise RenderInputError(
                "outpaint and zoom out need an img2img or inpaint request with an init image "
                "and no mask (the new area is the mask)"
            )
    elif request.mode == "inpaint":
        if not request.mask_image:
            raise RenderInputError("inpaint needs a mask image (white = repaint)")
        InpaintOptions.from_options(request.options)


@dataclass(frozen=True)
class RenderLimits:
    """A server's own ceilings (``EASEL_MAX_PIXELS``, ``EASEL_MAX_STEPS``) below the ranges
    every request must keep, for devices that cannot take the largest renders."""

    max_pixels: int = MAX_SIZE * MAX_SIZE  # per picture, at every pass (hires fix included)
    max_steps: int = MAX_STEPS

    def refusal(self, request: RenderRequest) -> str | None:
        """Why this server will not render ``request``, or None. A size not chosen yet (the
        model's native size) is judged by the engine once it knows it."""
        if request.steps > self.max_steps:
            return f"this server renders at most {self.max_steps} steps, got {request.steps}"
        if request.width is None or request.height is None:
            return None
        sizes = [(request.width, request.height)]
        hires = (
            HiresOptions.from_options(request.options, request.width, request.height)
            if request.mode == "txt2img"
            else None
        )
        if hires is not None:
            sizes.append(hires.size)
        for width, height in sizes:
            if width * height > self.max_pixels:
                side = math.isqrt(self.max_pixels)
                return (
                    f"this server renders at most {self.max_pixels:,} pixels a picture (about "
                    f"{side}x{side}); {width}x{height} is {width * height:,}: ask for a smaller "
                    "size" + (" or no hires fix" if hires is not None else "")
                )
        return None
