"""From what a member typed to a validated ``RenderRequest`` (pure: no discord, no torch)."""

from __future__ import annotations

import dataclasses
import re
import secrets
from dataclasses import dataclass

from inference.limits import MAX_SEED as MAX_SEED
from inference.limits import MAX_SIZE, MIN_SIZE, SIZE_MULTIPLE
from inference.prompts import PromptError, parse_aspect_ratio
from inference.types import RenderInputError, RenderRequest
from inference.validation import validate_request

_SIZE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")
# The Discord contract offers 1-4 pictures a request (a 2x2 grid at most).
MAX_COUNT = 4


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


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


def resolve_seed(seed: int | None) -> int:
    """-1 or nothing means a fresh random seed; anything else must fit in 32 bits."""
    if seed is None or seed == -1:
        return random_seed()
    if not 0 <= seed <= MAX_SEED:
        raise RequestError(f"seed must be -1 (random) or between 0 and {MAX_SEED}, not {seed}")
    return seed


def parse_size(text: str) -> tuple[int, int] | str:
    """``WxH`` (e.g. ``512x768``) as a pair, or an aspect ratio (e.g. ``16:9``) as its text,
    left for the engine to apply to the model's native size."""
    if match := _SIZE.match(text):
        width, height = int(match.group(1)), int(match.group(2))
        for name, side in (("width", width), ("height", height)):
            if not MIN_SIZE <= side <= MAX_SIZE or side % SIZE_MULTIPLE:
                raise RequestError(
                    f"size {text!r}: {name} must be a multiple of {SIZE_MULTIPLE} "
                    f"between {MIN_SIZE} and {MAX_SIZE}"
                )
        return width, height
    if ":" in text:
        try:
            aspect_w, aspect_h = parse_aspect_ratio(text.strip())
        except PromptError:
            raise RequestError(
                f"size {text!r}: an aspect ratio needs two whole numbers 1..21, e.g. 16:9"
            ) from None
        return f"{aspect_w}:{aspect_h}"
    raise RequestError(
        f"size {text!r} is neither WxH (e.g. 512x768) nor an aspect ratio (e.g. 16:9)"
    )


def build_request(options: ImagineOptions, defaults: Defaults = Defaults()) -> RenderRequest:
    """Validate the options and fill the gaps; the seed is made concrete so a re-run is the same.

    Without a size the model's native one is used (512 for SD1.5, 1024 for SDXL...).
    """
    prompt = options.prompt.strip()
    if not prompt:
        raise RequestError("prompt is empty: describe the picture you want")
    count = options.count if options.count is not None else 1
    if not 1 <= count <= MAX_COUNT:
        raise RequestError(f"count must be between 1 and {MAX_COUNT}, not {count}")
    width = height = None
    extra: dict[str, object] = {}
    if options.size:
        size = parse_size(options.size)
        if isinstance(size, str):
            extra["aspect"] = size
        else:
            width, height = size
    request = RenderRequest(
        prompt=prompt,
        negative_prompt=(options.negative or "").strip(),
        seed=resolve_seed(options.seed),
        steps=options.steps if options.steps is not None else defaults.steps,
        cfg_scale=options.cfg if options.cfg is not None else defaults.cfg,
        width=width,
        height=height,
        sampler=options.sampler or defaults.sampler,
        model=options.model,
        count=count,
        options=extra,
    )
    try:
        validate_request(request)
    except RenderInputError as error:
        raise RequestError(str(error)) from None
    return request


def reroll(request: RenderRequest) -> RenderRequest:
    """The same request with a new random seed (the 🔄 button)."""
    return dataclasses.replace(request, seed=random_seed())
