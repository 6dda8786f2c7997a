"""Prompt schedules and composable diffusion (``AND``) inside the stock diffusers pipelines.

The pipelines take one text embedding per picture for the whole render. The web UI instead
picks, at every sampling step, the conditioning scheduled for that step (prompt editing,
alternation) and, for ``a AND b:0.5``, evaluates each sub-prompt and combines them as
``uncond + cfg * sum_i w_i * (cond_i - uncond)``. ``ScheduledUNet`` stands in for the
pipeline's UNet during one call and does both: for the positive half of the CFG batch it
returns ``uncond + sum_i w_i * (cond_i - uncond)``, which the pipeline's own CFG formula
turns into the web UI's. With guidance off (no uncond half) a plain prompt is evaluated
alone; a composed one also evaluates the uncond itself, which gives the web UI's result
at CFG scale 1.

Steps: the UNet call index is advanced from ``callback_on_step_end``. As in the web UI,
call ``k`` (0-based) uses the first scheduled text whose ``until_step`` (1-based) is at least
``k``: ``[a:b:2]`` over 4 steps shows ``a`` for three steps. Samplers that call the UNet twice
per step (Heun, DPM2, DPM2 a, DPM++ SDE, DPM++ 2S a: ``order`` 2, ``2N - 1`` calls) have their
schedules planned over ``2N`` steps and read at each call, as the web UI plans them over its
``total_steps`` and counts model calls: there ``[a:b:2]`` shows ``a`` for three calls.

Each pass plans the schedules over the steps its ``PromptTimeline`` names, and counts from its
own first step, as the web UI does: img2img (which runs the last ``int(denoising * steps) + 1``
of ``steps``, ``Img2ImgSteps.img2img``) plans over ``steps``, so at denoising 0.5
``[a:b:0.5]`` never switches; the hires pass goes on from the first pass's steps; the refiner
counts on from the step where the base model stopped.

Pictures of one call may have conditionings of different lengths (a 150-token prompt next
to a short one, or a long negative). Each conditioning is attended at its own length, as the
web UI does by default: shorter ones are zero-padded for the shared UNet call and the padding
is masked out of cross-attention, so a picture renders the same alone or in a batch. With
``pad_conds`` a picture's conditionings are instead padded with empty-chunk encodings to its
longest one and attended in full (the web UI's "pad prompt/negative prompt" option).

``AND`` makes more rows than the pipeline sends; past ``MAX_UNET_ROWS`` they go to the real
UNet (and ControlNet) in several calls, each with its rows of every per-row input.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

from inference.conditioning import Conditioning, PromptEncoder, pad_to_chunks
from inference.limits import MAX_BATCH_IMAGES
from inference.prompts import PromptPlan, SubPromptPlan

StepCallback = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]
# Extra UNet inputs for the evaluated rows (ControlNet residuals): given the rows' latents,
# timestep, text states, the UNet's other inputs and how far the pass is (0 to 1).
ControlHook = Callable[[torch.Tensor, Any, torch.Tensor, dict[str, Any], float], dict[str, Any]]
# An image prompt's tokens for the evaluated rows, given which of them are negative rows.
ImageTokens = Callable[[Sequence[bool]], torch.Tensor]

# Rows one call of the real UNet (and ControlNet) may take. ``AND`` adds a row per extra part
# and picture (4 pictures of 16 parts with CFG: 68), and activation memory grows with the
# rows, so more are evaluated in calls of at most this many. The engine's largest plain
# batch, 16 pictures with CFG, is 32 rows: a batch without ``AND`` is never split, and no
# call is bigger than that batch's. Split calls are near even, so each has at least half of
# this (33 rows: 16 and 17), over the 8 rows compiled or graphed
# (``inference.compile.UNET_ROWS``): they run eager.
MAX_UNET_ROWS = 2 * MAX_BATCH_IMAGES
# Which rows of a split call the real UNet is evaluating: (the chunk's first row, the call's
# rows); (0, 0) when unsplit. What keeps state a UNet holds from one call to the next (fast
# mode's DeepCache) apart per chunk, and a chunk of another row count apart from this one.
UNET_CHUNK: ContextVar[tuple[int, int]] = ContextVar("UNET_CHUNK", default=(0, 0))


@dataclass(frozen=True)
class ScheduledConditioning:
    """One sub-prompt (or the negative prompt): its weight and encodings over the steps."""

    weight: float
    schedule: tuple[tuple[int, Conditioning], ...]  # (until_step, encoding)

    def at_step(self, step_index: int) -> Conditioning:
        """The encoding for 0-based sampling step ``step_index`` (web UI lookup). A call past
        the plan (DDIM makes a few more calls than steps) reads the first, as the web UI's
        ``reconstruct_cond_batch`` does."""
        return next(
            (encoding for until, encoding in self.schedule if step_index <= until),
            self.schedule[0][1],
        )


def _scheduled(sub: SubPromptPlan, encoder: PromptEncoder) -> ScheduledConditioning:
    schedule = tuple((entry.until_step, encoder.encode(entry.chunks)) for entry in sub.schedule)
    return ScheduledConditioning(sub.weight, schedule)


@dataclass(frozen=True)
class ImageConditioning:
    """Everything one picture needs from its prompt, encoded."""

    subprompts: tuple[ScheduledConditioning, ...]
    negative: ScheduledConditioning

    @classmethod
    def from_plan(cls, plan: PromptPlan, encoder: PromptEncoder) -> ImageConditioning:
        subprompts = tuple(_scheduled(sub, encoder) for sub in plan.subprompts)
        return cls(subprompts, _scheduled(plan.negative, encoder))

    @property
    def plain(self) -> bool:
        """One sub-prompt at weight 1: the pipeline's own CFG needs no composing."""
        return len(self.subprompts) == 1 and self.subprompts[0].weight == 1.0


@dataclass
class _Evaluations:
    """The rows of one UNet call: which input row each reads and with which conditioning."""

    sources: list[int]
    conditionings: list[Conditioning]
    negatives: list[bool]  # rows of a negative prompt (an image prompt leaves them blank)

    def add(self, source: int, conditioning: Conditioning, negative: bool = False) -> int:
        self.sources.append(source)
        self.conditionings.append(conditioning)
        self.negatives.append(negative)
        return len(self.sources) - 1


# How one output row is made from evaluated rows: (uncond row or None, [(weight, row)]).
_Recipe = tuple[int | None, list[tuple[float, int]]]
# The rows' text states, cross-attention mask (None: same lengths) and pooled states.
_States = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]


@dataclass(frozen=True)
class _RowPlan:
    """One UNet call's rows: what is evaluated, and how the output rows are made of it."""

    evaluations: _Evaluations
    recipes: list[_Recipe]
    # None: the evaluated rows are the input rows in order, so tensors pass untouched.
    sources: list[int] | None
    combined: bool  # False: every output row is its own evaluated row, in order


class PromptGuidance:
    """Per-step conditioning for one pipeline call of ``len(plans(...))`` pictures.

    ``plans()`` plans every picture's prompt (over each model call of the sampler:
    ``build_plan``'s ``calls_per_step``, checked against the scheduler's ``order``); it is
    called at the first UNet call. With ``finishes_schedule`` the call runs the last of the
    sampling's model calls (a refiner): its first call reads the plans at the call where the
    base model stopped, not at their first.
    """

    def __init__(
        self,
        encoder: PromptEncoder,
        plans: Callable[[], Sequence[PromptPlan]],
        pad_conds: bool = False,
        control: ControlHook | None = None,
        image_tokens: ImageTokens | None = None,
        finishes_schedule: bool = False,
    ) -> None:
        self.encoder = encoder
        self.plans = plans
        self.pad_conds = pad_conds
        self.control = control
        self.image_tokens = image_tokens
        self.finishes_schedule = finishes_schedule
        self.images: list[ImageConditioning] = []
        self.steps = 0
        self.first_step = 0  # the plans' step (model call) this call's first one reads
        self.iteration = 0  # UNet loop iterations finished
        self.iterations = 0
        # Every schedule's until_step: steps between two of them use the same conditionings.
        self._boundaries: list[int] = []
        self._row_plans: dict[tuple[int, int], _RowPlan] = {}

    def pipeline_arguments(self, count: int) -> dict[str, torch.Tensor]:
        """Stand-in embeddings with the right shapes; ``ScheduledUNet`` replaces them."""
        empty = self.encoder.empty
        hidden = empty.hidden.expand(count, -1, -1)
        arguments = {"prompt_embeds": hidden, "negative_prompt_embeds": hidden}
        if empty.pooled is not None:
            pooled = empty.pooled.expand(count, -1)
            arguments |= {"pooled_prompt_embeds": pooled, "negative_pooled_prompt_embeds": pooled}
        return arguments

    def step_callback(self, then: StepCallback) -> StepCallback:
        """A ``callback_on_step_end`` that advances the step, then calls ``then``."""

        def on_step_end(
            pipeline: Any, iteration: int, timestep: Any, tensors: dict[str, Any]
        ) -> dict[str, Any]:
            self.iteration = iteration + 1
            return then(pipeline, iteration, timestep, tensors)

        return on_step_end

    @contextmanager
    def installed(self, pipeline: Any) -> Iterator[None]:
        """Put ``ScheduledUNet`` on ``pipeline`` for one call; the real UNet always comes back."""
        unet = pipeline.unet
        # object.__setattr__ skips diffusers' config bookkeeping for a temporary stand-in.
        object.__setattr__(pipeline, "unet", ScheduledUNet(unet, self, pipeline))
        try:
            yield
        finally:
            object.__setattr__(pipeline, "unet", unet)

    def prepare(self, pipeline: Any) -> None:
        """Plan and encode every picture, and count the steps this pass runs (first UNet
        call)."""
        scheduler = pipeline.scheduler
        self.iterations = pipeline.num_timesteps
        self.steps = max(1, math.ceil(self.iterations / scheduler.order))
        plans = self.plans()
        planned_calls = {plan.calls_per_step for plan in plans}
        if planned_calls - {scheduler.order}:
            raise RuntimeError(
                f"prompts planned for {sorted(planned_calls)} model calls per step, "
                f"the scheduler makes {scheduler.order}"
            )
        if self.finishes_schedule:
            # The model calls of the whole sampling (the scheduler's timesteps: one a call,
            # however many its steps make), less those this pass makes.
            self.first_step = max(0, len(scheduler.timesteps) - self.iterations)
        self.images = [ImageConditioning.from_plan(p, self.encoder) for p in plans]
        self._boundaries = sorted(
            {
                until
                for image in self.images
                for scheduled in (image.negative, *image.subprompts)
                for until, _ in scheduled.schedule
            }
        )
        self._row_plans = {}

    @property
    def step_index(self) -> int:
        """The 0-based sampler step of the current UNet call."""
        if not self.iterations:
            return 0
        return min(self.iteration * self.steps // self.iterations, self.steps - 1)

    @property
    def prompt_step(self) -> int:
        """The 0-based step of the plans the current UNet call reads: its call's index (one
        call per step but for second-order samplers, whose plans count calls)."""
        return self.first_step + min(self.iteration, max(self.iterations - 1, 0))

    def row_plan(self, rows: int) -> _RowPlan:
        """The rows to evaluate for a UNet input of ``rows`` rows, and how to combine them;
        planned again only when a schedule changes the step's conditionings."""
        # Steps with as many until_steps below them pick the same entry of every schedule.
        key = (rows, bisect_left(self._boundaries, self.prompt_step))
        plan = self._row_plans.get(key)
        if plan is None:
            plan = self._row_plans[key] = self._planned(rows)
        return plan

    def _chosen(
        self, image: ImageConditioning
    ) -> tuple[Conditioning, list[tuple[float, Conditioning]]]:
        """The picture's negative and weighted positives at this step."""
        step = self.prompt_step
        negative = image.negative.at_step(step)
        positives = [(sub.weight, sub.at_step(step)) for sub in image.subprompts]
        if not self.pad_conds:
            return negative, positives
        longest = max(c.length for c in [negative, *(c for _, c in positives)])
        chunks = longest // self.encoder.empty.length
        return (
            pad_to_chunks(negative, chunks, self.encoder.empty),
            [(w, pad_to_chunks(c, chunks, self.encoder.empty)) for w, c in positives],
        )

    def _planned(self, rows: int) -> _RowPlan:
        """Negatives first, then each picture's first positive, then the extra rows of
        ``AND``: a plain batch evaluates its input rows in order and is its own output."""
        count = len(self.images)
        if rows not in (count, 2 * count):
            raise RuntimeError(f"the UNet got {rows} rows for {count} pictures")
        guided = rows == 2 * count
        chosen = [self._chosen(image) for image in self.images]
        evaluations = _Evaluations([], [], [])
        recipes: list[_Recipe] = [(None, [])] * rows
        unconds: list[int | None] = [None] * count
        if guided:
            for index, (negative, _) in enumerate(chosen):
                row = unconds[index] = evaluations.add(index, negative, negative=True)
                recipes[index] = (None, [(1.0, row)])
        first = count if guided else 0  # the input row of the first picture's positive
        firsts = [
            evaluations.add(first + index, positives[0][1])
            for index, (_, positives) in enumerate(chosen)
        ]
        for index, (image, (negative, positives)) in enumerate(
            zip(self.images, chosen, strict=True)
        ):
            source = first + index
            if image.plain:
                recipes[source] = (None, [(1.0, firsts[index])])
                continue
            uncond = unconds[index]
            if uncond is None:
                uncond = evaluations.add(source, negative, negative=True)
            others = [(weight, evaluations.add(source, cond)) for weight, cond in positives[1:]]
            recipes[source] = (uncond, [(positives[0][0], firsts[index]), *others])
        in_order = list(range(rows))
        sources = evaluations.sources
        picks = [weighted[0][1] if uncond is None else None for uncond, weighted in recipes]
        return _RowPlan(
            evaluations, recipes, None if sources == in_order else sources, picks != in_order
        )


def _stack(conditionings: Sequence[Conditioning]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One hidden-state batch; a cross-attention mask when the lengths differ."""
    longest = max(c.length for c in conditionings)
    if all(c.length == longest for c in conditionings):
        return torch.cat([c.hidden for c in conditionings]), None
    padded = [
        torch.nn.functional.pad(c.hidden, (0, 0, 0, longest - c.length)) for c in conditionings
    ]
    mask = torch.zeros(len(conditionings), longest, device=padded[0].device)
    for row, conditioning in enumerate(conditionings):
        mask[row, : conditioning.length] = 1
    return torch.cat(padded), mask


def _rows(value: Any, sources: list[int] | None, rows: int) -> Any:
    """Per-row tensors follow the evaluated rows (``None``: the input rows in order);
    everything else passes unchanged. Rows are gathered by slicing, not with ``sources`` as
    an index: torch would copy that list from the host to the device, and on CUDA the copy
    waits for every queued kernel."""
    if sources is None or not (
        isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == rows
    ):
        return value
    return torch.cat([value[row : row + 1] for row in sources])


class ScheduledUNet(torch.nn.Module):
    """The pipeline's UNet, with the conditioning chosen by ``PromptGuidance`` at each call."""

    def __init__(self, unet: torch.nn.Module, guidance: PromptGuidance, pipeline: Any) -> None:
        super().__init__()
        self.unet = unet
        # Plain attributes, found without ``__getattr__``: the forward calls the real UNet,
        # and the pipeline reads ``unet.config`` several times per step.
        object.__setattr__(self, "_real", unet)
        object.__setattr__(self, "config", unet.config)
        self._guidance = guidance
        self._pipeline = pipeline
        # The row plan's states (and image tokens), made again only when the plan changes.
        self._states: tuple[_RowPlan, torch.dtype, _States, torch.Tensor | None] | None = None

    def _stacked(self, plan: _RowPlan, dtype: torch.dtype) -> tuple[_States, torch.Tensor | None]:
        """Text states (in ``dtype``), cross-attention mask and pooled states of the plan's
        rows, and their image tokens; made again only when a schedule changes the plan."""
        # The plans stay in the guidance for the whole call, so one is never another's id.
        if self._states is None or self._states[0] is not plan or self._states[1] != dtype:
            conditionings = plan.evaluations.conditionings
            hidden, mask = _stack(conditionings)
            pooled = [c.pooled for c in conditionings if c.pooled is not None]
            image_tokens = self._guidance.image_tokens
            self._states = (
                plan,
                dtype,
                (
                    hidden.to(dtype),
                    None if mask is None else mask.to(hidden.dtype),
                    torch.cat(pooled) if len(pooled) == len(conditionings) else None,
                ),
                None
                if image_tokens is None
                else image_tokens(plan.evaluations.negatives).to(dtype),
            )
        return self._states[2], self._states[3]

    def __getattr__(self, name: str) -> Any:
        # The pipeline reads dtype, device, add_embedding... from its UNet.
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["unet"], name)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        *args: Any,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> Any:
        guidance = self._guidance
        if not guidance.images:
            guidance.prepare(self._pipeline)
        rows = sample.shape[0]
        plan = guidance.row_plan(rows)
        sources = plan.sources
        (hidden, mask, pooled), image_tokens = self._stacked(plan, encoder_hidden_states.dtype)
        extra = kwargs
        if sources is not None:
            extra = {key: _rows(value, sources, rows) for key, value in kwargs.items()}
        if mask is not None:
            extra["encoder_attention_mask"] = mask
        if added_cond_kwargs is not None:
            added = {key: _rows(value, sources, rows) for key, value in added_cond_kwargs.items()}
            if pooled is not None:
                added["text_embeds"] = pooled
            extra["added_cond_kwargs"] = added
        evaluated, timesteps = sample, timestep
        if sources is not None:
            evaluated, timesteps = _rows(sample, sources, rows), _rows(timestep, sources, rows)
        inputs = (evaluated, timesteps, hidden, image_tokens, args, extra)
        evaluated_rows = evaluated.shape[0]
        chunks = _chunks(evaluated_rows)
        if len(chunks) == 1:
            predicted = self._predicted(*inputs)
        else:
            predicted = torch.cat(
                [
                    self._chunk_predicted(
                        (chunk.start, evaluated_rows), _sliced(inputs, chunk, evaluated_rows)
                    )
                    for chunk in chunks
                ]
            )
        output = _combined(predicted, plan.recipes) if plan.combined else predicted
        return (output,) if not return_dict else UNet2DConditionOutput(sample=output)

    def _chunk_predicted(self, chunk: tuple[int, int], inputs: tuple[Any, ...]) -> torch.Tensor:
        """``_predicted`` for one chunk of a split call (``UNET_CHUNK``)."""
        token = UNET_CHUNK.set(chunk)
        try:
            return self._predicted(*inputs)
        finally:
            UNET_CHUNK.reset(token)

    def _predicted(
        self,
        sample: torch.Tensor,
        timestep: Any,
        hidden: torch.Tensor,
        image_tokens: torch.Tensor | None,
        args: tuple[Any, ...],
        extra: dict[str, Any],
    ) -> torch.Tensor:
        """The real UNet's prediction for these evaluated rows."""
        guidance = self._guidance
        if guidance.control is not None:
            # The ControlNet sees the very rows and conditionings the UNet does.
            progress = guidance.step_index / guidance.steps
            extra = extra | guidance.control(sample, timestep, hidden, extra, progress)
        # The IP-Adapter processors read (text states, [image tokens]) per row.
        states: Any = hidden if image_tokens is None else (hidden, [image_tokens])
        predicted: torch.Tensor = self._real(
            sample, timestep, states, *args, return_dict=False, **extra
        )[0]
        return predicted


def _chunks(rows: int) -> list[slice]:
    """``rows`` evaluated rows in as few calls as ``MAX_UNET_ROWS`` allows, near even."""
    calls = -(-rows // MAX_UNET_ROWS)
    return [slice(rows * call // calls, rows * (call + 1) // calls) for call in range(calls)]


def _sliced(value: Any, chunk: slice, rows: int) -> Any:
    """``chunk`` of every per-row tensor in ``value`` (inside tuples, lists and dicts: the
    ControlNet's residuals, SDXL's ``added_cond_kwargs``); everything else passes whole."""
    if isinstance(value, torch.Tensor):
        return value[chunk] if value.ndim > 0 and value.shape[0] == rows else value
    if isinstance(value, tuple | list):
        return type(value)(_sliced(item, chunk, rows) for item in value)
    if isinstance(value, dict):
        return {key: _sliced(item, chunk, rows) for key, item in value.items()}
    return value


def _combined(predicted: torch.Tensor, recipes: list[_Recipe]) -> torch.Tensor:
    """The output rows, each made of the evaluated rows by its recipe."""
    return torch.stack([_combine(predicted, recipe) for recipe in recipes])


def _combine(predicted: torch.Tensor, recipe: _Recipe) -> torch.Tensor:
    uncond, weighted = recipe
    if uncond is None:
        return predicted[weighted[0][1]]
    base = predicted[uncond]
    combined = base
    for weight, row in weighted:
        combined = combined + weight * (predicted[row] - base)
    return combined
