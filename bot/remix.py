"""Remix: a journaled job's main settings as a modal's five text fields, and the edited job
read back from them (pure: no discord, no torch).

Everything the fields do not show (the model, hires fix, an input picture, LoRAs in the
prompt...) is kept from the original job, so a remix of a variation is a variation again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bot.requests import ImagineOptions, RequestError, build_request
from inference.limits import CFG_ACCEPTS, STEPS_ACCEPTS, out_of_range
from inference.quoting import cut
from inference.types import RenderInputError, RenderRequest
from inference.validation import validate_request

# The size field's word for "no size of its own": the model's native size (txt2img) or the
# input picture's (img2img).
AUTO_SIZE = "auto"


@dataclass(frozen=True)
class RemixFields:
    """The modal's text, one attribute per field."""

    prompt: str
    negative: str
    seed: str  # empty: a new seed
    steps_cfg: str  # "20, 7"
    size_sampler: str  # "512x768, Euler a" or "auto, Euler a"


def remix_fields(request: RenderRequest) -> RemixFields:
    """The fields filled in from a job's request."""
    if request.width is not None and request.height is not None:
        size = f"{request.width}x{request.height}"
    elif request.mode == "txt2img":
        size = str(request.options.get("aspect") or AUTO_SIZE)
    else:  # made from a picture, sized by it: an aspect ratio journaled before is not shown,
        # as the form would refuse it unchanged (``remix_request``)
        size = AUTO_SIZE
    return RemixFields(
        prompt=request.prompt,
        negative=request.negative_prompt,
        seed=str(request.seed),
        steps_cfg=f"{request.steps}, {request.cfg_scale:g}",
        size_sampler=f"{size}, {request.sampler}",
    )


def _seed(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise RequestError(
            f"seed {text!r} is not a whole number; leave it empty for a new seed"
        ) from None


def _steps_cfg(text: str) -> tuple[int, float]:
    """The two numbers; each refused as what it is not ("1.5, 7": steps must be whole)."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 2:
        raise RequestError(
            f"steps and CFG {text!r} must be two numbers separated by a comma, e.g. `20, 7`"
        )
    steps_text, cfg_text = parts
    try:
        steps = int(steps_text)
    except ValueError:
        raise RequestError(out_of_range("steps", STEPS_ACCEPTS, cut(steps_text))) from None
    try:
        cfg = float(cfg_text)
    except ValueError:
        raise RequestError(out_of_range("CFG scale", CFG_ACCEPTS, cut(cfg_text))) from None
    return steps, cfg


def _size_sampler(text: str) -> tuple[str | None, str]:
    size, comma, sampler = text.partition(",")
    size, sampler = size.strip(), sampler.strip()
    if not comma or not sampler:
        raise RequestError(
            f"size and sampler {text!r} must be a size (WxH, W:H or `{AUTO_SIZE}`), a comma "
            "and a sampler's name, e.g. `512x768, Euler a`"
        )
    return (None if size.lower() in ("", AUTO_SIZE) else size), sampler


def remix_request(original: RenderRequest, fields: RemixFields) -> RenderRequest:
    """The original job with the fields' edits; inline flags typed into the prompt (``--ar``,
    ``--no``...) are read as /imagine reads them. An empty seed field means a new seed.
    Raises ``RequestError`` naming the field and what it accepts."""
    steps, cfg = _steps_cfg(fields.steps_cfg)
    size, sampler = _size_sampler(fields.size_sampler)
    edited = build_request(
        ImagineOptions(
            prompt=fields.prompt,
            negative=fields.negative,
            seed=_seed(fields.seed),
            steps=steps,
            cfg=cfg,
            sampler=sampler,
            size=size,
            model=original.model,
            count=original.count,
            fast=original.fast or None,
        )
    )
    width, height = original.width, original.height
    options = dict(original.options)
    aspect = edited.options.get("aspect")
    if aspect is not None and original.mode != "txt2img":
        # The engine sizes a pass over a picture from that picture or a typed WxH; an aspect
        # ratio, which shapes the model's native size, would be dropped without a word.
        raise RequestError(
            f"aspect ratio {aspect}: it shapes a new picture, and this one is made from a "
            f"picture; give the size as WxH (e.g. 512x288) or `{AUTO_SIZE}` for the picture's own"
        )
    if edited.width is not None or aspect is not None:  # a size was given
        width, height = edited.width, edited.height
        options.pop("aspect", None)
        if aspect is not None:
            options["aspect"] = aspect
    remixed = dataclasses.replace(
        original,
        prompt=edited.prompt,
        negative_prompt=edited.negative_prompt,
        seed=edited.seed,
        steps=edited.steps,
        cfg_scale=edited.cfg_scale,
        sampler=edited.sampler,
        model=edited.model,
        count=edited.count,
        fast=edited.fast,
        width=width,
        height=height,
        options=options,
        notes=edited.notes,
    )
    try:
        validate_request(remixed)
    except RenderInputError as error:
        raise RequestError(str(error)) from None
    return remixed
