"""A request's prompt planned before its job is queued, off the event loop (pure: no discord,
no torch).

Planning at submit time refuses a bad prompt (an unknown wildcard, braces nested too deep, an
expansion past its limits, a banned word it renders) to its own member, privately and free,
before it can share a batch with anyone else's job; and moderation reads what the model will
be conditioned on, not what was typed. The prompt language is CPU work (a wildcard folder can
make a short prompt expensive), so it runs on a thread, with its expansion bounded by the
expander's own limits and its wait bounded by ``PLAN_BUDGET_S``; once nobody waits for it (its
budget ran out, or the bot closes), the thread stops at the prompt language's next checkpoint
(``inference.prompts.stopping``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from bot.acknowledge_first import slowed_by_plans
from bot.compare import cells_planned_apart
from bot.memo import ExpiringKeys
from bot.policy.addons import (
    ANY_ADDON,
    APPLIED_LORAS_OPTION,
    USED_EMBEDDINGS_OPTION,
    AddonKind,
    AddonRules,
    applies_networks,
    check_loras,
    is_among,
    lora_suggestions,
)
from bot.policy.moderation import (
    STORED_TOO_LONG,
    ConditioningTexts,
    check_banned_since,
    find_banned_rendering,
    operator_matcher,
)
from bot.policy.unavailable import broken_wildcard, quoted, unknown_wildcard
from bot.requests import check_prompt_length
from bot.user_errors import Reason, UserError, counted
from inference.compare import cell_requests, is_comparison
from inference.face_options import FIX_FACES_PROMPT, FaceOptions
from inference.family_rules import flow_prompt_refusal
from inference.limits import MIN_SIZE
from inference.passes.picture_prompts import rendered_prompts
from inference.prompt_work import PROMPT_WORK_OPTION, PromptWork
from inference.prompts import (
    WILDCARD_DRAWS_OPTION,
    DrawnValue,
    PromptError,
    PromptPlan,
    RecordedDraws,
    UnknownWildcardError,
    WildcardLibrary,
    build_plan,
    explain,
    extract_extra_networks,
    picture_seeds,
)
from inference.prompts.chaos import MAX_CHAOS, chaos_prompt
from inference.prompts.flags import random_seed
from inference.prompts.stopping import PlanStopped, stopping_when
from inference.samplers import calls_per_step
from inference.types import RenderInputError, RenderRequest, utf8_json
from inference.upscale import HiresOptions, UpscaleOptions

T = TypeVar("T")

log = logging.getLogger(__name__)

# How long the prompt language may take before the request is refused: the answer (or the
# "thinking..." that defers it) must reach Discord within 3 s of the command.
PLAN_BUDGET_S = 2.5
# /explain answers after acknowledging, so it may take longer (its thread then stops too).
EXPLAIN_BUDGET_S = 10.0
# A stored picture's texts read again for the server's banned words of now (/show, a button),
# its fix-faces prompt drawn again for each picture first (``ConditioningTexts.fix_faces``):
# before the answer, with the database reads around it, within Discord's 3 s. Past it the
# picture is refused for now (``STORED_TOO_LONG``) as a prompt past ``PLAN_BUDGET_S`` is, its
# thread stopped at the prompt language's next checkpoint. The verdict is kept until the
# words change (``GuildPolicy.check_reuse``), so a job pays this once.
STORED_CHECK_BUDGET_S = 2.0
# The prompt language's own threads, apart from asyncio's default executor (file writes, PNGs,
# database helpers): a refused plan's thread runs on until the prompt language's next
# checkpoint (milliseconds, the banned-word read's included: one variant's ending at a time;
# at most dynamicprompts' parse of one prompt: ~0.5 s) and must not hold one of those. A
# member holds at most one of these at a time, so other members' plans find a free one
# unless as many members each sent a costly prompt in the same seconds.
PLAN_THREADS = 4
# The threads one server's plans may hold at once (queued or running, refused ones until they
# stop): half, so a raid of one server's members (or alt accounts) leaves the other servers at
# least as many readers as it holds, and it takes two servers together to fill them all. Its
# further plans wait their turn within their own budget. Direct messages count as one server
# between them: an alt account needs no server to join there, and no moderator sees it.
SERVER_THREADS = (PLAN_THREADS + 1) // 2
STILL_PLANNING = (
    "Your previous prompt is still being read; wait a few seconds for it to finish, then try "
    "again (a simpler prompt reads faster)."
)
READERS_BUSY = (
    "Every prompt reader is busy with other members' long prompts right now; try again in a "
    "few seconds."
)
SERVER_READERS_BUSY = (
    "The prompt readers {where} may use ({share} of {total}) are all busy with long prompts "
    "right now; try again in a few seconds."
)
CLOSED = "Easel is shutting down; try again once it is back."
# Planned once before the bot connects, so that no member's command pays for what the first plan
# loads: the CLIP vocabulary, the attention and schedule parsers, dynamicprompts' grammar.
WARM_UP_REQUEST = RenderRequest(
    "a (red:1.1) [cat:dog:0.5], {day|night} AND a hat", "blurry", seed=1, steps=2
)
# What a wildcard file is blamed for in the operator's log (LoRAs it names that are not
# installed, a ``__name__`` it names that is no wildcard) is written once a day, not at each
# plan drawing it, and no more of these are kept (the oldest go first): their names are the
# operator's files' words, but whatever fills them, the memory stays bounded.
WARNED_AGAIN_AFTER_S = 24 * 3600.0
WARNINGS_KEPT = 1_000
# The LoRAs not installed that a warning names, as examples: the file may name thousands.
LORAS_NAMED_IN_A_WARNING = 3


def plan_request(
    request: RenderRequest,
    banned_words: Collection[str],
    wildcards_dir: Path | None,
    addons: AddonRules = ANY_ADDON,
    embeddings: Collection[str] = (),
    max_job_bytes: int | None = None,
    models_without_embeddings: Collection[str] = (),
    unnamed_model: str | None = None,
    installed_loras: Callable[[], Collection[str]] | None = None,
    warned: OperatorWarnings | None = None,
    flow_label: Callable[[str], str | None] | None = None,
) -> RenderRequest:
    """Plan every picture's prompt as the engine will (same seeds, same wildcards) and refuse
    the request when the prompt language rejects it, a variant renders a banned word, or a
    LoRA the engine applies (a wildcard's or a /compare cell's included; not a fix-faces
    prompt's, nor any for /fix-faces or an upscale: ``_applies_loras``, whose plans check no
    LoRA weight either) is one the server's ``addons`` leave out.

    Returns the request with a concrete seed and variation seed, the texts its wildcards were
    drawn as (``WILDCARD_DRAWS_OPTION``): the engine renders those, wherever it runs, not its own
    folder's draws (the expansion checked is the one rendered), and the LoRAs applied
    (``APPLIED_LORAS_OPTION``, replaced whatever the request held) and the embeddings its plans
    name among those it may read (``AddonRules.embeddings_read`` of ``embeddings``, those
    installed for the bot): ``USED_EMBEDDINGS_OPTION``, likewise, which the engine reads no
    more than and the start gate checks. ``max_job_bytes``: the
    largest job the broker carries (``_within_job_size``; None: no broker, no such limit).
    ``models_without_embeddings``: the installed models known to take no textual inversion
    (SD3, Flux): a picture of one plans and records no embedding, reading the names as words
    as its model does (a model the bot does not know, on a worker only, records them).
    ``unnamed_model``: the model a picture naming none renders with (None: not known here, as
    on a broker's workers, whose first model may differ: it records them).
    ``installed_loras``: the LoRAs installed for the bot, listed when a refusal names those
    the server lists (None: its list as it is, files gone included). ``warned``: what the
    operator was lately warned of about the wildcard files (None: warn of each at each plan).
    ``flow_label``: a model's flow-matching family as its rules are told (``family_rules.
    flow_label``; None: not of one, or not known here), whose prompts take no AND or editing."""
    check_prompt_length(request.prompt, "the prompt")
    check_prompt_length(request.negative_prompt, "the negative prompt")
    face_prompt = request.options.get(FIX_FACES_PROMPT)
    if isinstance(face_prompt, str):
        check_prompt_length(face_prompt, "the fix-faces prompt")
    if request.seed == -1:
        request = dataclasses.replace(request, seed=random_seed())
    if request.variation_seed == -1:  # stored concrete: one picture of it is made again alike
        request = dataclasses.replace(request, variation_seed=random_seed())
    library = RecordedDraws(wildcards_read(wildcards_dir))
    pictures = [_with_texts_rendered(picture) for picture in _requests_rendered(request)]
    named_embeddings = addons.embeddings_read(embeddings)
    try:
        planned: list[PromptPlan] = []
        for picture in pictures:
            model = picture.model or unnamed_model
            # A flow-matching model reads one plain text: refused here, from the plan its
            # render reads (``flow_prompt_refusal``), before anything is queued.
            label = None if flow_label is None or model is None else flow_label(model)
            for name, prompt, steps, first_pass_steps in _prompts_planned(picture):
                applies = _applies_loras(picture, name)
                # A flow pass reads its prompt once a step, whatever its sampler.
                calls = 1 if label else calls_per_step(picture.sampler, picture.schedule_type)
                # The prompt its model renders over the request's steps, as the engine reads it.
                flow_read = label if applies and first_pass_steps is None else None
                for index in range(picture.count):
                    plan = build_plan(
                        _with_chaos(picture, prompt, _picture_seed(picture, index))
                        if name == "the prompt"
                        else prompt,
                        picture.negative_prompt,
                        seed=_picture_seed(picture, index),
                        steps=steps,
                        first_pass_steps=first_pass_steps,
                        calls_per_step=calls,
                        wildcards=library,
                        embeddings=(() if model in models_without_embeddings else named_embeddings),
                        name=name,
                        applies_loras=applies,
                    )
                    if flow_read and (refusal := flow_prompt_refusal(flow_read, plan)):
                        raise UserError(str(refusal))
                    planned.append(plan)
    except PromptError as error:
        typed = [text for picture in pictures for text in _typed_texts(picture)]
        raise _prompt_refused(error, typed, library, warned) from None
    except RenderInputError as error:  # an unknown sampler (``calls_per_step``)
        raise UserError(_then(error, "fix the settings and try again.")) from None
    renderings = (rendering for plan in planned for rendering in plan.renderings())
    if word := find_banned_rendering(renderings, banned_words):
        raise UserError(
            f"The word {word!r} is banned on this server; remove it from your prompt.",
            Reason.BANNED_WORD,
        )
    applied = [lora.name for plan in planned for lora in plan.loras()]
    typed_loras = _typed_loras(pictures)
    drawn_loras = _drawn_loras(library.values_drawn())
    applied = _drawn_unknown_left_out(
        list(dict.fromkeys(applied)),
        {name: held for name, held in drawn_loras.items() if name not in typed_loras},
        installed_loras,
        library,
        warned,
    )
    check_loras(applied, addons, installed_loras)
    # /fix-faces and the upscales read no embedding: none is recorded for the start gate.
    used = [name for plan in planned for name in plan.embeddings_used]
    used_embeddings = sorted(set(used)) if applies_networks(request.mode) else []
    options = {
        **{key: value for key, value in request.options.items() if key != PROMPT_WORK_OPTION},
        **PromptWork.most(plan.work() for plan in planned).option(),
        WILDCARD_DRAWS_OPTION: library.option(),
        APPLIED_LORAS_OPTION: applied,
        USED_EMBEDDINGS_OPTION: used_embeddings,
        **lora_suggestions(request.mode, applied, addons),
    }
    request = dataclasses.replace(request, options=options)
    return request if max_job_bytes is None else _within_job_size(request, max_job_bytes)


def _typed_texts(picture: RenderRequest) -> list[str]:
    """The prompts of ``picture`` the member typed (a /compare cell's included), before any
    wildcard is drawn."""
    planned = [prompt for _, prompt, _, _ in _prompts_planned(picture)]
    return [*planned, picture.negative_prompt]


def _typed_loras(pictures: list[RenderRequest]) -> set[str]:
    """The LoRAs the tags of the prompts the member typed name (not those drawn from a
    wildcard)."""
    texts = (text for picture in pictures for text in _typed_texts(picture))
    tags = (tag for text in texts for tag in extract_extra_networks(text)[1])
    return {tag.name for tag in tags if tag.kind == "lora"}


def _drawn_loras(values: list[DrawnValue]) -> dict[str, str]:
    """The LoRAs the wildcard values drawn (``RecordedDraws.values_drawn``) name, each with
    the wildcard whose file holds it: a tag in a value (``<lora:name``), or a whole value, the
    name of a tag typed around a wildcard of names (``<lora:__names__:0.8>``); the innermost
    wildcard drawing it (a value that is ``__other__`` holds ``__other__``'s drawn text, but
    the line is ``other``'s). A tag that only the prompt's own choices spell
    (``<lo{ra|ra}:name:1>``) is in no value: it is the member's."""
    named: dict[str, str] = {}
    for wildcard, text in values:  # innermost first
        named.setdefault(text.strip(), wildcard)
        for tag in extract_extra_networks(text)[1]:
            if tag.kind == "lora":
                named.setdefault(tag.name, wildcard)
    return named


def _drawn_unknown_left_out(
    applied: list[str],
    drawn: dict[str, str],
    installed_loras: Callable[[], Collection[str]] | None,
    library: WildcardLibrary,
    warned: OperatorWarnings | None,
) -> list[str]:
    """``applied`` less the LoRAs drawn from a wildcard file and not typed (``drawn``: each
    with the wildcard it was drawn from, ``_drawn_loras``) that are not installed: the engine
    ignores their tags and tells the member with the picture, as it always did (a wildcard
    line would otherwise refuse some seeds and not others); the operator is warned of each
    file once a day (``warned``: ``("lora file", its path)``), with a few of the names drawn,
    so that a file of thousands of names writes one line a day, not one per name. The file is
    the one its wildcard reads (``WildcardLibrary.files_of``: no file is read for it). A typed
    one is refused (``check_loras``), and so is a drawn one installed that the server leaves
    out."""
    if not any(name in drawn for name in applied) or installed_loras is None:
        return applied
    files = installed_loras()
    unknown = [
        name for name in applied if name in drawn and not is_among(AddonKind.LORA, name, files)
    ]
    named_by: dict[str, list[str]] = {}  # file: the names not installed drawn from it
    for name in unknown:
        for holder in map(str, library.files_of(drawn[name])) or ["(file not found)"]:
            named_by.setdefault(holder, []).append(name)
    for holder, names in named_by.items():
        if warned is None or warned.first(("lora file", holder)):
            examples = ", ".join(map(repr, names[:LORAS_NAMED_IN_A_WARNING]))
            more = len(names) - LORAS_NAMED_IN_A_WARNING
            log.warning(
                "Wildcard file %s names %s not installed, whose tags are ignored: %s%s",
                holder,
                counted(len(names), "LoRA"),
                examples,
                f" and {more} more" if more > 0 else "",
            )
    return [name for name in applied if name not in unknown]


def _within_job_size(request: RenderRequest, max_job_bytes: int) -> RenderRequest:
    """``request``, refused when it is too large to travel to a GPU worker: the broker's job
    message carries it JSON-encoded in UTF-8 (``bot.jobs.broker.wire.JobMessage``: a character
    outside ASCII costs 2 to 4 bytes), in ``max_job_bytes`` (``wire.max_job_bytes``: under the
    server's max_payload with its inline input pictures). The in-process queue has no such
    limit. The refusal names what is large: the texts drawn for its wildcards, or its prompts."""
    size = len(utf8_json(request.to_json(ascii_only=False)))
    if size <= max_job_bytes:
        return request
    typed = max(len(request.prompt), len(request.negative_prompt))
    drawn = max(map(len, request.options[WILDCARD_DRAWS_OPTION]["texts"]), default=0)
    if drawn > 2 * typed:  # the wildcards' lines, not the prompt typed, make it large
        cause = (
            f"Its wildcards draw texts of up to {drawn:,} characters from a prompt of "
            f"{typed:,}: use fewer or shorter wildcards"
        )
    else:
        cause = "Shorten the prompt (characters outside ASCII, such as emoji, cost the most)"
    raise UserError(
        f"This job is {size / 1024:,.0f} KiB once encoded for the GPU workers (its prompts and "
        f"the texts drawn for each picture); at most {max_job_bytes // 1024} KiB are accepted "
        f"through this bot's broker. {cause}, or ask for fewer pictures."
    )


def _requests_rendered(request: RenderRequest) -> list[RenderRequest]:
    """The requests the engine renders ``request`` as: a comparison's cells, each its own
    (``inference.compare``; those it would plan alike once), else the request."""
    if not is_comparison(request):
        return [request]
    try:
        return cells_planned_apart(cell_requests(request))
    except RenderInputError as error:
        raise UserError(_then(error, "fix the comparison and try again.")) from None


def _with_texts_rendered(request: RenderRequest) -> RenderRequest:
    """``request`` with the prompts its pass renders, where it reads them from its picture
    (``inference.passes.picture_prompts``: fix faces, the creative upscale, a prompt left empty
    is the picture's own, from its infotext): planned and checked here like typed ones, so the
    engine renders their planned draws, not ``{a|b}`` drawn at a seed nobody checked."""
    if (
        request.mode not in ("faces", "upscale")
        or request.init_image is None
        or not renders_prompt(request)
        or (request.prompt and request.negative_prompt)
    ):
        return request
    try:
        prompt, negative = rendered_prompts(request)
    except OSError:
        raise UserError(
            "This picture is no longer stored on the bot (or its file cannot be read), so it "
            "cannot be used from here; attach a copy of it to the command instead."
        ) from None
    check_prompt_length(prompt, "the picture's prompt")
    check_prompt_length(negative, "the picture's negative prompt")
    return dataclasses.replace(request, prompt=prompt, negative_prompt=negative)


def _picture_seed(request: RenderRequest, index: int) -> int:
    """The seed of picture ``index`` of ``request``, as the engine derives it."""
    seed, _ = picture_seeds(request.seed, request.variation_seed, request.variation_strength, index)
    return seed


def _with_chaos(request: RenderRequest, prompt: str, seed: int) -> str:
    """The prompt as the engine reads it for the picture of ``seed``: reweighted by its
    ``--chaos`` (``inference.passes.jobs``; a value out of range is the engine's refusal)."""
    chaos = request.options.get("chaos", 0)
    if isinstance(chaos, bool) or not isinstance(chaos, int) or not 0 < chaos <= MAX_CHAOS:
        return prompt
    return chaos_prompt(prompt, chaos, seed)


def _prompts_planned(request: RenderRequest) -> list[tuple[str, str, int, int | None]]:
    """Each prompt the engine's passes plan (each with the negative prompt), over each timeline
    it is planned on, once (``inference.passes.jobs.PromptTimeline``): the request's steps for
    every pass but the hires pass (a pass from a picture, the faces pass's included, runs only
    their end), and the hires pass's own (up to ``MAX_STEPS`` whatever the request's) after the
    first pass's; the fix-faces prompt (ADetailer's, read from settings pasted or imported)
    when there is one. A prompt within the prompt language's caps on one timeline may be over
    them on another: refused here, at submit, not on the render thread after its first pass.
    A fix-faces prompt no pass renders is still read: it is stored with the job. Each is
    planned over the sampler's model calls (``calls_per_step``: a second-order sampler's 2 a
    step), as the engine plans it."""
    planned: list[tuple[str, str, int, int | None]] = [
        ("the prompt", request.prompt, request.steps, None)
    ]
    try:
        if request.mode == "txt2img":
            # Its steps do not depend on the size (checked with it once the engine knows it).
            width, height = request.width or MIN_SIZE, request.height or MIN_SIZE
            hires = HiresOptions.from_options(request.options, width, height)
            if hires is not None:
                hires_steps = hires.pass_steps(request.steps)
                planned.append(("the prompt", request.prompt, hires_steps, request.steps))
        faces = FaceOptions.from_options(request.options)
    except RenderInputError as error:  # e.g. settings pasted without a size, never validated
        raise UserError(_then(error, "fix the settings and try again.")) from None
    if faces.prompt is not None:
        planned.append(("the fix-faces prompt", faces.prompt, request.steps, None))
    return planned


def _applies_loras(request: RenderRequest, name: str) -> bool:
    """Whether the engine applies the LoRA tags of ``request``'s prompt called ``name``
    (``_prompts_planned``), where its mode applies any (``applies_networks``): the faces pass
    inside /imagine applies the prompt's, not the fix-faces prompt's."""
    return name == "the prompt" and applies_networks(request.mode)


def renders_prompt(request: RenderRequest) -> bool:
    """Whether the engine renders from ``request``'s prompt: all but a fast upscale."""
    return request.mode != "upscale" or UpscaleOptions.from_options(request.options).mode != "fast"


def explain_prompt(
    prompt: str,
    negative: str,
    steps: int | None,
    wildcards_dir: Path | None,
    warned: OperatorWarnings | None = None,
) -> dict[str, Any]:
    """``/explain``: how the prompt is read, as the ``easel explain`` JSON (``warned``:
    ``plan_request``'s)."""
    check_prompt_length(prompt, "the prompt")
    check_prompt_length(negative, "the negative prompt")
    try:
        return explain(prompt, negative, steps=steps, wildcards_dir=wildcards_read(wildcards_dir))
    except PromptError as error:
        library = WildcardLibrary(wildcards_read(wildcards_dir))
        raise _prompt_refused(error, (prompt, negative), library, warned) from None


def _prompt_refused(
    error: PromptError,
    typed: Collection[str],
    library: WildcardLibrary,
    warned: OperatorWarnings | None,
) -> UserError:
    """A prompt the prompt language rejects, refused in the member's words: an unknown
    wildcard the member typed (one of ``typed``) names those there are, and is never logged
    (the member's words; the refusal is counted); one a wildcard file names is that file's
    fault, not the prompt's: the member is told which wildcard is broken (the files of the
    wildcard whose value named it, ``UnknownWildcardError.named_in``), the operator warned of
    the file once a day (``warned``: ``plan_request``'s). So is a wildcard file at fault
    otherwise (its { } syntax, a loop, braces too deep: ``PromptError.in_wildcard``)."""
    if isinstance(error, UnknownWildcardError):
        reference = f"__{error.name}__"
        if any(reference in text for text in typed):
            return UserError(unknown_wildcard(error.name, error.available))
        fault = f"its file names {quoted(reference)}, which is no wildcard here"
        holder, warning = error.named_in, f"A wildcard file names {reference}, which is no wildcard"
    elif error.in_wildcard is not None:
        holder, fault, warning = error.in_wildcard, error.file_fault, f"A wildcard file: {error}"
    else:
        return UserError(_then(error, "fix the prompt and try again."))
    files = library.files_of(holder) if holder else []
    if warned is None or warned.first(("wildcard", warning)):
        log.warning("%s: %s", warning, ", ".join(map(str, files)) or "file not found")
    return UserError(broken_wildcard([file.with_suffix("").as_posix() for file in files], fault))


def wildcards_read(wildcards_dir: Path | None) -> Path | None:
    """The wildcard folder as the engine reads it: no folder, no wildcards (``__name__``
    stays as typed), so that /explain and a render agree."""
    return wildcards_dir if wildcards_dir is not None and wildcards_dir.is_dir() else None


def _then(error: Exception, advice: str) -> str:
    """The error's sentence, then ``advice``: after "; " unless the sentence already ended."""
    sentence = str(error)
    return (
        f"{sentence} {advice[0].upper()}{advice[1:]}"
        if sentence.endswith((".", "?"))
        else f"{sentence}; {advice}"
    )


def server_readers_busy(guild_id: int | None) -> str:
    """The refusal of a plan whose budget went waiting for its server's share of the readers
    (``SERVER_THREADS``); ``guild_id`` None: direct messages, which share one."""
    where = "direct messages" if guild_id is None else "this server"
    return SERVER_READERS_BUSY.format(where=where, share=SERVER_THREADS, total=PLAN_THREADS)


class OperatorWarnings:
    """What the operator's log was lately told of the wildcard files, by kind and name
    (``("lora file", path)``, ``("wildcard", name)``): each told again after
    ``WARNED_AGAIN_AFTER_S``, at most ``WARNINGS_KEPT`` kept (files and wildcard names, not
    the LoRAs a file names: a file of thousands of names is one); shared by the plan
    threads."""

    def __init__(self) -> None:
        self._told: ExpiringKeys[tuple[str, str]] = ExpiringKeys(
            WARNED_AGAIN_AFTER_S, WARNINGS_KEPT
        )
        self._lock = threading.Lock()

    def lately(self, key: tuple[str, str]) -> bool:
        """Whether ``key`` was told lately."""
        with self._lock:
            return self._told.holds(key, time.monotonic())

    def first(self, key: tuple[str, str]) -> bool:
        """Whether ``key`` is to be told now (not told lately); it counts as told from now."""
        with self._lock:
            now = time.monotonic()
            if self._told.holds(key, now):
                return False
            self._told.add(key, now)
            return True


# Where a plan waits for its turn: ("member", its member's id) while their previous plan is
# read, ("server", its server's id; None: direct messages) while the server holds its share.
_Line = tuple[str, int | None]


class _Turn(NamedTuple):
    """The line a plan waits in before it may take a reader, and its refusal if its budget
    ends meanwhile."""

    line: _Line
    refusal: str


class PromptPlanner:
    """The prompt work of the bot, each call on one of its own ``PLAN_THREADS`` threads within
    its budget, and one thread at a time per member: a member's prompts are read one after the
    other (a second one waits its turn within its own budget), and while one of them runs on
    past its budget (refused, its thread on until the prompt language's next checkpoint) the
    next is refused at once with ``STILL_PLANNING``. A server's plans hold at most
    ``SERVER_THREADS`` threads at once; its next one waits for one of them within its budget,
    while another server's starts on a free thread at once."""

    def __init__(
        self,
        wildcards_dir: Path | None,
        budget_s: float = PLAN_BUDGET_S,
        explain_budget_s: float = EXPLAIN_BUDGET_S,
        stored_budget_s: float = STORED_CHECK_BUDGET_S,
        installed_embeddings: Callable[[], Collection[str]] = tuple,
        max_job_bytes: Callable[[], int] | None = None,
        models_without_embeddings: Callable[[], Collection[str]] = tuple,
        unnamed_model: Callable[[], str | None] | None = None,
        installed_loras: Callable[[], Collection[str]] | None = None,
        flow_label: Callable[[str], str | None] | None = None,
    ) -> None:
        """``installed_embeddings``: the embeddings installed for the bot, listed now (called on
        a reader's thread: it may walk a folder), whose names a plan records where they occur;
        ``max_job_bytes``: the largest job the broker carries now (None: renders run here);
        ``models_without_embeddings``, ``unnamed_model``: ``plan_request``'s, listed now (on a
        reader's thread; ``unnamed_model`` None: renders run elsewhere); ``installed_loras``:
        ``plan_request``'s, listed on a reader's thread for a refusal only; ``flow_label``:
        ``plan_request``'s (a header read, on a reader's thread)."""
        self.wildcards_dir = wildcards_dir
        self.flow_label = flow_label
        self.installed_loras = installed_loras
        self._warned = OperatorWarnings()  # ``plan_request``'s, kept while the bot runs
        self.installed_embeddings = installed_embeddings
        self.models_without_embeddings = models_without_embeddings
        self.unnamed_model = unnamed_model
        self.max_job_bytes = max_job_bytes
        self.budget_s = budget_s
        self.explain_budget_s = explain_budget_s
        self.stored_budget_s = stored_budget_s
        self._threads = ThreadPoolExecutor(PLAN_THREADS, thread_name_prefix="easel-prompt")
        self._reading: dict[int, asyncio.Future[Any]] = {}  # a member's prompt being read
        # Each server's plans on a thread or queued for one (None: direct messages).
        self._server_reading: dict[int | None, set[asyncio.Future[Any]]] = {}
        self._plan_started: dict[asyncio.Future[Any], float] = {}  # each on a thread: since when
        self._overdue: set[int] = set()  # members whose prompt is read past its budget
        # Plans waiting for their turn, each line first come, first woken. A plan's end wakes
        # one waiter of each line it frees, not all of them: a burst of one server's commands
        # all waiting on its plans woke every waiter at each plan's end (O(n²) wake-ups on the
        # loop that sends the acknowledgements; docs/performance.md, twelfth stop).
        self._lines: dict[_Line, deque[asyncio.Future[None]]] = {}
        self._waited_for: set[threading.Event] = set()  # each one's stop, while awaited
        # The installed models' families read ahead of the first plan (``warm_up``).
        self.families_read: asyncio.Task[None] | None = None
        # The operator's banned words' matcher built ahead of the first plan (``warm_up``).
        self.operator_words_built: asyncio.Task[None] | None = None
        self._closed = False

    async def check(
        self,
        request: RenderRequest,
        banned_words: Collection[str],
        member_id: int | None = None,
        *,
        guild_id: int | None,
        addons: AddonRules = ANY_ADDON,
    ) -> RenderRequest:
        """``plan_request`` off the event loop; ``member_id``: whose command it is (None:
        counted against no one); ``guild_id``: the server it is sent in (None: direct
        messages), whose share of the threads it takes; ``addons``: its add-on lists."""
        return await self._off_loop(
            self.budget_s, member_id, guild_id, self._plan, request, banned_words, addons
        )

    async def read(
        self, member_id: int, guild_id: int | None, function: Callable[..., T], *args: Any
    ) -> T:
        """``function(*args)``: prompt work a command does before its request is checked (a
        grid's ``Template`` drawn again from a picture's text, ``bot.infotext_import``), off
        the event loop as ``check``'s: within a prompt's budget, on its member's and server's
        share of the readers, stopped at the prompt language's next checkpoint once refused."""
        return await self._off_loop(self.budget_s, member_id, guild_id, function, *args)

    def _plan(
        self, request: RenderRequest, banned_words: Collection[str], addons: AddonRules
    ) -> RenderRequest:
        """``plan_request`` on a reader's thread, with the embeddings installed now."""
        return plan_request(
            request,
            banned_words,
            self.wildcards_dir,
            addons,
            self.installed_embeddings(),
            None if self.max_job_bytes is None else self.max_job_bytes(),
            self.models_without_embeddings(),
            None if self.unnamed_model is None else self.unnamed_model(),
            self.installed_loras,
            self._warned,
            self.flow_label,
        )

    async def check_stored(
        self, texts: ConditioningTexts, banned_words: Collection[str], *, guild_id: int | None
    ) -> None:
        """``moderation.check_banned_since`` off the event loop (a stored job's texts, up to
        16,000 characters each, its fix-faces prompt drawn again for each picture, read again
        for banned words), within its own budget. Counted against no member: the verdict is
        shared (``GuildPolicy.check_reuse`` takes turns); counted against the job's server
        (``guild_id``), whose banned words it reads and whose verdict it is, wherever the
        click came from."""
        await self._off_loop(
            self.stored_budget_s,
            None,
            guild_id,
            check_banned_since,
            texts,
            banned_words,
            overdue=STORED_TOO_LONG,
        )

    async def warm_up(self, operator_words: frozenset[str] = frozenset()) -> None:
        """Load what the first plan would (see ``WARM_UP_REQUEST``), off the event loop; then
        start reading the installed models' families on a thread of the loop's own, awaited by
        no one (every checkpoint's header: 393 ms for 60 of them, which the first plan after a
        start paid on the admission path): the start does not wait for it, and a plan during
        it waits for what is left of it, not reading every header again
        (``inference.model_list.installed_models``). Started after the plan, with whose thread
        it would share the interpreter. The matcher of ``operator_words`` (the operator's
        banned words, read by every plan) is built the same way, on a thread of its own
        (``moderation.operator_matcher``: 20,000 words, about 1.5 s that the first
        prompt paid; a plan meanwhile waits for that build)."""
        await asyncio.wrap_future(
            self._threads.submit(plan_request, WARM_UP_REQUEST, (), self.wildcards_dir)
        )
        self.families_read = asyncio.create_task(
            asyncio.to_thread(self._read_model_families), name="easel-model-families"
        )
        if operator_words:
            self.operator_words_built = asyncio.create_task(
                asyncio.to_thread(self._build_operator_matcher, operator_words),
                name="easel-operator-words",
            )

    @staticmethod
    def _build_operator_matcher(words: frozenset[str]) -> None:
        try:
            operator_matcher(words)
        except Exception:  # the first plan builds it again, and fails in its own words
            log.exception("building the operator's banned words' matcher ahead of time failed")

    def _read_model_families(self) -> None:
        """``models_without_embeddings`` ahead of the first plan, which finds them cached."""
        try:
            self.models_without_embeddings()
        except Exception:  # the first plan reads them again, and fails in its own words
            log.exception("reading the installed models' families ahead of the first plan failed")

    async def explain(
        self,
        prompt: str,
        negative: str,
        steps: int | None,
        member_id: int | None = None,
        *,
        guild_id: int | None,
    ) -> dict[str, Any]:
        """``explain_prompt`` off the event loop (``member_id``, ``guild_id``: as ``check``)."""
        return await self._off_loop(
            self.explain_budget_s,
            member_id,
            guild_id,
            explain_prompt,
            prompt,
            negative,
            steps,
            self.wildcards_dir,
            self._warned,
        )

    def close(self) -> None:
        """Refuse new work, drop what never started and stop what runs at its next
        checkpoint; returns at once (``PLAN_THREADS`` threads end within moments)."""
        self._closed = True
        for stop in self._waited_for:
            stop.set()
        for waiting in self._lines.values():  # each is refused as it wakes
            for woken in waiting:
                if not woken.done():
                    woken.set_result(None)
        self._lines.clear()
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def _off_loop(
        self,
        budget_s: float,
        member_id: int | None,
        guild_id: int | None,
        function: Callable[..., T],
        *args: Any,
        # The refusal when a stored text's check takes longer (None: a prompt's, the member's).
        overdue: str | None = None,
    ) -> T:
        if member_id in self._overdue:
            raise UserError(STILL_PLANNING, Reason.BUSY)
        submitted: Future[T] | None = None
        mine: asyncio.Future[T] | None = None
        refused_waiting = STILL_PLANNING  # the refusal once the budget goes waiting for a turn
        woken_in: _Line | None = None  # the line that last woke this plan
        stop = threading.Event()
        self._waited_for.add(stop)
        try:
            async with asyncio.timeout(budget_s):
                # All checked again after each wait, with no wait between the last check and
                # the submit: a member's plans waiting side by side take one thread in turn.
                while not self._closed and (turn := self._turn_awaited(member_id, guild_id)):
                    refused_waiting = turn.refusal
                    # Slowed by the plans holding its line (bot.acknowledge_first).
                    slowed_by_plans(functools.partial(self._oldest_plan_start, turn.line))
                    woken_in = await self._wait_in(turn.line, woken_in)
                if self._closed:
                    raise UserError(CLOSED, Reason.CLOSED)
                submitted = self._threads.submit(stopping_when, stop, function, *args)
                mine = asyncio.wrap_future(submitted)
                mine.add_done_callback(lambda _: self._read(member_id, guild_id, mine))
                started = self._plan_started[mine] = time.monotonic()
                if member_id is not None:
                    self._reading[member_id] = mine
                slowed_by_plans(lambda: started)
                self._server_reading.setdefault(guild_id, set()).add(mine)
                # Shielded: the thread stops only at a checkpoint, so its member and server
                # are free only once it ends (soon after ``stop`` is set, below).
                return await asyncio.shield(mine)
        except PlanStopped:  # only ``close`` stops a plan that is still waited for
            raise UserError(CLOSED, Reason.CLOSED) from None
        except asyncio.CancelledError:
            # Still queued when ``close`` dropped it: the member gets an answer; a cancel of
            # the waiting task itself goes on.
            task = asyncio.current_task()
            dropped = submitted is not None and submitted.cancelled()
            if self._closed and dropped and task is not None and not task.cancelling():
                raise UserError(CLOSED, Reason.CLOSED) from None
            raise
        except TimeoutError:
            if submitted is None:  # the budget went waiting for the member's or server's turn
                raise UserError(refused_waiting, Reason.BUSY) from None
            if submitted.cancel():  # never started (every reader busy): nothing of theirs runs
                raise UserError(READERS_BUSY, Reason.BUSY) from None
            if member_id is not None and mine is not None and not mine.done():
                self._overdue.add(member_id)
            if overdue is not None:
                raise UserError(overdue, Reason.UNCHECKED) from None
            raise UserError(
                f"Reading this prompt took longer than {budget_s:g} s; simplify it (fewer "
                "wildcards, choices or schedules)."
            ) from None
        finally:  # answered, refused or cancelled: nobody reads the plan from here on
            slowed_by_plans(None)
            stop.set()
            self._waited_for.discard(stop)

    def _turn_awaited(self, member_id: int | None, guild_id: int | None) -> _Turn | None:
        """The line a plan of ``member_id`` in ``guild_id`` waits in before it takes a thread:
        its member's while their previous plan is read, else its server's while the server's
        plans hold its share; None: it may take one now."""
        if member_id is not None and member_id in self._reading:
            return _Turn(("member", member_id), STILL_PLANNING)
        if len(self._server_reading.get(guild_id, ())) >= SERVER_THREADS:
            return _Turn(("server", guild_id), server_readers_busy(guild_id))
        return None

    def _oldest_plan_start(self, line: _Line) -> float | None:
        """When the oldest plan holding ``line`` began (``time.monotonic``): the member's plan
        being read, or the oldest on the server's share of the readers; None: none now."""
        kind, key = line
        if kind == "server":
            plans: Collection[asyncio.Future[Any]] = self._server_reading.get(key, ())
        else:
            plans = [self._reading[key]] if key is not None and key in self._reading else []
        return min((self._plan_started[plan] for plan in plans), default=None)

    async def _wait_in(self, line: _Line, woken_in: _Line | None) -> _Line:
        """Wait in ``line`` until woken; returns it. ``woken_in``: the line that woke this plan
        last (None: none yet). Woken there and waiting in it again, the plan was passed by one
        that came meanwhile: it waits at its head. Waiting for something else now, it hands the
        turn it was given to the next in that line. Woken, then cancelled (its budget ended
        before it ran), it hands this line's turn on."""
        if woken_in is not None and woken_in != line:
            self._wake(woken_in)
        woken = asyncio.get_running_loop().create_future()
        waiting = self._lines.setdefault(line, deque())
        if woken_in == line:
            waiting.appendleft(woken)
        else:
            waiting.append(woken)
        try:
            await woken
        except BaseException:
            if woken.done() and not woken.cancelled():
                self._wake(line)
            elif woken in waiting:
                waiting.remove(woken)
                if not waiting:
                    self._lines.pop(line, None)
            raise
        return line

    def _wake(self, line: _Line) -> None:
        """The first plan still waiting in ``line``, if any, checks its turn again."""
        waiting = self._lines.get(line)
        while waiting:
            woken = waiting.popleft()
            if not woken.done():  # a cancelled one leaves the line once its task runs
                woken.set_result(None)
                break
        if waiting is not None and not waiting:
            del self._lines[line]

    def _read(
        self, member_id: int | None, guild_id: int | None, thread: asyncio.Future[Any]
    ) -> None:
        if not thread.cancelled():
            thread.exception()  # retrieved: a plan stopped after its refusal is no error
        self._plan_started.pop(thread, None)
        server_plans = self._server_reading.get(guild_id, set())
        server_plans.discard(thread)
        if not server_plans:
            self._server_reading.pop(guild_id, None)
        self._wake(("server", guild_id))
        if member_id is not None and self._reading.get(member_id) is thread:
            del self._reading[member_id]
            self._overdue.discard(member_id)
            self._wake(("member", member_id))
