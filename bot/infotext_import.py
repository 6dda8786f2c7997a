"""A pasted infotext (the web UI's or Civitai's form) as a request, and what of it could not be
honoured here (pure: no discord, no torch).

Every setting Easel can reproduce is taken; every other one is named in a sentence (an unknown
sampler, a LoRA or model that is not installed, a size out of range, fields Easel has no use
for) instead of being changed silently. Those sentences also ride on the request as notes, so
the member reads them under the result.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.policy.moderation import find_banned_rendering
from bot.policy.prompt_safety import wildcards_read
from bot.requests import (
    Defaults,
    ImagineOptions,
    RequestError,
    build_request,
    check_prompt_length,
    parse_size,
)
from inference.face_options import (
    FACE_RESTORE,
    FIX_DILATION,
    FIX_FACES,
    FIX_FACES_CONFIDENCE,
    FIX_FACES_PROMPT,
    FIX_FACES_STRENGTH,
    FIX_MASK_BLUR,
    FIX_PADDING,
    FIX_SEED_KEY,
    HAAR_DETECTOR,
    NO_VAE,
)
from inference.file_hashes import file_sha256, recalled_file_sha256
from inference.infotext import (
    CFG_SCALE,
    DISTILLED_CFG_SCALE,
    SAMPLER,
    SCHEDULE_TYPE,
    InfotextError,
    InfotextValue,
    asks_for_sampler,
    described_sampler,
    guidance_of,
    parse_infotext,
    sampler_and_schedule,
)
from inference.limits import (
    DEFAULT_CLIP_SKIP,
    MAX_CLIP_SKIP,
    MAX_COUNT,
    MAX_SEED,
    between,
    written_seed,
    written_seed_note,
)
from inference.metadata import latent_channels_of
from inference.model_list import installed_flow_models
from inference.prompts import PromptError, WildcardLibrary, build_plan, extract_extra_networks
from inference.prompts.chaos import MAX_CHAOS
from inference.prompts.extra_networks import without_unknown_loras
from inference.prompts.flags import picture_seeds
from inference.quoting import echoed
from inference.registry import ModelRegistry
from inference.samplers import canonical_sampler_name
from inference.types import RenderInputError, RenderRequest
from inference.upscale import (
    LANCZOS,
    MAX_HIRES_SCALE,
    HiresOptions,
    hires_scale_to,
    latent_upscaler,
)
from inference.vae_files import vae_file
from inference.validation import validate_request

# Room for a prompt and a negative prompt at their cap, and the parameters (Civitai's resource
# lists are long); longer text is refused before it is parsed.
MAX_INFOTEXT_CHARS = 16_000
MODEL_HASH_LENGTH = 10  # the web UI's short SHA-256; older 8-digit hashes cannot be matched
NETWORK_HASH_LENGTH = 12  # the web UI's short hash of a LoRA or an embedding
NOT_HONOURED = "not honoured"
# ADetailer's keys whose values become fix-faces options (``_Reader._read_faces``).
FACE_FIELDS = {
    "ADetailer prompt": FIX_FACES_PROMPT,
    "ADetailer denoising strength": FIX_FACES_STRENGTH,
    "ADetailer confidence": FIX_FACES_CONFIDENCE,
}
# ADetailer's mask keys, and what Easel's face pass uses instead (``inference.passes.faces``).
FACE_MASK_FIELDS: Mapping[str, object] = {
    "ADetailer mask blur": FIX_MASK_BLUR,
    "ADetailer inpaint padding": FIX_PADDING,
    "ADetailer dilate erode": FIX_DILATION,
    "ADetailer inpaint only masked": True,
}
# ADetailer's settings for a pass of its own, each behind its "use separate" switch (its
# scheduler behind the sampler's): Easel's face pass renders with the render's, and its
# pass over a stored picture writes those it used (``inference.passes.faces``), with the
# seed 🔄 drew (``FIX_SEED_KEY``, Easel's: ADetailer renders at the picture's).
_SEPARATE_SWITCHES = {
    "checkpoint": "checkpoint",
    "VAE": "VAE",
    "sampler": "sampler",
    "scheduler": "sampler",
    "steps": "steps",
    "CFG scale": "CFG scale",
    "CLIP skip": "CLIP skip",
}
_FACE_SEPARATE_FIELDS = (
    *(f"ADetailer {what}" for what in _SEPARATE_SWITCHES),
    *(f"ADetailer use separate {what}" for what in set(_SEPARATE_SWITCHES.values())),
    FIX_SEED_KEY,
)
# ADetailer's first unit's keys Easel reads; its 2nd, 3rd... units add " 2nd", " 3rd"...
_MODEL = "ADetailer model"
_FACE_UNIT_FIELDS = (_MODEL, *FACE_FIELDS, *FACE_MASK_FIELDS, *_FACE_SEPARATE_FIELDS)
_UNIT_SUFFIX = re.compile(r"^ADetailer .+( [0-9]{1,2}(?:st|nd|rd|th))$")
# ADetailer's face models (face_yolov8n.pt, mediapipe_face_full...); the others find hands,
# people or anything, which Easel's pass does not. Easel's own: Haar, or a YuNet file.
_FACE_DETECTOR_PREFIXES = ("face_", "mediapipe_face")
# What Easel's --stop takes (bot.requests): a percentage of the steps, 100 running them all.
_STOP_PERCENT = range(10, 101)
# Whole numbers past every setting's range (a seed has 63 bits) are read as text, which each
# setting refuses in a sentence: no float() or formatting of them overflows.
_MAX_WHOLE_NUMBER = 2**64
# ``Hires resize`` sides of more digits are refused unread (int() has a digit limit).
_MAX_SIDE_DIGITS = 5
_LISTED_UNKNOWN_FIELDS = 8
# The options of a picture's text a model of another family may refuse, as notes name them.
MODEL_SHAPED = {"clip_skip": "clip skip", "tile": "tiling", "pad_conds": "pad conds"}
# Digits of the longest seed a grid's seeds are read as.
_MAX_SEED_DIGITS = len(str(MAX_SEED))

# A web UI checkpoint title: its name (a file's, with its extension) and its short hash.
_CHECKPOINT_TITLE = re.compile(r"(.*?)(?: \[([0-9a-fA-F]+)\])?", re.DOTALL)

# Fields that only describe the picture (hashes, versions, dates) or that Easel reads below.
_READ_FIELDS = frozenset(
    {
        "Steps",
        SAMPLER,
        SCHEDULE_TYPE,
        CFG_SCALE,
        DISTILLED_CFG_SCALE,  # Flux dev's guidance (``guidance_of``)
        "Seed",
        "Size",
        "Model",
        "Model hash",
        "Quantization",
        "VAE",
        "VAE hash",
        "Variation seed",
        "Variation seed strength",
        "Clip skip",
        "Denoising strength",
        "Hires upscale",
        "Hires resize",
        "Hires steps",
        "Hires upscaler",
        "Refiner",
        "Refiner switch at",
        "Tiling",
        "Stop at",
        "Chaos",
        "Relax",
        # Fix faces and face restoration (inference.face_options), read by _read_faces.
        *_FACE_UNIT_FIELDS,
        "ADetailer version",
        "Face restoration",
        "Face restoration model",
        "Pad conds",
        "Fast",
        "RNG",
        "Emphasis",
        "Lora hashes",
        "TI hashes",
        "Hashes",
        "Version",
        "Template",
        "Negative Template",
        "Prompt warnings",
        "Civitai resources",
        "Civitai metadata",
        "Created Date",
        # Easel's own grid of a batch (``bot.images.grid_note``), read by _read_grid.
        "Grid",
        "Grid seeds",
    }
)


def _no_vae_refusal(_request: RenderRequest) -> str | None:
    return None


def _no_lora_hashes(_name: str) -> Collection[str] | None:
    return None


@dataclass(frozen=True)
class Installed:
    """What this Easel can render with, to match an infotext's names against."""

    models: Collection[str]
    # The web UI short hash of an installed model (may read the file once: call off the loop),
    # or None: not known yet (the file is being read in the background).
    model_hash: Callable[[str], str | None]
    loras: Collection[str]
    vaes: Collection[str]
    upscalers: Collection[str]
    # The model used when the infotext's is not installed (None: the server's default).
    fallback_model: str | None = None
    # The render's refusal of the request's VAE on its model (one of the other family; reads
    # file headers: call off the loop), or None.
    vae_refusal: Callable[[RenderRequest], str | None] = _no_vae_refusal
    # The embeddings a job here reads (installed and allowed); other names are plain words.
    embeddings: Collection[str] = ()
    # The models of a flow family (Flux, SD 3: ``read_picture_options``' ``flow_model``;
    # ``inference.model_list.FlowModels``).
    flow_models: Collection[str] = ()
    # Those whose CFG is Flux's distilled guidance (``guidance_of``; SD 3 runs a true CFG:
    # ``inference.model_list.FlowModels``).
    distilled_models: Collection[str] = ()
    # The short hashes an installed LoRA is known by (of its tensor data: the web UI's and
    # Easel's since the fourteenth stop; of the whole file: Civitai's AutoV2 and Easel's
    # before), or None: not known yet (being read in the background, or unreadable).
    lora_hashes: Callable[[str], Collection[str] | None] = _no_lora_hashes
    # The wildcard folder admission draws a prompt's ``__name__`` from (None: none): a grid's
    # ``Template`` is drawn with it, as its batch would be (``_Reader._read_grid_prompts``).
    wildcards_dir: Path | None = None


@dataclass(frozen=True)
class ImportedSettings:
    request: RenderRequest
    # One sentence per setting that could not be honoured (also in ``request.notes``).
    unhonoured: list[str]


def request_from_infotext_text(
    text: str,
    installed: Installed,
    defaults: Defaults | None = None,
    banned_words: Collection[str] = (),
) -> ImportedSettings:
    """The request ``text`` (an infotext) describes, as far as it can be honoured here.

    Its notes (posted under the result, in Easel's voice) quote what was pasted only where
    it renders none of ``banned_words`` (the server's, read as a prompt's are); else the note
    names the setting alone.

    ``RequestError`` when there is nothing to render: too long, unreadable (``InfotextError``),
    no prompt, no parameters, a
    prompt over the one cap every prompt has, or a VAE the model cannot take (another family's:
    the render's own sentence, before anything is queued or charged)."""
    if len(text) > MAX_INFOTEXT_CHARS:
        raise RequestError(
            f"those settings are {len(text):,} characters long; at most "
            f"{MAX_INFOTEXT_CHARS:,} are read"
        )
    try:
        prompt, negative, params = parse_infotext(text)
    except InfotextError as error:
        raise RequestError(str(error)) from None
    if not params:
        raise RequestError(
            "no generation settings found: paste the whole infotext, ending with its "
            "'Steps: …, Sampler: …, Seed: …' line (or use /imagine for a plain prompt)"
        )
    check_prompt_length(prompt, "the settings' prompt")
    check_prompt_length(negative, "the settings' negative prompt")
    if not prompt.strip():
        raise RequestError("those settings carry no prompt; nothing to render")
    defaults = defaults or Defaults()
    base = build_request(ImagineOptions(prompt=prompt, negative=negative), defaults)
    bounded = {key: _bounded(value) for key, value in params.items()}
    reader = _Reader(bounded, installed, defaults, base)
    request = reader.read()
    notes = [
        f"{NOT_HONOURED}: {_shown(sentence, setting, banned_words)}"
        for sentence, setting in zip(reader.unhonoured, reader.settings_unhonoured, strict=True)
    ]
    return ImportedSettings(
        dataclasses.replace(request, notes=[*request.notes, *reader.said, *notes]),
        reader.unhonoured,
    )


@dataclass(frozen=True)
class PictureOptions:
    """The options a picture's text sets that shape its pixels or its place in the queue."""

    options: dict[str, object]
    # (sentence, setting) for each one left out, the setting as Easel names it.
    unhonoured: list[tuple[str, str]]


def _quoted(setting: str, value: InfotextValue) -> str:
    return f"{setting} {echoed(value)}"


def read_picture_options(
    params: Mapping[str, InfotextValue],
    vaes: Collection[str],
    vae_refusal: Callable[[str], str | None],
    *,
    stand_in: str | None,
    named: Callable[[str, InfotextValue], str] = _quoted,
    flow_model: bool = False,
) -> PictureOptions:
    """``Clip skip``, ``Pad conds``, ``Tiling``, ``Relax`` and ``VAE`` as the picture's text
    writes them (read by /use-settings and by every edit of a picture, ``bot.edits``); a clip
    skip of 1 is the default, not an option to keep.

    ``vaes``: those usable here; ``vae_refusal(stem)``: the render's refusal of that VAE on the
    model used, or None; ``stand_in``: the model standing in for the picture's (not installed
    or not allowed), or None when the picture's own is used. A VAE that does not fit the stand-in
    is left out with a sentence; one that does not fit the picture's own model is refused
    (``RequestError``, before anything is queued or charged). ``named(setting, value)`` is how a
    sentence names the picture's value (quoted by default: the caller checks banned words).
    ``flow_model``: the picture's own model is of a flow family (Flux, SD 3), which takes no
    clip skip, tiling or pad conds; the picture was not rendered with them (another UI wrote
    them), so rendering it again leaves them out, with a sentence."""
    get = params.get
    options: dict[str, object] = {}
    unhonoured: list[tuple[str, str]] = []
    clip_skip = get("Clip skip")
    if clip_skip is not None:
        if isinstance(clip_skip, int) and 1 <= clip_skip <= MAX_CLIP_SKIP:
            if clip_skip != DEFAULT_CLIP_SKIP:  # the default: nothing to keep or leave out
                options["clip_skip"] = clip_skip
        else:
            unhonoured.append(
                (
                    f"{named('clip skip', clip_skip)} is not 1-{MAX_CLIP_SKIP}; 1 is used instead",
                    "clip skip",
                )
            )
    # --relax is the queue class: free and last, admitted as a typed --relax is
    # (``bot.policy.quota.check_relax``).
    for key, written in (("pad_conds", "Pad conds"), ("tile", "Tiling"), ("relax", "Relax")):
        if str(get(written)) == "True":
            options[key] = True
    dropped = [MODEL_SHAPED[key] for key in MODEL_SHAPED if flow_model and options.pop(key, None)]
    if dropped:
        left_out = ", ".join(dropped)
        unhonoured.append(
            (f"{left_out} left out: the picture's model (flow matching) takes none", left_out)
        )
    vae = get("VAE")
    if vae is not None:
        stem = Path(str(vae)).stem
        if stem not in vaes:
            unhonoured.append(
                (f"{named('VAE', vae)} is not installed here; the model's own VAE is used", "VAE")
            )
        elif (refusal := vae_refusal(stem)) is None:
            options["vae"] = stem
        elif stand_in is not None:  # the stand-in model's family differs
            unhonoured.append(
                (
                    f"{named('VAE', vae)} does not fit {stand_in}, which stands in for the "
                    "picture's; the model's own VAE is used",
                    "VAE",
                )
            )
        else:  # refused now, as the render would, charging nothing
            raise RequestError(refusal)
    return PictureOptions(options, unhonoured)


class _Reader:
    """Applies the infotext's settings one group at a time; a group the request checks refuse
    is left out with a sentence saying what is used instead."""

    def __init__(
        self,
        params: Mapping[str, InfotextValue],
        installed: Installed,
        defaults: Defaults,
        request: RenderRequest,
    ) -> None:
        self.params = params
        self.installed = installed
        self.defaults = defaults
        self.request = request
        self.unhonoured: list[str] = []
        self.settings_unhonoured: list[str] = []  # the setting each sentence is about
        # Sentences about settings honoured in a way the member may not expect (no pasted text).
        self.said: list[str] = []
        # The picture's model is not installed: another one stands in for it.
        self.model_substituted = False
        # Keys read or told about beyond ``_READ_FIELDS`` (ADetailer's 2nd, 3rd... units).
        self.read_keys: set[str] = set()

    def read(self) -> RenderRequest:
        get = self.params.get
        self._apply({"steps": get("Steps")}, "steps", f"{self.defaults.steps} are used instead")
        self._read_seed()
        self._read_size()
        self._read_sampler()
        self._read_model()
        self._read_guidance()  # after the model, which says whether it is distilled guidance
        self._read_variation()
        self._read_grid()
        self._read_options()
        self._read_networks()
        self._read_hashed_networks()
        self._read_noise_source()
        self._list_unknown_fields()
        return self.request

    def _read_seed(self) -> None:
        """The seed the text's renders again at (``written_seed``; else the request's random
        one), told where that is not the seed written."""
        written = self.params.get("Seed")
        if (note := written_seed_note(written)) is not None:
            self._tell(note, "seed")
        if (seed := written_seed(written)) is not None:
            self.request = dataclasses.replace(self.request, seed=seed)

    @property
    def _model(self) -> str | None:
        """The model the request renders with, as far as known (None: the server's default)."""
        return self.request.model or self.installed.fallback_model

    def _read_guidance(self) -> None:
        """The CFG (``guidance_of``) for the model now chosen. Forge's Flux dev may run true
        CFG (``CFG scale`` above 1) on top of its distilled guidance; a Flux model here takes
        the distilled value as its CFG (its guidance alone); an SD or SD 3 model runs true
        CFG, and no distilled guidance."""
        distilled_model = self._model in self.installed.distilled_models
        cfg = guidance_of(self.params, distilled_model=distilled_model)
        self._apply(
            {"cfg_scale": float(cfg) if isinstance(cfg, int | float) else cfg},
            "CFG scale",
            f"{self.defaults.cfg:g} is used instead",
        )
        true_cfg, distilled = self.params.get(CFG_SCALE), self.params.get(DISTILLED_CFG_SCALE)
        if distilled is None or true_cfg in (None, 1, distilled):
            return
        model_named = repr(self._model) if self._model else "the default model"
        if distilled_model:
            sentence = (
                f"CFG scale {echoed(true_cfg)} beside distilled CFG scale {echoed(distilled)}: "
                f"{model_named} takes the distilled value as its CFG, not the CFG scale; "
                "the picture will differ"
            )
        else:
            sentence = (
                f"distilled CFG scale {echoed(distilled)}: {model_named} takes no distilled "
                "guidance; "
                f"CFG scale {echoed(true_cfg)} is used"
            )
        self._tell(sentence, "CFG scale")

    def _tell(self, sentence: str, setting: str) -> None:
        """``sentence`` about ``setting`` (as Easel names it: never the pasted text)."""
        self.unhonoured.append(sentence)
        self.settings_unhonoured.append(setting)

    def _apply(self, changes: dict[str, Any], what: str, instead: str) -> bool:
        """``changes`` (None values skipped) when the request checks accept them; False
        where they refuse them (told, ``instead`` done)."""
        changes = {key: value for key, value in changes.items() if value is not None}
        if not changes:
            return True
        try:
            candidate = dataclasses.replace(self.request, **changes)
            validate_request(candidate)
        except (RenderInputError, ValueError) as error:
            self._tell(f"{what}: {error}; {instead}", what)
            return False
        except TypeError:  # text where the request takes a number
            self._tell(f"{what}: not a number in range; {instead}", what)
            return False
        self.request = candidate
        return True

    def _read_size(self) -> None:
        size = self.params.get("Size")
        if size is None:
            return
        try:
            parsed = parse_size(str(size))
        except RequestError as error:
            self._tell(f"{error}; the model's native size is used instead", "size")
            return
        if isinstance(parsed, str):  # an aspect ratio is no picture size
            self._tell(
                f"size {echoed(size)} is not WxH; the model's native size is used instead", "size"
            )
            return
        self._apply(
            {"width": parsed[0], "height": parsed[1]},
            "size",
            "the model's native size is used instead",
        )

    def _read_sampler(self) -> None:
        try:
            named = sampler_and_schedule(self.params)
        except RenderInputError:
            self._read_sampler_alone()
            return
        if named is not None:
            sampler, schedule_type = named
            self.request = dataclasses.replace(
                self.request, sampler=sampler, schedule_type=schedule_type
            )

    def _read_sampler_alone(self) -> None:
        """The sampler without its schedule type, when only the type cannot be used here."""
        try:
            sampler = canonical_sampler_name(str(self.params.get(SAMPLER)))
        except RenderInputError:
            self._tell(
                f"{described_sampler(self.params)} is not available here; "
                f"{self.defaults.sampler} is used instead (the picture will differ)",
                "sampler",
            )
            return
        self.request = dataclasses.replace(self.request, sampler=sampler)
        self._tell(
            f"schedule type {echoed(self.params.get(SCHEDULE_TYPE))} is not available for "
            f"{sampler} here; the sampler's own schedule is used instead (the picture will differ)",
            "schedule type",
        )

    def _read_model(self) -> None:
        name = self.params.get("Model")
        wanted_hash = _model_hash_of(self.params)
        if name is None and wanted_hash is None:
            return
        models = sorted(self.installed.models)
        if isinstance(name, str) and name in self.installed.models:
            self.request = dataclasses.replace(self.request, model=name)
            here = self.installed.model_hash(name)
            if wanted_hash is not None and here is not None and not here.startswith(wanted_hash):
                self._tell(
                    f"model {echoed(name)} here has hash {here}, not {wanted_hash}: a different "
                    "file of that name, so the picture may differ",
                    "model",
                )
            return
        not_hashed = 0
        if wanted_hash is not None:
            for model in models:
                here = self.installed.model_hash(model)
                not_hashed += here is None
                if here is not None and here.startswith(wanted_hash):
                    self.request = dataclasses.replace(self.request, model=model)
                    return
        fallback = self.installed.fallback_model
        instead = f"{fallback!r} is used instead" if fallback else "the default model is used"
        named = f"model {echoed(name)}" if name is not None else "the model"
        hash_text = f" (hash {wanted_hash})" if wanted_hash else ""
        self.request = dataclasses.replace(self.request, model=fallback)
        self.model_substituted = True
        # The Vary button's words (``bot.policy.unavailable``): one sentence whether the file
        # is missing or the server leaves it out, so a model left out is not told installed.
        sentence = f"{named}{hash_text} is not installed or not allowed here; {instead}"
        if not_hashed:
            sentence += (
                f". If it is one of the models here whose hash is still being read "
                f"({not_hashed} left), try again in a minute"
            )
        self._tell(sentence, "model")

    def _read_variation(self) -> None:
        """The variation seed, read by the seed's rule (``written_seed``: another UI's 64-bit
        one at its low 32 bits; -1 or one naming no noise a random one), and its strength;
        told where the seed is not the one written."""
        written, strength = (
            self.params.get("Variation seed"),
            self.params.get("Variation seed strength"),
        )
        if written is None and strength is None:
            return
        seed = written_seed(written)
        if seed is None and written is not None:
            seed = -1  # a random variation seed, drawn at admission
        taken = self._apply(
            {"variation_seed": seed, "variation_strength": strength},
            "variation seed",
            "rendered without a variation",
        )
        if taken and (note := written_seed_note(written, "variation seed")) is not None:
            self._tell(note, "variation seed")

    def _read_grid(self) -> None:
        """Easel's own grid (``Grid: N images, Grid seeds: …`` after its first picture's
        settings): the batch is made again where a request can say it; else its first picture
        alone, told."""
        grid, listed = self.params.get("Grid"), self.params.get("Grid seeds")
        if grid is None and listed is None:
            return
        words = str(listed).split() if listed is not None else []
        pictures = f"grid of {len(words)} pictures" if words else "grid"
        why = self._why_not_a_batch(grid, words)
        if why is None:
            why = self._read_grid_prompts()
        if why is not None:
            seed = self.request.seed
            first = "its first picture's settings are used" + (
                f" (seed {seed})" if seed >= 0 else ""
            )
            self._tell(f"{pictures} ({why}): {first}", "grid")
            return
        self.request = dataclasses.replace(self.request, count=len(words))

    def _why_not_a_batch(self, grid: InfotextValue | None, words: list[str]) -> str | None:
        """Why the grid's pictures are not one request's batch (None: they are): its seeds
        must step from the first picture's as a batch's do (``picture_seeds``), and chaos must
        not have read the prompt once per picture."""
        if not words or grid != f"{len(words)} images":
            return "its count and seeds do not agree"
        if not all(
            word.isascii()
            and word.isdigit()
            and len(word) <= _MAX_SEED_DIGITS
            and int(word) <= MAX_SEED
            for word in words
        ):
            return f"its seeds are not all whole numbers {between(0, MAX_SEED)}"
        if len(words) > MAX_COUNT:
            return f"a batch here makes at most {MAX_COUNT}"
        request = self.request
        batch = [
            seed
            for seed, _ in (
                picture_seeds(request.seed, request.variation_seed, request.variation_strength, i)
                for i in range(len(words))
            )
        ]
        if request.seed < 0 or [int(word) for word in words] != batch:
            return "its seeds are not a batch's from the first picture's seed"
        if self.params.get("Chaos"):
            return "chaos gave each picture a prompt of its own"
        return None

    def _read_grid_prompts(self) -> str | None:
        """The prompts every picture of the grid drew from (``Template``: the text typed, when
        its wildcards or choices drew the first picture's): None when they fit, else why not."""
        template = self.params.get("Template")
        negative_template = self.params.get("Negative Template")
        shown = (self.request.prompt, self.request.negative_prompt)
        prompt = shown[0] if template is None else str(template)
        negative = shown[1] if negative_template is None else str(negative_template)
        if not prompt.strip():
            return "its Template carries no prompt"
        try:
            check_prompt_length(prompt, "the grid's prompt")
            check_prompt_length(negative, "the grid's negative prompt")
        except RequestError as error:
            return str(error)
        trimmed = tuple(text.strip() for text in shown)
        if (prompt, negative) != shown and self._first_drawn(prompt, negative) != trimmed:
            return f"its Template does not draw the prompt shown at seed {self.request.seed}"
        self.request = dataclasses.replace(self.request, prompt=prompt, negative_prompt=negative)
        return None

    def _first_drawn(self, prompt: str, negative: str) -> tuple[str, str] | None:
        """The texts the grid's first picture draws ``prompt``/``negative`` as, at its seed,
        as its batch would (``build_plan``, with admission's wildcard folder); None where
        they cannot be drawn; trimmed, as a pasted prompt is read. A Template tied to no
        picture shown is not rendered as one."""
        library = WildcardLibrary(wildcards_read(self.installed.wildcards_dir))
        try:
            plan = build_plan(
                prompt,
                negative,
                seed=self.request.seed,
                steps=self.request.steps,
                wildcards=library,
            )
        except PromptError:
            return None
        return plan.prompt.strip(), plan.negative_prompt.strip()

    def _read_options(self) -> None:
        """Clip skip, hires fix, pad conds, fast mode and the VAE: engine options."""
        get = self.params.get
        stand_in = (self.request.model or "the default model") if self.model_substituted else None
        read = read_picture_options(
            self.params,
            self.installed.vaes,
            lambda stem: self.installed.vae_refusal(
                dataclasses.replace(self.request, options={**self.request.options, "vae": stem})
            ),
            stand_in=stand_in,
            flow_model=stand_in is None and self.request.model in self.installed.flow_models,
        )
        options: dict[str, object] = dict(read.options)
        for sentence, setting in read.unhonoured:
            self._tell(sentence, setting)
        # Easel's own flags: --chaos's weights are already in the prompt, and reading them
        # again at the picture's seed changes nothing (``inference.prompts.chaos``), so the
        # same picture comes back and its text says Chaos again; unless wildcards or choices
        # drew text after chaos read the prompt (a ``Template``): chaos would reweight it.
        chaos = get("Chaos")
        if chaos is not None:
            if not (isinstance(chaos, int) and 0 <= chaos <= MAX_CHAOS):
                self._tell(
                    f"chaos {echoed(chaos)} is not a whole number from 0 to {MAX_CHAOS}; the "
                    "prompt is read as written",
                    "chaos",
                )
            elif get("Template") is None:
                options["chaos"] = chaos
            else:
                self._tell(
                    f"chaos {chaos}: its weights are in the prompt already, and read again they "
                    "would reweight what its wildcards or choices drew; the prompt is read as "
                    "written (the same picture)",
                    "chaos",
                )
        if options.get("relax"):
            # Honoured, but it moves a member who holds the priority role to the back.
            self.said.append(
                "queued as --relax, as the picture was; remove the line 'Relax: True' to keep "
                "your usual place"
            )
        stop = get("Stop at")
        if stop is not None:
            percent = str(stop).removesuffix("%")
            if percent.isdecimal() and len(percent) <= 3 and int(percent) in _STOP_PERCENT:
                if int(percent) < 100:
                    options["stop"] = int(percent)
            else:
                self._tell(
                    f"stop at {echoed(stop)} is not {_STOP_PERCENT[0]}-{_STOP_PERCENT[-1]}%; "
                    "every step is run",
                    "stop at",
                )
        self._apply(
            {"options": {**self.request.options, **options}} if options else {},
            "settings",
            "left out",
        )
        if str(get("Fast")) not in ("None", "False", ""):
            self.request = dataclasses.replace(self.request, fast=True)
        self._read_hires()
        self._read_refiner()
        self._read_faces()

    def _read_refiner(self) -> None:
        """The web UI's ``Refiner: NAME [hash], Refiner switch at: 0.8``."""
        refiner, switch = self.params.get("Refiner"), self.params.get("Refiner switch at")
        if refiner is None:
            return
        name = str(refiner).rsplit(" [", 1)[0]
        if name not in self.installed.models:
            self._tell(
                f"refiner {echoed(name)} is not installed here; rendered without it", "refiner"
            )
            return
        options = {"refiner": name, "refiner_switch": switch}
        self._apply(
            {"options": {**self.request.options, **{k: v for k, v in options.items() if v}}},
            "refiner",
            "rendered without it",
        )

    def _read_faces(self) -> None:
        """ADetailer's units (the first with a face detector becomes fix faces: its prompt,
        denoising and confidence; Easel's own detector and mask; each other unit is told and
        left out) and the web UI's ``Face restoration`` (the first restorer installed here)."""
        options: dict[str, object] = {}
        units = _adetailer_units(self.params)
        face_unit = next(
            (unit for unit in units if _is_face_detector(str(self.params[_MODEL + unit]))), None
        )
        for unit in units:
            detector = self.params[_MODEL + unit]
            if unit == face_unit:
                options = {
                    option: self.params[key + unit]
                    for key, option in FACE_FIELDS.items()
                    if key + unit in self.params
                }
                options[FIX_FACES] = True
                self.read_keys.update(key + unit for key in _FACE_UNIT_FIELDS)
                if detector != HAAR_DETECTOR:
                    self._tell(
                        f"{_MODEL + unit} {detector}: this server's face detector is used",
                        "ADetailer model",
                    )
                self._tell_face_mask(unit)
                self._tell_face_separate(unit)
                continue
            # Its other keys say how that pass ran: this sentence covers them.
            self.read_keys.update(key for key in self.params if _unit_of(key) == unit)
            why = (
                f"one face pass runs here ({_MODEL + str(face_unit)}'s)"
                if face_unit is not None and _is_face_detector(str(detector))
                else "only faces are fixed here (face_* and mediapipe_face* detectors)"
            )
            self._tell(
                f"{_MODEL + unit} {detector}: {why}; rendered without that pass",
                "ADetailer model",
            )
        if "Face restoration" in self.params:
            options[FACE_RESTORE] = True
        self._apply(
            {"options": {**self.request.options, **options}} if options else {},
            "faces",
            "left as rendered",
        )

    def _tell_face_mask(self, unit: str) -> None:
        """The mask values of ADetailer's ``unit`` that differ from those Easel's face pass
        uses."""
        differing = [
            f"{key.removeprefix('ADetailer ')}{unit} {self.params[key + unit]} ({used} here)"
            for key, used in FACE_MASK_FIELDS.items()
            if key + unit in self.params and not _same_value(self.params[key + unit], used)
        ]
        if differing:
            self._tell(
                f"ADetailer {', '.join(differing)}: the face pass's mask is fixed",
                "ADetailer mask",
            )

    def _tell_face_separate(self, unit: str) -> None:
        """The settings ADetailer's ``unit`` rendered with of its own (its model, sampler,
        steps, CFG) that differ from the render's, which Easel's face pass uses. ADetailer's
        "Use same checkpoint" (sampler, scheduler) is the render's, and so is no scheduler."""
        request = self.request

        def separate(what: str) -> InfotextValue | None:
            switch = self.params.get(f"ADetailer use separate {_SEPARATE_SWITCHES[what]}{unit}")
            value = None if str(switch) == "False" else self.params.get(f"ADetailer {what}{unit}")
            return None if str(value).startswith("Use same") else value

        differing = []
        checkpoint = separate("checkpoint")
        if checkpoint is not None and not self._is_model(str(checkpoint)):
            differing.append(f"checkpoint{unit} {echoed(checkpoint)}")
        vae, used_vae = separate("VAE"), request.options.get("vae")  # a file's stem, or None
        if vae is not None and (None if vae == NO_VAE else Path(str(vae)).stem) != used_vae:
            shown = used_vae or "the model's own"
            differing.append(f"VAE{unit} {echoed(vae)} ({shown} here)")
        sampler, scheduler = separate("sampler"), separate("scheduler")
        asked = {SAMPLER: sampler, SCHEDULE_TYPE: scheduler or request.schedule_type}
        if sampler is not None and not asks_for_sampler(
            asked, request.sampler, request.schedule_type
        ):
            differing.append(f"sampler{unit} {echoed(sampler)} ({request.sampler} here)")
        for what, used in (
            ("steps", request.steps),
            ("CFG scale", request.cfg_scale),
            ("CLIP skip", request.options.get("clip_skip", DEFAULT_CLIP_SKIP)),
        ):
            value = separate(what)
            if value is not None and not _same_value(value, used):
                differing.append(f"{what}{unit} {echoed(value)} ({used:g} here)")
        fix_seed = self.params.get(FIX_SEED_KEY + unit)
        if fix_seed is not None and fix_seed != request.seed:
            differing.append(f"seed{unit} {echoed(fix_seed)} ({request.seed} here)")
        if differing:
            self._tell(
                f"ADetailer {', '.join(differing)}: the face pass renders with the picture's "
                "model and settings here",
                "ADetailer settings",
            )

    def _is_model(self, checkpoint: str) -> bool:
        """Whether ``checkpoint`` (ADetailer's: the web UI's title, ``tiny.safetensors
        [hash]``, or Easel's ``tiny [hash]``) names the model the request renders with: by
        its hash where both are known, else by name, its file's extension or not."""
        title = _CHECKPOINT_TITLE.fullmatch(checkpoint)
        assert title is not None  # every text matches: the hash is optional
        name, wanted_hash = title.group(1), title.group(2)
        model = self._model
        if model is None:
            return False
        here = self.installed.model_hash(model) if wanted_hash else None
        if here is not None:
            return here.startswith(wanted_hash.lower())
        return model in (name, Path(name).stem)

    def _read_hires(self) -> None:
        get = self.params.get
        denoising = get("Denoising strength")
        if not any(key.startswith("Hires ") for key in self.params):
            if denoising is not None:
                self._tell(
                    "these settings come from a picture made from another picture "
                    f"(denoising strength {denoising}); it is drawn from the text here",
                    "denoising strength",
                )
            return
        scale = self._hires_scale()
        if scale is None:
            return
        hires: dict[str, object] = {"hires_scale": scale}
        if get("Hires steps") is not None:
            hires["hires_steps"] = get("Hires steps")
        if denoising is not None:
            hires["hires_denoising"] = denoising
        upscaler = get("Hires upscaler")
        if upscaler is not None:
            known = {name.casefold(): name for name in self.installed.upscalers}
            named = latent_upscaler(str(upscaler)) or known.get(str(upscaler).casefold())
            if named is None:
                self._tell(
                    f"hires upscaler {echoed(upscaler)} is not installed here; "
                    f"{LANCZOS} is used instead",
                    "hires upscaler",
                )
            hires["hires_upscaler"] = named or LANCZOS
        self._apply(
            {"options": {**self.request.options, **hires}},
            "hires fix",
            "rendered without it",
        )

    def _hires_scale(self) -> object:
        """``Hires upscale``, else the scale of ``Hires resize: WxH`` (the web UI's "resize
        to": a side 0 follows the other; a shape other than the picture's is cropped to there,
        enlarged to cover it here, uncropped), else None, told."""
        scale, resize = self.params.get("Hires upscale"), self.params.get("Hires resize")
        if scale is not None:
            return scale
        if resize is None:
            self._tell(
                "hires fix: neither 'Hires upscale' nor 'Hires resize' is given; "
                "rendered without it",
                "hires fix",
            )
            return None
        target = _resize_target(str(resize))
        width, height = self.request.width, self.request.height
        if isinstance(target, str) or width is None or height is None:
            why = target if isinstance(target, str) else "has no valid Size to scale"
            self._tell(
                f"hires resize {echoed(resize)} {why}; rendered without hires fix", "hires fix"
            )
            return None
        to_width, to_height = target
        scale = hires_scale_to(width, height, to_width, to_height)
        try:
            hires = HiresOptions.from_options({"hires_scale": scale}, width, height)
        except RenderInputError:
            hires = None  # out of range: _apply says so
        size = (to_width, to_height) if hires is None else hires.size
        if size != (to_width or size[0], to_height or size[1]):
            cropped = to_width and to_height and to_width * height != to_height * width
            why = (
                "the web UI crops to that shape; here the picture is enlarged to cover it"
                if cropped
                else "sides are multiples of 8 here"
            )
            self._tell(
                f"hires resize {resize}: rendered at {size[0]}x{size[1]} (x{scale:.4g}; {why})",
                "hires fix",
            )
        return scale

    def _read_networks(self) -> None:
        """LoRA tags in the prompt that cannot be applied here: told, and those naming a LoRA
        not installed (or left out) here are dropped from the prompts (a typed one is refused)."""
        try:
            _, _, warnings = extract_extra_networks(self.request.prompt, self.installed.loras)
        except PromptError as error:
            self._tell(str(error), "the prompt's LoRA tags")
            return
        for warning in warnings:
            self._tell(warning, "the prompt's LoRA tags")
        # Such a tag is refused in a typed prompt (``check_loras``): the import drops it, told.
        loras = self.installed.loras
        prompt = without_unknown_loras(self.request.prompt, loras)
        negative = without_unknown_loras(self.request.negative_prompt, loras)
        if (prompt, negative) != (self.request.prompt, self.request.negative_prompt):
            self.request = dataclasses.replace(
                self.request, prompt=prompt, negative_prompt=negative
            )

    def _read_hashed_networks(self) -> None:
        """``TI hashes`` / ``Lora hashes`` (and Civitai's ``embed:``/``lora:`` hashes): the
        embeddings not read here (their names stay words) and the LoRAs of another file."""
        known = {name.casefold() for name in self.installed.embeddings}
        for name in _hashes_named(self.params, "TI hashes", "embed:"):
            if name.casefold() not in known:  # not installed or left out: the same words
                self._tell(
                    f"embedding {echoed(name)} is not available here: its name is read as words",
                    "embeddings",
                )
        for name, wanted in _hashes_named(self.params, "Lora hashes", "lora:").items():
            here = self.installed.lora_hashes(name) if name in self.installed.loras else None
            if here and wanted and not any(short.startswith(wanted) for short in here):
                self._tell(
                    f"LoRA {echoed(name)} here has hash {next(iter(here))}, not {wanted}: a "
                    "different file of that name, so the picture may differ",
                    "LoRA",
                )

    def _read_noise_source(self) -> None:
        rng = self.params.get("RNG")
        if rng != "CPU":
            self._tell(
                f"noise source {rng or 'GPU (no RNG field)'}: Easel draws noise on the CPU, "
                "as the web UI's 'RNG: CPU' does, so the picture will differ",
                "noise source",
            )

    def _list_unknown_fields(self) -> None:
        unknown = [
            key for key in self.params if key not in _READ_FIELDS and key not in self.read_keys
        ]
        emphasis = self.params.get("Emphasis")
        if emphasis is not None and emphasis != "Original":
            unknown.insert(0, f"Emphasis: {emphasis}")
        if not unknown:
            return
        listed = ", ".join(unknown[:_LISTED_UNKNOWN_FIELDS])
        more = len(unknown) - _LISTED_UNKNOWN_FIELDS
        self._tell(
            f"not used here: {listed}" + (f" and {more} more" if more > 0 else ""),
            "fields Easel does not use",
        )


def _shown(sentence: str, setting: str, banned_words: Collection[str]) -> str:
    """``sentence``, or one naming ``setting`` alone when the pasted text it quotes (or the
    sentence as a whole) renders a banned word: the note would post it as Easel's."""
    if find_banned_rendering([(sentence,)], banned_words) is None:
        return sentence
    return f"{setting} (what the settings say is not shown: a word banned on this server)"


def _is_face_detector(name: str) -> bool:
    lowered = name.casefold()
    return (
        name == HAAR_DETECTOR or "yunet" in lowered or lowered.startswith(_FACE_DETECTOR_PREFIXES)
    )


def _unit_of(key: str) -> str | None:
    """The ADetailer unit ``key`` belongs to, as its suffix ("" for the first, " 2nd"...),
    or None: not an ADetailer key."""
    if not key.startswith("ADetailer "):
        return None
    suffix = _UNIT_SUFFIX.match(key)
    return "" if suffix is None else suffix.group(1)


def _adetailer_units(params: Mapping[str, InfotextValue]) -> list[str]:
    """The suffixes of the ADetailer units that name a model, in their order."""
    units = [unit for key in params if (unit := _unit_of(key)) is not None and key == _MODEL + unit]
    return sorted(units, key=lambda unit: int(unit[1:-2] or 1))


def _same_value(pasted: InfotextValue, used: object) -> bool:
    """Whether a pasted value says ``used`` (a number in any spelling, ``True`` as text)."""
    if isinstance(pasted, int | float) and not isinstance(used, bool):
        return pasted == used
    return str(pasted) == str(used)


def _resize_target(resize: str) -> tuple[int, int] | str:
    """``Hires resize``'s ``WxH`` (one side may be 0), or what is wrong with it."""
    width, x, height = resize.strip().partition("x")
    if not (x and width.isdecimal() and height.isdecimal()):
        return "is not WxH"
    if max(len(width), len(height)) > _MAX_SIDE_DIGITS:  # past any scale, and not read
        return f"has a side past hires scale's range (at most {MAX_HIRES_SCALE:g} times the Size)"
    if int(width) + int(height) == 0:
        return "is not WxH"
    return int(width), int(height)


def _bounded(value: InfotextValue) -> InfotextValue:
    """``value``, or its text when it is a whole number past ``_MAX_WHOLE_NUMBER``."""
    return str(value) if isinstance(value, int) and abs(value) > _MAX_WHOLE_NUMBER else value


def _civitai_hashes(params: Mapping[str, InfotextValue]) -> dict[str, str]:
    """Civitai's ``Hashes`` JSON (``model``, ``lora:NAME``, ``embed:NAME``), values as text."""
    try:
        hashes = json.loads(str(params.get("Hashes", "{}")))
    except ValueError:
        return {}
    if not isinstance(hashes, dict):
        return {}
    return {str(key): str(value) for key, value in hashes.items() if value is not None}


def _hashes_named(
    params: Mapping[str, InfotextValue], field: str, civitai_prefix: str
) -> dict[str, str]:
    """The networks the web UI's ``field`` (``name: hash, name: hash``) and Civitai's
    ``Hashes`` (``civitai_prefix`` + name) name, with their short hashes (lower case; empty
    when not hexadecimal)."""
    listed = params.get(field)
    named = {
        name.strip(): short
        for name, _, short in (
            entry.rpartition(":") for entry in ([] if listed is None else str(listed).split(","))
        )
    }
    for key, value in _civitai_hashes(params).items():
        if key.startswith(civitai_prefix):
            named.setdefault(key.removeprefix(civitai_prefix), value)
    shorts = {name: short.strip().lower()[:NETWORK_HASH_LENGTH] for name, short in named.items()}
    return {
        name: short if all(c in "0123456789abcdef" for c in short) else ""
        for name, short in shorts.items()
        if name
    }


def _model_hash_of(params: Mapping[str, InfotextValue]) -> str | None:
    """``Model hash``, or the ``model`` entry of Civitai's ``Hashes`` JSON; lower case."""
    short = params.get("Model hash", _civitai_hashes(params).get("model"))
    if short is None:
        return None
    text = str(short).strip().lower()
    return text[:MODEL_HASH_LENGTH] or None


def installed_in(
    registry: ModelRegistry, default_model: str | None, *, wait_for_hashes: bool = True
) -> Installed:
    """What ``registry``'s folders hold (its flow models among them); a model the infotext
    names but that is missing gives way to ``default_model`` (else the first installed).
    Model hashes are read lazily (the registry caches them), so call the import off the
    event loop; without ``wait_for_hashes`` a hash not known yet is read in the background
    instead (a member's request: seconds per checkpoint)."""
    short_hash = registry.short_hash if wait_for_hashes else registry.recalled_short_hash
    file_hash = file_sha256 if wait_for_hashes else recalled_file_sha256
    models = registry.names()
    fallback = default_model if default_model in models else (models[0] if models else None)
    lora_files = registry.network_files("lora")
    flow = installed_flow_models(registry)

    def lora_hashes(name: str) -> list[str] | None:
        try:
            digests = [
                file_hash(
                    lora_files[name], registry.hashes_file, registry.models_dir, tensors_only=t
                )
                for t in (True, False)
            ]
        except OSError:  # removed since the folder was listed, or no safetensors file: unknown
            return None
        if None in digests:
            return None
        return [str(digest)[:NETWORK_HASH_LENGTH] for digest in digests]

    return Installed(
        models=models,
        model_hash=lambda name: short_hash(registry.resolve(name)),
        loras=list(lora_files),
        vaes=list(registry.network_files("vae")),
        upscalers=registry.upscaler_names(),
        fallback_model=fallback,
        vae_refusal=lambda request: _vae_refusal(registry, request, default_model),
        embeddings=list(registry.network_files("embedding")),
        flow_models=flow.without_embeddings,
        distilled_models=flow.distilled_guidance,
        lora_hashes=lora_hashes,
    )


def _vae_refusal(
    registry: ModelRegistry, request: RenderRequest, default_model: str | None
) -> str | None:
    """The sentence the render refuses ``request``'s VAE with (``inference.vae_files``)."""
    try:
        entry = registry.resolve(request.model, default_model)
    except RenderInputError:
        return None  # no such model: the render says so, not about the VAE
    try:
        vae_file(registry, request, latent_channels_of(entry))
    except RenderInputError as error:
        return str(error)
    return None
