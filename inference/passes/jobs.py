"""A request's pictures as image jobs: one per picture, each with its own seed, its prompt
expanded (wildcards) and checked, and the LoRAs and embeddings it asks for."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass, field

from inference.conditioning import DEFAULT_CLIP_SKIP
from inference.limits import MAX_CLIP_SKIP
from inference.networks import merged_loras
from inference.prompts import (
    ExtraNetwork,
    PlannedDraws,
    PromptError,
    PromptPlan,
    WildcardLibrary,
    build_plan,
    picture_seeds,
)
from inference.prompts.chaos import MAX_CHAOS, chaos_prompt
from inference.prompts.flags import random_seed
from inference.samplers import calls_per_step
from inference.types import (
    ALLOWED_EMBEDDINGS_OPTION,
    ALLOWED_LORAS_OPTION,
    USED_EMBEDDINGS_OPTION,
    RenderInputError,
    RenderRequest,
)


def resolve_seed(seed: int | None) -> int:
    return random_seed() if seed is None or seed == -1 else seed


@dataclass(frozen=True)
class OwnRequest:
    """What a picture's text says of its own request that the pipeline call it renders in
    does not share (``RenderRequest.pipeline_key`` leaves it out): a batch's call runs as its
    first request."""

    chaos: int | None = None
    relax: bool = False

    @classmethod
    def of(cls, request: RenderRequest) -> OwnRequest:
        options = request.options
        return cls(options.get("chaos"), bool(options.get("relax")))


@dataclass(frozen=True)
class ImageJob:
    """One picture of a (possibly batched) pipeline call.

    ``prompt``/``negative_prompt`` are the texts after wildcard expansion (what the infotext
    shows); ``template``/``negative_template`` what was typed, when expansion changed it.
    """

    prompt: str
    negative_prompt: str
    seed: int
    variation_seed: int | None
    variation_strength: float
    template: str | None = None
    negative_template: str | None = None
    warnings: tuple[str, ...] = ()
    # LoRAs found on disk (merged by name, sorted) and embedding names the prompts use.
    loras: tuple[ExtraNetwork, ...] = ()
    embeddings: tuple[str, ...] = ()
    # The plan ``image_jobs`` made, over the request's steps with its wildcard library: the
    # pass that runs those steps takes it rather than planning the prompt a second time.
    # With the texts and seed it was made from: a copy of the job with another prompt or
    # seed (a faces pass, an upscale tile) plans its own.
    planned: tuple[PromptPlan, WildcardLibrary | None, tuple[str, str, int]] | None = field(
        default=None, compare=False, repr=False
    )
    # The texts the bot drew its prompts as (``planned_draws``): every pass plans with them,
    # not with the folder where it renders. None: a job queued without them.
    draws: PlannedDraws | None = field(default=None, compare=False, repr=False)
    # The seed the prompts are drawn at, where it is not the noise's: a creative upscale's
    # tiles each take their own noise seed but the picture's prompt (the one the bot checked).
    prompt_seed: int | None = None
    # What its text says of the request it was made for (a batch's call runs as another's).
    # No default: every job names its own, so a pass cannot silently drop Chaos or Relax.
    own_request: OwnRequest = field(kw_only=True)

    @property
    def planning_inputs(self) -> tuple[str, str, int]:
        """What the plan is made from: the typed texts and the seed they are drawn at."""
        return (
            self.prompt if self.template is None else self.template,
            self.negative_prompt if self.negative_template is None else self.negative_template,
            self.seed if self.prompt_seed is None else self.prompt_seed,
        )

    def plan(
        self,
        steps: int,
        wildcards: WildcardLibrary | None,
        first_pass_steps: int | None = None,
        calls_per_step: int = 1,
    ) -> PromptPlan:
        """The prompt planned over ``steps`` sampling steps (same seed: same expansion); a
        hires pass's after a first pass of ``first_pass_steps``; over each model call of a
        sampler making ``calls_per_step`` (``build_plan``). A pass of other steps (hires fix,
        faces) may find it over a limit the request's steps were not: the member reads why,
        as from ``image_jobs``. ``wildcards``: the folder where it renders, read unless the
        job carries its ``draws``. The LoRAs the job applies are its ``loras``, planned and
        checked by ``image_jobs``: a pass's own plan (a fix-faces prompt's, an upscale's)
        applies none of its prompt's tags, so it does not check their weights."""
        prompt, negative, seed = self.planning_inputs
        if self.draws is not None:
            wildcards = self.draws
        if self.planned is not None:
            plan, planned_with, planned_from = self.planned
            if (plan.steps, plan.first_pass_steps, plan.calls_per_step, planned_from) == (
                steps,
                first_pass_steps,
                calls_per_step,
                (prompt, negative, seed),
            ) and (planned_with is wildcards):
                return plan
        return _planned(
            prompt,
            negative,
            seed=seed,
            steps=steps,
            wildcards=wildcards,
            first_pass_steps=first_pass_steps,
            calls_per_step=calls_per_step,
            applies_loras=False,
        )


@dataclass(frozen=True)
class PromptTimeline:
    """The steps a pass reads its prompt's edits ``[a:b:when]`` and alternations ``[a|b]``
    over, as the web UI does (docs/parity.md): ``steps`` planned, and counted from the pass's
    first step. A pass from a picture (img2img, inpaint, faces, creative upscale) plans over
    the request's steps, though it runs only the last of them; the hires pass plans over its
    own steps after a first pass of ``first_pass_steps``. ``finishes_schedule``: the pass
    runs the end of the planned steps and counts on from there (the refiner, which takes
    over from the base model in the middle of one sampling)."""

    steps: int
    first_pass_steps: int | None = None
    finishes_schedule: bool = False


def _planned(
    prompt: str,
    negative: str,
    *,
    seed: int,
    steps: int,
    wildcards: WildcardLibrary | None,
    loras: Collection[str] | None = None,
    embeddings: Collection[str] = (),
    first_pass_steps: int | None = None,
    calls_per_step: int = 1,
    applies_loras: bool = True,
) -> PromptPlan:
    """``build_plan``, a prompt it refuses refused as the render's input (the member reads
    why: the sentence, not an internal error)."""
    try:
        return build_plan(
            prompt,
            negative,
            seed=seed,
            steps=steps,
            wildcards=wildcards,
            loras=loras,
            embeddings=embeddings,
            first_pass_steps=first_pass_steps,
            calls_per_step=calls_per_step,
            applies_loras=applies_loras,
        )
    except PromptError as error:
        raise RenderInputError(str(error)) from error


def image_jobs(
    request: RenderRequest,
    wildcards: WildcardLibrary | None,
    loras: Collection[str],
    embeddings: Collection[str],
) -> list[ImageJob]:
    """One job per picture: image i uses the seeds ``picture_seeds`` gives it (seed + i and
    variation seed + i; a varied batch keeps its seed, as the web UI), and its wildcards are
    expanded with its seed. Prompt errors surface here, before any
    model loads. ``loras`` and ``embeddings`` are the names on disk: unknown LoRA tags
    become prompt warnings (naming only LoRAs the request may apply,
    ``ALLOWED_LORAS_OPTION``: where its server lists LoRAs, those its prompts apply); only
    the embeddings the request may read are (``readable_embeddings``). With
    ``options["chaos"]`` each picture reads the prompt with its own seeded weights
    (``inference.prompts.chaos``)."""
    embeddings = readable_embeddings(request, embeddings)
    allowed_loras = _names_option(request, ALLOWED_LORAS_OPTION)
    if allowed_loras is not None:
        loras = [name for name in loras if name in allowed_loras]
    clip_skip_of(request)
    chaos = chaos_of(request)
    draws = planned_draws(request)
    if draws is not None:
        wildcards = draws
    seed = resolve_seed(request.seed)
    variation_seed = (
        None if request.variation_seed is None else resolve_seed(request.variation_seed)
    )
    # Planned as the engine's pass over the request's steps plans it: the plan is its.
    sampler_calls = calls_per_step(request.sampler, request.schedule_type)
    own_request = OwnRequest.of(request)
    jobs = []
    for index in range(request.count):
        image_seed, image_variation_seed = picture_seeds(
            seed, variation_seed, request.variation_strength, index
        )
        prompt = chaos_prompt(request.prompt, chaos, image_seed)
        plan = _planned(
            prompt,
            request.negative_prompt,
            seed=image_seed,
            steps=request.steps,
            wildcards=wildcards,
            loras=loras,
            embeddings=embeddings,
            calls_per_step=sampler_calls,
        )
        jobs.append(
            ImageJob(
                prompt=plan.prompt,
                negative_prompt=plan.negative_prompt,
                seed=image_seed,
                variation_seed=image_variation_seed,
                variation_strength=request.variation_strength,
                template=prompt if plan.prompt != prompt else None,
                negative_template=(
                    request.negative_prompt
                    if plan.negative_prompt != request.negative_prompt
                    else None
                ),
                warnings=plan.warnings,
                loras=merged_loras(plan.loras(loras)),
                embeddings=plan.embeddings_used,
                draws=draws,
                own_request=own_request,
            )
        )
        jobs[-1] = dataclasses.replace(
            jobs[-1], planned=(plan, wildcards, jobs[-1].planning_inputs)
        )
    return jobs


def readable_embeddings(request: RenderRequest, installed: Collection[str]) -> list[str]:
    """The ``installed`` embeddings ``request`` may read: those admission found its prompts
    name (``USED_EMBEDDINGS_OPTION``: one installed since, or only where it renders, is
    plain text, as the bot never checked it) within those its server allows
    (``ALLOWED_EMBEDDINGS_OPTION``). A job journaled before either option: no such limit."""
    readable = list(installed)
    for key in (USED_EMBEDDINGS_OPTION, ALLOWED_EMBEDDINGS_OPTION):
        names = _names_option(request, key)
        if names is not None:
            readable = [name for name in readable if name in names]
    return readable


def _names_option(request: RenderRequest, key: str) -> list[str] | None:
    """The names ``request.options[key]`` holds (None: absent); a list of names or nothing,
    as a string would match its substrings."""
    names = request.options.get(key)
    if names is not None and not (
        isinstance(names, list) and all(isinstance(name, str) for name in names)
    ):
        raise RenderInputError(f"the {key} option must be a list of names")
    return names


def planned_draws(request: RenderRequest) -> PlannedDraws | None:
    """The wildcard draws ``request`` carries from where it was planned (``PlannedDraws``)."""
    try:
        return PlannedDraws.of(request.options)
    except PromptError as error:
        raise RenderInputError(str(error)) from error


def clip_skip_of(request: RenderRequest) -> int:
    """``options["clip_skip"]``: 1 (the last layer, default) to 12."""
    value = request.options.get("clip_skip", DEFAULT_CLIP_SKIP)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RenderInputError(
            f"clip skip must be a whole number in 1..{MAX_CLIP_SKIP}, got {value!r}"
        )
    if not 1 <= value <= MAX_CLIP_SKIP:
        raise RenderInputError(f"clip skip must be in 1..{MAX_CLIP_SKIP}, got {value}")
    return value


def chaos_of(request: RenderRequest) -> int:
    """``options["chaos"]``: 0 (no change, the default) to 100."""
    value = request.options.get("chaos", 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_CHAOS:
        raise RenderInputError(f"chaos must be a whole number in 0..{MAX_CHAOS}, got {value!r}")
    return value


def pad_conds(request: RenderRequest) -> bool:
    return bool(request.options.get("pad_conds", False))
