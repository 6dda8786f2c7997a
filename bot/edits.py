"""Requests that start from an existing picture: /vary, /inpaint, /upscale and the result
buttons (pure: no discord, no torch).

The picture's own settings (its web UI infotext, or the request of the job that made it) are
reused, so a variation of a result keeps its prompt, seed, model and steps, and the options that
shape its pixels or its place in the queue (``PICTURE_OPTIONS``).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, cast

from bot.images import bounded
from bot.infotext_import import MODEL_SHAPED, read_picture_options
from bot.requests import RequestError, check_prompt_length
from inference.face_options import FACE_RESTORE, FIX_FACES
from inference.images import (
    MASK_BLUR,
    MASK_INVERT,
    MASK_THRESHOLD,
    MASKED_CONTENT,
    MAX_INPUT_SIDE,
    ONLY_MASKED,
    ONLY_MASKED_PADDING,
    load_input_image,
)
from inference.infotext import guidance_of, parse_infotext, sampler_and_schedule
from inference.limits import MAX_SEED, MIN_SIZE, written_seed, written_seed_note
from inference.outpaint import OutpaintOptions
from inference.presets import vary_strength
from inference.prompts.flags import random_seed
from inference.types import Mode, RenderInputError, RenderRequest
from inference.upscale import UpscaleOptions
from inference.validation import validate_request

DEFAULT_INPAINT_DENOISE = 0.75
# The options of a picture's request that every edit of it keeps: how the text encoder reads
# the prompt (clip skip, pad conds), seamless tiling, the VAE override, and --relax (free and
# last, as the picture was). An edit's own options go on top of them.
PICTURE_OPTIONS = ("clip_skip", "pad_conds", "tile", "vae", "relax")


class PictureRenderers(NamedTuple):
    """What a picture's own settings may name where it is rendered from again: the models
    and VAEs installed that the server allows, which of those models are of a flow family
    (Flux, SD 3: no clip skip, tiling or pad conds; ``inference.family_rules``), the installed
    models that take Flux's distilled guidance as their CFG, and the model a request naming
    none renders with (None: not known), which stands in for a picture's model not available
    here."""

    models: list[str]
    vaes: list[str]
    flow_models: list[str]
    distilled_models: list[str]
    default_model: str | None


@dataclass(frozen=True)
class Picture:
    """An input picture already checked and saved as a PNG (see ``bot.images``)."""

    path: Path
    width: int
    height: int
    infotext: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


def input_path(inputs_dir: Path) -> Path:
    """A fresh ``inputs/<uuid>.png`` path for an uploaded picture."""
    return inputs_dir / f"{uuid.uuid4().hex}.png"


def request_from_infotext(
    infotext: str | None,
    prompt: str | None,
    usable_models: Collection[str] | None,
    *,
    usable_vaes: Collection[str] = (),
    flow_models: Collection[str] = (),
    distilled_models: Collection[str] = (),
    default_model: str | None = None,
    prompt_required: bool = True,
    how_to_give_a_prompt: str = "give one with `prompt`",
) -> RenderRequest:
    """The settings a picture was made with (prompt, negative, seed, steps, cfg, sampler,
    model, fast mode, ``PICTURE_OPTIONS``), with ``prompt`` replacing its prompt; a model not among
    ``usable_models`` (those installed that the server allows: one note for both, so a
    picture cannot tell whether a file the server leaves out exists) or an unknown sampler
    falls back to the default, with a note saying so. ``usable_models`` None: the pass uses
    no model (a fast upscale), so the picture's is neither taken nor noted.
    ``how_to_give_a_prompt`` ends the refusal of a picture with no prompt where one is
    required: where the member is, the way to give one. Its VAE is kept when ``usable_vaes``
    (installed and allowed here) names it, else left out with a note. The picture's model
    among ``flow_models`` (Flux, SD 3) was never rendered with the clip skip, tiling or pad
    conds its text may carry (another UI's): they are left out, with a note. Its CFG is read
    for the model that renders (``guidance_of``): the picture's, else ``default_model`` (None:
    not known, an SD model's true CFG), as a Flux one among ``distilled_models`` takes it."""
    typed_prompt = (prompt or "").strip()
    if bounded(infotext) is None and (typed_prompt or not prompt_required):
        # Past the bound, its settings are not carried over where they are not needed;
        # where its prompt is, the refusal below names the prompt's length.
        infotext = None
    if infotext is None:
        if not typed_prompt and prompt_required:
            raise RequestError(
                f"that picture carries no prompt (no web UI parameters); {how_to_give_a_prompt}"
            )
        return RenderRequest(prompt=typed_prompt, seed=random_seed())
    stored_prompt, negative, params = parse_infotext(infotext)
    # A picture's parameters are member input like a typed prompt: the same cap applies.
    if not typed_prompt:
        check_prompt_length(stored_prompt, "the picture's prompt")
    check_prompt_length(negative, "the picture's negative prompt")
    # Notes name the picture's values without quoting them: its text is a member's (an
    # upload's), with no banned-word check, and a note is posted in Easel's caption.
    notes: list[str] = []
    fields: dict[str, Any] = {}
    steps = params.get("Steps")
    seed = written_seed(params.get("Seed"))
    if (seed_note := written_seed_note(params.get("Seed"))) is not None:
        notes.append(seed_note)  # another UI's 64-bit seed, say
    if isinstance(steps, int):
        fields["steps"] = steps
    if params.get("Fast"):  # the same picture again needs the same fast mode
        fields["fast"] = True
    try:
        named = sampler_and_schedule(params)
    except RenderInputError:
        notes.append("the picture's sampler is unknown here; the default sampler was used")
        named = None
    if named is not None:
        fields["sampler"], fields["schedule_type"] = named
    model = params.get("Model")
    if isinstance(model, str) and usable_models is not None:
        if model in usable_models:
            fields["model"] = model
        else:
            notes.append("the picture's model is not available here; the default model is used")
    rendering = fields.get("model", default_model)
    cfg = guidance_of(params, distilled_model=rendering in distilled_models)
    if isinstance(cfg, int | float):
        fields["cfg_scale"] = float(cfg)
    if usable_models is not None:  # a pass that renders: the options shaping its pixels
        kept = fields.get("model")
        fields["options"] = _picture_options(
            params, usable_vaes, kept is not None, kept in flow_models, notes
        )
    return RenderRequest(
        prompt=typed_prompt or stored_prompt,
        negative_prompt=negative,
        seed=random_seed() if seed is None else seed,
        notes=notes,
        **fields,
    )


def picture_settings(infotext: str | None, renderers: PictureRenderers | None) -> RenderRequest:
    """``request_from_infotext`` where the picture's own prompt is kept and none is required
    (an upscale, the buttons under one); ``renderers`` None: the pass uses no model (a fast
    upscale)."""
    return request_from_infotext(
        infotext,
        None,
        None if renderers is None else renderers.models,
        usable_vaes=() if renderers is None else renderers.vaes,
        flow_models=() if renderers is None else renderers.flow_models,
        distilled_models=() if renderers is None else renderers.distilled_models,
        default_model=None if renderers is None else renderers.default_model,
        prompt_required=False,
    )


def _picture_options(
    params: dict[str, Any],
    usable_vaes: Collection[str],
    model_kept: bool,
    flow_model: bool,
    notes: list[str],
) -> dict[str, Any]:
    """``PICTURE_OPTIONS`` as the picture's text writes them (``bot.infotext_import``'s reader,
    naming the picture's values without quoting them). Without the picture's model, a VAE is
    left out (its family cannot be checked here), and so are clip skip, tiling and pad conds:
    the default model may not take them (a Flux one), and the render would refuse them after
    the wait. The picture's own ``flow_model`` takes none of those three: the picture was not
    rendered with them, so the edit, which re-renders it as it was, leaves them out too
    (``read_picture_options``, as /use-settings does)."""
    read = read_picture_options(
        params,
        usable_vaes,
        lambda _stem: None if model_kept else "made for the picture's model",
        stand_in=None if model_kept else "the default model",
        named=lambda setting, _value: f"the picture's {setting}",
        flow_model=flow_model,
    )
    notes.extend(sentence for sentence, _setting in read.unhonoured)
    options = dict(read.options)
    dropped = [] if model_kept else [key for key in MODEL_SHAPED if options.pop(key, None)]
    if dropped:
        notes.append(
            f"{', '.join(MODEL_SHAPED[key] for key in dropped)} left out: set for the "
            "picture's model, which the default model stands in for"
        )
    if options.get("relax"):  # it moves a member with a priority role to the back
        notes.append("queued as --relax (free, after other jobs), as the picture was")
    return options


def _checked(request: RenderRequest) -> RenderRequest:
    try:
        validate_request(request)
    except RenderInputError as error:
        raise RequestError(str(error)) from None
    return request


def _from_picture(
    base: RenderRequest, picture: Picture, mode: Mode, **changes: Any
) -> RenderRequest:
    """``base``'s prompt and settings applied to one stored or uploaded picture: one image,
    at the size the engine derives from the picture, no variation seed, no mask unless given;
    of ``base``'s options only ``PICTURE_OPTIONS``, under the edit's own ``options``."""
    kept = {key: base.options[key] for key in PICTURE_OPTIONS if key in base.options}
    fields: dict[str, Any] = {
        "mode": mode,
        "init_image": str(picture.path),
        "mask_image": None,
        "count": 1,
        "width": None,
        "height": None,
        "variation_seed": None,
        "variation_strength": 0.0,
        **changes,
        "options": {**kept, **changes.get("options", {})},
    }
    return _checked(dataclasses.replace(base, **fields))


def _check_renderable(picture: Picture, role: str) -> None:
    """Refuse, before anything is queued, a picture the engine would refuse: Easel's own
    results reach here unchecked (an 8192-px fast upscale's buttons)."""
    sides = (picture.width, picture.height)
    if min(sides) < MIN_SIZE or max(sides) > MAX_INPUT_SIDE:
        raise RequestError(
            f"the {role} is {picture.width}x{picture.height}; each side must be between "
            f"{MIN_SIZE} and {MAX_INPUT_SIDE} pixels"
        )


def check_may_vary(picture: Picture) -> None:
    """Refuse a picture no variation can be made of (its size), whatever the request: /vary
    says so before it asks for a prompt the picture lacks."""
    _check_renderable(picture, "picture to vary")


def vary_request(base: RenderRequest, picture: Picture, strength: str | float) -> RenderRequest:
    """An img2img pass over ``picture`` with ``base``'s settings; ``strength`` is ``subtle``,
    ``strong`` or a number above 0 and at most 1 (how much may change)."""
    check_may_vary(picture)
    denoise = vary_denoise(strength)
    return _from_picture(base, picture, "img2img", denoising_strength=denoise)


def vary_denoise(strength: str | float) -> float:
    """The denoising strength ``strength`` names (``subtle``, ``strong`` or a number above 0
    and at most 1), refused with the accepted range."""
    try:
        return vary_strength(strength)
    except RenderInputError as error:
        raise RequestError(str(error)) from None


MaskedContent = Literal["fill", "original", "latent noise", "latent nothing"]


@dataclass(frozen=True)
class InpaintSettings:
    denoise: float = DEFAULT_INPAINT_DENOISE
    mask_blur: int = 4
    padding: int = 32
    fill: MaskedContent = "original"
    only_masked: bool = False
    invert: bool = False


def inpaint_request(
    base: RenderRequest, picture: Picture, mask: Picture, settings: InpaintSettings
) -> RenderRequest:
    """Repaint the white part of ``mask`` (the black part with ``invert``) of ``picture``."""
    _check_renderable(picture, "picture to inpaint")
    if (mask.width, mask.height) != (picture.width, picture.height):
        raise RequestError(
            f"the mask is {mask.width}x{mask.height} but the picture is "
            f"{picture.width}x{picture.height}; attach a mask of the same size"
        )
    return _from_picture(
        base,
        picture,
        "inpaint",
        mask_image=str(mask.path),
        denoising_strength=settings.denoise,
        options={
            MASK_BLUR: settings.mask_blur,
            ONLY_MASKED_PADDING: settings.padding,
            MASKED_CONTENT: settings.fill,
            ONLY_MASKED: settings.only_masked,
            MASK_INVERT: settings.invert,
        },
    )


def check_mask_paints(mask: Picture, invert: bool) -> None:
    """Refuse a saved inpaint mask that marks nothing to repaint, read as the engine reads it
    (which refused it only after the queue, in the channel). Blocking: it decodes the mask."""
    grey = load_input_image(mask.path, "the mask").convert("L")
    darkest, brightest = cast("tuple[int, int]", grey.getextrema())  # one band: (min, max)
    if invert and darkest > MASK_THRESHOLD:
        raise RequestError(
            f"the mask is all white, and invert repaints its black part (pixels at most "
            f"{MASK_THRESHOLD} of 255); paint black where the picture should change"
        )
    if not invert and brightest <= MASK_THRESHOLD:
        raise RequestError(
            f"the mask is all black: only its white part (pixels above {MASK_THRESHOLD} of 255) "
            "is repainted; paint white where the picture should change"
        )


def upscale_request(
    base: RenderRequest,
    picture: Picture,
    factor: int,
    mode: str = "fast",
    *,
    upscaler: str | None = None,
    installed_upscalers: Collection[str] = (),
) -> RenderRequest:
    """Enlarge ``picture`` ``factor`` times with ``upscaler`` (None: the worker's default,
    its first model upscaler, else Lanczos; spelt as installed when it is one of
    ``installed_upscalers``); ``creative`` then re-details with a light img2img pass using
    ``base``'s prompt and model. A name not installed is kept as typed: admission refuses it
    naming only the upscalers the server allows (``bot.policy.addons``), where this could name
    every installed one."""
    options: dict[str, Any] = {"upscale_factor": factor, "upscale_mode": mode}
    if mode == "fast":
        # It renders nothing and carries the picture's own text over whole: of its settings
        # only the words (checked as every prompt is) and a seed stay, so a Steps or CFG
        # scale it never uses refuses nothing, and no note tells of an unknown sampler.
        seed = base.seed if 0 <= base.seed <= MAX_SEED else random_seed()
        base = RenderRequest(prompt=base.prompt, negative_prompt=base.negative_prompt, seed=seed)
    if upscaler is not None:
        by_folded = {name.casefold(): name for name in installed_upscalers}
        options["upscaler"] = by_folded.get(upscaler.casefold(), upscaler)
    try:
        UpscaleOptions.from_options(options).output_size(picture.width, picture.height)
    except RenderInputError as error:
        raise RequestError(str(error)) from None
    return _from_picture(base, picture, "upscale", options=options)


def is_fast_upscale(request: RenderRequest) -> bool:
    """Whether ``request`` only enlarges its picture: nothing in it is rendered, so a new seed
    or prompt changes nothing, and its journaled request keeps only the picture's words and
    seed (``upscale_request``): the picture's settings are in its text."""
    return request.mode == "upscale" and request.options.get("upscale_mode", "fast") == "fast"


def fix_faces_request(base: RenderRequest, picture: Picture, *, restore: bool) -> RenderRequest:
    """Re-render each face of ``picture`` (the ADetailer-style pass, with ``base``'s prompt,
    model and settings and the picture's seed), then restore them when ``restore``."""
    _check_renderable(picture, "picture to fix faces in")
    options: dict[str, Any] = {FIX_FACES: True}
    if restore:
        options[FACE_RESTORE] = True
    return _from_picture(base, picture, "faces", options=options)


# How far a pan button moves the frame: half the picture's side in that direction.
PAN_FRACTION = 0.5
# Outpainting repaints new canvas only, so it may change almost everything there.
EXPAND_DENOISE = 0.95
PAN_DIRECTIONS = ("left", "right", "up", "down")


def expand_request(
    base: RenderRequest, picture: Picture, *, zoom_out: float | None = None, pan: str | None = None
) -> RenderRequest:
    """Outpaint ``picture``: ``zoom_out`` grows the canvas around it (1.5 or 2 times), ``pan``
    adds half a picture in one direction; the original pixels are kept as they are."""
    if (zoom_out is None) == (pan is None):
        raise RequestError("choose either a zoom-out factor or a pan direction")
    _check_renderable(picture, "picture to expand")
    options: dict[str, Any]
    if pan is not None:
        if pan not in PAN_DIRECTIONS:
            raise RequestError(f"pan must be one of {', '.join(PAN_DIRECTIONS)}, not {pan!r}")
        side = picture.width if pan in ("left", "right") else picture.height
        options = {"outpaint": {pan: int(side * PAN_FRACTION) // 8 * 8}}
    else:
        options = {"zoom_out": zoom_out}
    # The size the engine renders (``inference.passes.img2img.outpainted``), named: the quota
    # reserves the canvas's pixels, not the picture's, and a server's pixel cap reads it here.
    try:
        outpaint = OutpaintOptions.from_options(options)
        assert outpaint is not None  # options holds one of the two
        margins = outpaint.margins(picture.width, picture.height)
    except RenderInputError as error:
        raise RequestError(str(error)) from None
    width, height = margins.canvas_size(picture.width, picture.height)
    return _from_picture(
        base,
        picture,
        "img2img",
        denoising_strength=EXPAND_DENOISE,
        options=options,
        width=width,
        height=height,
    )
