"""Lanczos resampling and the options of the two features that enlarge pictures: hires fix and
the ``upscale`` mode. Pure PIL: no torch (model upscalers live in ``inference.model_upscale``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Literal

from PIL import Image

from inference.limits import MAX_SIZE, MAX_STEPS, SIZE_MULTIPLE
from inference.tiles import tile_spans
from inference.types import RenderInputError

# The upscaler that needs no model file; the others are named after their files.
LANCZOS = "Lanczos"
# Hires fix only: the first pass's latents are resized (torch interpolation mode, antialias)
# and the second pass starts from them, with no VAE decode and encode between (web UI names).
LATENT_UPSCALERS: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}


def latent_upscaler(name: str) -> str | None:
    """The web UI spelling of a latent upscaler name in any letter case, else None."""
    folded = {known.casefold(): known for known in LATENT_UPSCALERS}
    return folded.get(name.casefold())


# An upscale may go past the render limit (it works in tiles); these cap memory, PNG size
# and, for the creative upscale's diffusion pass over every tile, time.
MAX_UPSCALED_SIDE = 8192
MAX_CREATIVE_SIDE = 4096

UpscaleMode = Literal["fast", "creative"]
UPSCALE_FACTORS = (2, 4)
# Creative upscaling re-details the enlarged picture with a light img2img pass, in tiles.
DEFAULT_CREATIVE_STRENGTH = 0.35
MIN_HIRES_SCALE, MAX_HIRES_SCALE = 1.0, 4.0
DEFAULT_HIRES_DENOISING = 0.7  # the web UI's default
# Decimal places past which a float's shortest spelling (``repr``) needs no more.
_FLOAT_DIGITS = 17


def _upscaler_name(option: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RenderInputError(f"{option} must be an upscaler's name, got {value!r}")
    return value.strip()


def lanczos_upscale(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    return image.resize(size, Image.Resampling.LANCZOS)


def scaled_render_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """``width x height`` times ``scale``, rounded to the multiple of 8 a UNet needs."""
    return (
        max(SIZE_MULTIPLE, round(width * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE),
        max(SIZE_MULTIPLE, round(height * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE),
    )


def hires_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The hires pass's size, as the web UI's: ``int(side x scale)``, which its latent resize
    and its VAE then take down to a multiple of 8."""
    return (
        int(width * scale) // SIZE_MULTIPLE * SIZE_MULTIPLE,
        int(height * scale) // SIZE_MULTIPLE * SIZE_MULTIPLE,
    )


def hires_scale_to(width: int, height: int, to_width: int, to_height: int) -> float:
    """The scale whose ``hires_size`` covers ``to_width x to_height`` (a side 0: none asked),
    the web UI's "Hires resize". The ratio itself may land a hair below the target in floats
    (1968 / 960 x 960 < 1968), which ``int`` would floor a multiple of 8 short: nudged up,
    then written with the fewest decimals that keep its size (2.051, not 2.0500000000000003),
    as the infotext records it and a paste reads it back."""
    scale = max(to_width / width, to_height / height)
    while int(width * scale) < to_width or int(height * scale) < to_height:
        scale = math.nextafter(scale, math.inf)
    return _shortest_scale(width, height, scale)


def _shortest_scale(width: int, height: int, scale: float) -> float:
    """The decimal of fewest digits above 1 with ``scale``'s ``hires_size``. A size holds over
    a range of scales, and ``scale`` is in it: if a decimal of some length is in it too, so is
    ``scale`` rounded down or up to that length, the nearer one tried first (1.1, not 1.2,
    for the float 1.100000000000000088...)."""
    size = hires_size(width, height, scale)
    exact = Decimal(scale)
    for digits in range(_FLOAT_DIGITS):
        step = Decimal(10) ** -digits
        around = (exact.quantize(step, ROUND_FLOOR), exact.quantize(step, ROUND_CEILING))
        for shorter in sorted(around, key=lambda decimal: abs(decimal - exact)):
            if shorter > MIN_HIRES_SCALE and hires_size(width, height, float(shorter)) == size:
                return float(shorter)
    return scale


# A tile's box in a picture: left, top, right, bottom.
TileBox = tuple[int, int, int, int]


def creative_tiles(width: int, height: int, native: int) -> tuple[list[TileBox], int]:
    """The tiles the creative upscale re-details a ``width x height`` picture in, row by row:
    of the model's ``native`` side at most, all of one size, overlapping by an eighth of it;
    and that overlap."""
    overlap = max(SIZE_MULTIPLE, native // 8 // SIZE_MULTIPLE * SIZE_MULTIPLE)
    rows = tile_spans(height, native, overlap, SIZE_MULTIPLE)
    columns = tile_spans(width, native, overlap, SIZE_MULTIPLE)
    return [(left, top, right, bottom) for top, bottom in rows for left, right in columns], overlap


@dataclass(frozen=True)
class HiresOptions:
    """Hires fix: render small, upscale, then img2img at the large size (web UI names)."""

    scale: float
    size: tuple[int, int]  # the second pass's (``hires_size``)
    steps: int  # 0: as many as the first pass
    denoising: float
    upscaler: str = LANCZOS  # quick, and the second pass redraws the detail anyway

    @classmethod
    def from_options(
        cls, options: dict[str, object], width: int, height: int
    ) -> HiresOptions | None:
        scale = options.get("hires_scale")
        if scale is None:
            return None
        steps = options.get("hires_steps", 0)
        denoising = options.get("hires_denoising", DEFAULT_HIRES_DENOISING)
        if not isinstance(scale, int | float) or not MIN_HIRES_SCALE < scale <= MAX_HIRES_SCALE:
            raise RenderInputError(
                f"hires scale must be above {MIN_HIRES_SCALE:g} and at most "
                f"{MAX_HIRES_SCALE:g}, got {scale!r}"
            )
        if not isinstance(steps, int) or not 0 <= steps <= MAX_STEPS:
            raise RenderInputError(
                f"hires steps must be from 0 (same as steps) to {MAX_STEPS}, got {steps!r}"
            )
        if not isinstance(denoising, int | float) or not 0 < denoising <= 1:
            raise RenderInputError(
                f"hires denoising must be above 0 and at most 1, got {denoising!r}"
            )
        upscaler = _upscaler_name("hires upscaler", options.get("hires_upscaler", LANCZOS))
        upscaler = latent_upscaler(upscaler) or upscaler
        size = hires_size(width, height, scale)
        if max(size) > MAX_SIZE:
            raise RenderInputError(
                f"hires fix would render {size[0]}x{size[1]}; the largest side allowed is "
                f"{MAX_SIZE}: lower the size or the hires scale"
            )
        return cls(float(scale), size, steps, float(denoising), upscaler)

    def pass_steps(self, first_pass_steps: int) -> int:
        """The steps the second pass runs (0: the first pass's steps), all of them whatever
        the denoising, as the web UI's (``inference.img2img_steps.Img2ImgSteps.hires``). The
        flow families' pass is a diffusers img2img of this many steps, whose flow-matching
        count runs at least one at any hires denoising (validation keeps it above 0)."""
        return self.steps or first_pass_steps

    def infotext(self, upscaler: str) -> dict[str, object]:
        """The web UI's hires fix fields, with the upscaler that ran (its resolved name)."""
        return {
            "Denoising strength": self.denoising,
            "Hires upscale": self.scale,
            "Hires steps": self.steps or None,
            "Hires upscaler": upscaler,
        }


@dataclass(frozen=True)
class UpscaleOptions:
    factor: int
    mode: UpscaleMode
    strength: float  # the creative pass's denoising strength
    upscaler: str | None  # None: the engine's default upscaler

    @classmethod
    def from_options(cls, options: dict[str, object]) -> UpscaleOptions:
        factor = options.get("upscale_factor", UPSCALE_FACTORS[0])
        mode = options.get("upscale_mode", "fast")
        strength = options.get("upscale_strength", DEFAULT_CREATIVE_STRENGTH)
        if factor not in UPSCALE_FACTORS or not isinstance(factor, int):
            raise RenderInputError(f"upscale factor must be 2 or 4, got {factor!r}")
        if mode != "fast" and mode != "creative":
            raise RenderInputError(f"upscale mode must be 'fast' or 'creative', got {mode!r}")
        if not isinstance(strength, int | float) or not 0 < strength <= 1:
            raise RenderInputError(
                f"upscale strength must be above 0 and at most 1, got {strength!r}"
            )
        upscaler = options.get("upscaler")
        if upscaler is not None:
            upscaler = _upscaler_name("upscaler", upscaler)
        return cls(factor, mode, float(strength), upscaler)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The upscaled size, refused when too large."""
        if self.mode == "fast":
            size = (width * self.factor, height * self.factor)
            limit = MAX_UPSCALED_SIDE
        else:  # the UNet needs multiples of 8
            size = scaled_render_size(width, height, self.factor)
            limit = MAX_CREATIVE_SIDE
        if max(size) > limit:
            raise RenderInputError(
                f"a {self.factor}x {self.mode} upscale of {width}x{height} would be "
                f"{size[0]}x{size[1]}; the largest side allowed is {limit}"
            )
        return size
