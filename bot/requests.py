"""From what a member typed to a validated ``RenderRequest`` (pure: no discord, no torch)."""

from __future__ import annotations

import dataclasses
import re
import secrets
from dataclasses import dataclass

from inference.types import RenderRequest

MAX_SEED = 2**32 - 1
_SIZE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")
_ASPECT = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


class RequestError(ValueError):
    """Bad input from a member; the message names the option and the accepted range."""


@dataclass(frozen=True)
class ImagineOptions:
    """The ``/imagine`` options (and ``easel render``'s), None where the member gave none."""

    prompt: str
    negative: str | None = None
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    size: str | None = None
    model: str | None = None
    count: int | None = None


@dataclass(frozen=True)
class Defaults:
    steps: int = 20
    cfg: float = 7.0
    sampler: str = "Euler a"
    base_size: int = 512


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


def resolve_seed(seed: int | None) -> int:
    """-1 or nothing means a fresh random seed; anything else must fit in 32 bits."""
    if seed is None or seed == -1:
        return random_seed()
    if not 0 <= seed <= MAX_SEED:
        raise RequestError(f"seed must be -1 (random) or between 0 and {MAX_SEED}, not {seed}")
    return seed


def parse_size(text: str, base_size: int = 512) -> tuple[int, int]:
    """``WxH`` exactly, or an aspect ratio ``W:H`` scaled to about ``base_size``² pixels.

    Sides are rounded to multiples of 64 as Stable Diffusion models expect.
    """
    if match := _SIZE.match(text):
        width, height = int(match.group(1)), int(match.group(2))
        for name, side in (("width", width), ("height", height)):
            if not 64 <= side <= 2048 or side % 8:
                raise RequestError(
                    f"size {text!r}: {name} must be a multiple of 8 between 64 and 2048"
                )
        return width, height
    if match := _ASPECT.match(text):
        aspect_w, aspect_h = int(match.group(1)), int(match.group(2))
        if not (1 <= aspect_w <= 21 and 1 <= aspect_h <= 21):
            raise RequestError(f"aspect ratio {text!r}: each side must be between 1 and 21")
        ratio = aspect_w / aspect_h
        area = base_size * base_size
        width = round((area * ratio) ** 0.5 / 64) * 64
        height = round((area / ratio) ** 0.5 / 64) * 64
        return max(64, width), max(64, height)
    raise RequestError(
        f"size {text!r} is neither WxH (e.g. 512x768) nor an aspect ratio (e.g. 16:9)"
    )


def _in_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise RequestError(f"{name} must be between {low:g} and {high:g}, not {value:g}")


def build_request(options: ImagineOptions, defaults: Defaults = Defaults()) -> RenderRequest:
    """Validate the options and fill the gaps; the seed is made concrete so a re-run is the same."""
    prompt = options.prompt.strip()
    if not prompt:
        raise RequestError("prompt is empty: describe the picture you want")
    steps = options.steps if options.steps is not None else defaults.steps
    _in_range("steps", steps, 1, 150)
    cfg = options.cfg if options.cfg is not None else defaults.cfg
    _in_range("cfg", cfg, 0, 30)
    count = options.count if options.count is not None else 1
    _in_range("count", count, 1, 4)
    if options.size:
        width, height = parse_size(options.size, defaults.base_size)
    else:
        width = height = defaults.base_size
    return RenderRequest(
        prompt=prompt,
        negative_prompt=(options.negative or "").strip(),
        seed=resolve_seed(options.seed),
        steps=steps,
        cfg_scale=cfg,
        width=width,
        height=height,
        sampler=options.sampler or defaults.sampler,
        model=options.model,
        count=count,
    )


def reroll(request: RenderRequest) -> RenderRequest:
    """The same request with a new random seed (the 🔄 button)."""
    return dataclasses.replace(request, seed=random_seed())
