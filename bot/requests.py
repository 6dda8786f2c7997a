"""From what a member typed to a validated ``RenderRequest`` (pure: no discord, no torch)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from inference.face_options import FACE_RESTORE, FIX_FACES
from inference.limits import (
    CFG_ACCEPTS,
    CLIP_SKIP_ACCEPTS,
    MAX_CFG,
    MAX_CLIP_SKIP,
    MAX_SIZE,
    MAX_STEPS,
    MIN_CFG,
    MIN_SIZE,
    MIN_STEPS,
    SIZE_MULTIPLE,
    STEPS_ACCEPTS,
    out_of_range,
)
from inference.limits import MAX_SEED as MAX_SEED
from inference.names import as_typed
from inference.prompts import (
    InlineFlags,
    PromptError,
    parse_aspect_ratio,
    parse_inline_flags,
    picture_seeds,
    resolve_flags,
)
from inference.prompts.flags import given_seed, picture_seed, random_seed
from inference.quoting import echoed
from inference.samplers import scheduler_spec
from inference.types import DEFAULT_SAMPLER, RenderInputError, RenderRequest
from inference.validation import validate_request

if TYPE_CHECKING:
    from bot.presets import Preset

_SIZE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")
# A side of more digits is past every size and refused unread (int() refuses 4,300 and more).
_MAX_SIDE_DIGITS = 6
# The longest prompt (and negative prompt) accepted from anywhere: typed, or read from a
# picture's parameters; also the slash commands' prompt options' length limit.
MAX_PROMPT_CHARS = 4000
# The slash commands' negative options are registered shorter (as they always were): a longer
# negative prompt, up to MAX_PROMPT_CHARS, comes from a picture's parameters, the prompt's
# --no flag or the Remix form.
MAX_NEGATIVE_OPTION_CHARS = 2000
# The slash commands' seed options' top: Discord's integer options stop at 2**53 - 1; a seed
# past it, up to ``MAX_SEED``, is typed as ``--seed`` (``resolve_seed`` reads both).
SEED_OPTION_TOP = 2**53 - 1


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
    # Fast mode is never a default: only a member's option or ``--fast`` turns it on.
    fast: bool | None = None
    clip_skip: int | None = None
    preset: str | None = None
    # The web UI's "Schedule type" (Karras, Exponential...); None: what the sampler name says.
    schedule_type: str | None = None
    # /blend: the pictures say what to draw, so the words may be left out.
    prompt_optional: bool = False

    @cached_property
    def typed(self) -> tuple[str, InlineFlags]:
        """The prompt without its inline flags, and the flags. Parsed once per options (the
        preset's name, the requests and the style reference all read them), on the first
        reader's thread; a bad flag or a prompt too long raises ``RequestError``."""
        check_prompt_length(self.prompt, "prompt")
        try:
            return parse_inline_flags(self.prompt)
        except PromptError as error:
            raise RequestError(str(error)) from None


@dataclass(frozen=True)
class Defaults:
    steps: int = 20
    cfg: float = 7.0
    sampler: str = DEFAULT_SAMPLER


def resolve_seed(seed: int | None, name: str = "seed") -> int:
    """-1 or nothing means a fresh random seed; a seed past ``MAX_SEED`` is refused (the
    error calls it ``name``); any other is rendered and recorded as given."""
    if isinstance(resolved := given_seed(seed, name), str):
        raise RequestError(resolved)
    return resolved


def parse_size(text: str) -> tuple[int, int] | str:
    """``WxH`` (e.g. ``512x768``) as a pair, or an aspect ratio (e.g. ``16:9``) as its text,
    left for the engine to apply to the model's native size."""
    if match := _SIZE.match(text):
        for name, digits in (("width", match.group(1)), ("height", match.group(2))):
            if (
                len(digits) > _MAX_SIDE_DIGITS
                or not MIN_SIZE <= int(digits) <= MAX_SIZE
                or int(digits) % SIZE_MULTIPLE
            ):
                raise RequestError(
                    f"size {echoed(text)}: {name} must be a multiple of {SIZE_MULTIPLE} "
                    f"between {MIN_SIZE} and {MAX_SIZE}"
                )
        return int(match.group(1)), int(match.group(2))
    if ":" in text:
        try:
            aspect_w, aspect_h = parse_aspect_ratio(text.strip())
        except PromptError:
            raise RequestError(
                f"size {echoed(text)}: an aspect ratio needs two whole numbers 1..21, e.g. 16:9"
            ) from None
        return f"{aspect_w}:{aspect_h}"
    raise RequestError(
        f"size {echoed(text)} is neither WxH (e.g. 512x768) nor an aspect ratio (e.g. 16:9)"
    )


def check_prompt_length(text: str, what: str) -> None:
    """One cap for every prompt: typed, or read from an uploaded picture's parameters."""
    if len(text) > MAX_PROMPT_CHARS:
        raise RequestError(
            f"{what} is {len(text):,} characters long; at most {MAX_PROMPT_CHARS:,} are allowed"
        )


def preset_named(options: ImagineOptions) -> str | None:
    """The preset the member asked for: the ``preset`` option, else ``--preset`` in the prompt."""
    return options.preset or options.typed[1].preset


def style_reference_flags(options: ImagineOptions) -> tuple[str | None, float | None]:
    """``--sref`` (a message link or id) and ``--sref-strength`` typed in the prompt."""
    flags = options.typed[1]
    return flags.sref, flags.sref_strength


def build_request(
    options: ImagineOptions,
    defaults: Defaults = Defaults(),
    preset: Preset | None = None,
    model_defaults: Callable[[str | None], Defaults] | None = None,
) -> RenderRequest:
    """Validate the options and the prompt's inline flags and fill the gaps; the seed is made
    concrete so a re-run is the same.

    An option set explicitly beats the same flag typed in the prompt (``--ar`` loses to
    ``size``); each such conflict becomes a note. What both leave out comes from ``preset``,
    then ``defaults``. Without a size the model's native one is used (512 for SD1.5, 1024
    for SDXL...). ``--repeat`` is for :func:`build_requests`, and ``--preset`` for a caller
    that looks the preset up: without one, each only adds a note. ``model_defaults``: as
    for :func:`build_requests`.
    """
    request, flags = _build(options, defaults, preset, model_defaults)
    notes = list(request.notes)
    if (flags.repeat or 1) > 1:
        notes.append(f"--repeat {flags.repeat} is for /imagine only; this rendered once")
    if flags.preset and preset is None:
        notes.append(f"--preset {flags.preset} is for /imagine only; it was not applied")
    if flags.sref:
        notes.append("--sref is for /imagine only; it was not applied")
    return dataclasses.replace(request, notes=notes)


def build_requests(
    options: ImagineOptions,
    defaults: Defaults = Defaults(),
    preset: Preset | None = None,
    model_defaults: Callable[[str | None], Defaults] | None = None,
) -> list[RenderRequest]:
    """:func:`build_request`, once per ``--repeat``: each job has its own seed (a typed seed
    goes on where the previous job's pictures stopped, so no picture repeats).
    ``model_defaults`` gives the defaults for the model asked for (None: the default model),
    its family's (4 steps for Flux schnell) in place of ``defaults``."""
    first, flags = _build(options, defaults, preset, model_defaults)
    seeded = flags.seed not in (None, -1)
    return [
        dataclasses.replace(
            first,
            seed=picture_seed(first.seed, index * first.count) if seeded else random_seed(),
        )
        if index
        else first
        for index in range(flags.repeat or 1)
    ]


def check_saved_values(
    steps: int | None,
    cfg: float | None,
    size: str | None,
    clip_skip: int | None,
    sampler: str | None,
) -> None:
    """The values a preset or a member's /settings keep, checked when they are saved;
    ``RequestError`` names the first bad one (None: not set)."""
    if sampler is not None:
        check_sampler(sampler)
    if steps is not None and not MIN_STEPS <= steps <= MAX_STEPS:
        raise RequestError(out_of_range("steps", STEPS_ACCEPTS, steps))
    if cfg is not None and not MIN_CFG <= cfg <= MAX_CFG:
        raise RequestError(out_of_range("CFG scale", CFG_ACCEPTS, cfg))
    if size is not None:
        parse_size(size)
    if clip_skip is not None:
        _check_clip_skip(clip_skip)


def check_sampler(sampler: str) -> None:
    """``RequestError`` unless ``sampler`` names a sampler, checked as a render checks it."""
    try:
        scheduler_spec(sampler)
    except RenderInputError as error:
        raise RequestError(str(error)) from None


def _check_clip_skip(clip_skip: int) -> None:
    if not 1 <= clip_skip <= MAX_CLIP_SKIP:
        raise RequestError(out_of_range("clip skip", CLIP_SKIP_ACCEPTS, clip_skip))


def _render_flags(flags: InlineFlags, clip_skip: int | None) -> dict[str, object]:
    """The engine options the flags and the clip skip ask for (absent when they change nothing)."""
    extra: dict[str, object] = {}
    if clip_skip is not None:
        _check_clip_skip(clip_skip)
        extra["clip_skip"] = clip_skip
    if flags.chaos:
        extra["chaos"] = flags.chaos
    if flags.tile:
        extra["tile"] = True
    if flags.stop is not None and flags.stop < 100:
        extra["stop"] = flags.stop
    if flags.relax:
        extra["relax"] = True
    if flags.faces:
        extra[FIX_FACES] = True
    if flags.restore_faces:
        extra[FACE_RESTORE] = True
    return extra


def _build(
    options: ImagineOptions,
    defaults: Defaults,
    preset: Preset | None,
    model_defaults: Callable[[str | None], Defaults] | None = None,
) -> tuple[RenderRequest, InlineFlags]:
    prompt, typed = options.typed
    prompt = prompt.strip()
    if not prompt and not options.prompt_optional:
        raise RequestError("prompt is empty: describe the picture you want")
    flags, notes = resolve_flags(
        dataclasses.replace(typed, aspect_ratio=None),
        InlineFlags(
            seed=options.seed,
            steps=options.steps,
            cfg=options.cfg,
            sampler=options.sampler,
            model=options.model,
            count=options.count,
            fast=options.fast,
            preset=options.preset,
        ),
    )
    if preset is not None:
        flags = dataclasses.replace(
            flags,
            steps=flags.steps if flags.steps is not None else preset.steps,
            cfg=flags.cfg if flags.cfg is not None else preset.cfg,
            sampler=flags.sampler or preset.sampler,
            model=flags.model or preset.model,
        )
    if flags.model is not None:  # looked up as the registry names files
        flags = dataclasses.replace(flags, model=as_typed(flags.model))
    if model_defaults is not None:
        defaults = model_defaults(flags.model)
    width = height = None
    clip_skip = options.clip_skip
    if clip_skip is None and preset is not None:
        clip_skip = preset.clip_skip
    extra = _render_flags(flags, clip_skip)
    size_text = options.size or (preset.size if preset and typed.aspect_ratio is None else None)
    if size_text:
        if options.size and typed.aspect_ratio is not None:
            notes.append(f"the size option ({options.size}) overrides the prompt's --ar")
        size = parse_size(size_text)
        if isinstance(size, str):
            extra["aspect"] = size
        else:
            width, height = size
    elif typed.aspect_ratio is not None:
        extra["aspect"] = "{}:{}".format(*typed.aspect_ratio)
    given_negative = (
        options.negative if options.negative is not None else (preset.negative if preset else None)
    )
    negative = ", ".join(part for part in ((given_negative or "").strip(), flags.no) if part)
    request = RenderRequest(
        prompt=prompt,
        negative_prompt=negative,
        seed=resolve_seed(flags.seed),
        steps=flags.steps if flags.steps is not None else defaults.steps,
        cfg_scale=flags.cfg if flags.cfg is not None else defaults.cfg,
        width=width,
        height=height,
        sampler=flags.sampler or defaults.sampler,
        schedule_type=options.schedule_type or RenderRequest.schedule_type,
        model=flags.model,
        count=flags.count if flags.count is not None else 1,
        fast=bool(flags.fast),
        options=extra,
        notes=notes,
    )
    try:
        validate_request(request)
    except RenderInputError as error:
        raise RequestError(str(error)) from None
    return request, flags


def reroll(request: RenderRequest) -> RenderRequest:
    """The same request with a new random seed (the 🔄 button)."""
    return dataclasses.replace(request, seed=random_seed())


def picture_alone(request: RenderRequest, index: int, seed: int) -> RenderRequest:
    """Picture ``index`` of ``request``'s batch as a request of its own (U1-U4, Remix of one
    picture): the ``seed`` it was recorded with and its variation seed (``picture_seeds``: a
    varied batch steps only that). A variation seed left random (-1; admission resolves it
    since) stays so: which one each picture drew is not known."""
    variation_seed = request.variation_seed
    if variation_seed is not None and variation_seed != -1:
        _, variation_seed = picture_seeds(
            request.seed, variation_seed, request.variation_strength, index
        )
    return dataclasses.replace(request, seed=seed, variation_seed=variation_seed)
