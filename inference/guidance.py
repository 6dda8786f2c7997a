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

Steps: the step index is advanced from ``callback_on_step_end``; samplers that call the UNet
twice per step (Heun, DPM2) run ``2N - 1`` loop iterations, mapped back to the N sampler
steps. As in the web UI, sampling step ``k`` (0-based) uses the first scheduled text whose
``until_step`` (1-based) is at least ``k``: ``[a:b:2]`` over 4 steps shows ``a`` for three
steps. Schedules are planned over the steps a pass actually runs, so in img2img (which runs
``int(steps * strength)`` steps) ``[a:b:0.5]`` switches half-way through what is run.

Pictures of one call may have conditionings of different lengths (a 150-token prompt next
to a short one, or a long negative). Each conditioning is attended at its own length, as the
web UI does by default: shorter ones are zero-padded for the shared UNet call and the padding
is masked out of cross-attention, so a picture renders the same alone or in a batch. With
``pad_conds`` a picture's conditionings are instead padded with empty-chunk encodings to its
longest one and attended in full (the web UI's "pad prompt/negative prompt" option).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

from inference.conditioning import Conditioning, PromptEncoder, pad_to_chunks
from inference.prompts import PromptPlan, SubPromptPlan

StepCallback = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]
# Extra UNet inputs for the evaluated rows (ControlNet residuals): given the rows' latents,
# timestep, text states, the UNet's other inputs and how far the pass is (0 to 1).
ControlHook = Callable[[torch.Tensor, Any, torch.Tensor, dict[str, Any], float], dict[str, Any]]
# An image prompt's tokens for the evaluated rows, given which of them are negative rows.
ImageTokens = Callable[[Sequence[bool]], torch.Tensor]


@dataclass(frozen=True)
class ScheduledConditioning:
    """One sub-prompt (or the negative prompt): its weight and encodings over the steps."""

    weight: float
    schedule: tuple[tuple[int, Conditioning], ...]  # (until_step, encoding)

    def at_step(self, step_index: int) -> Conditioning:
        """The encoding for 0-based sampling step ``step_index`` (web UI lookup)."""
        return next(
            (encoding for until, encoding in self.schedule if step_index <= until),
            self.schedule[-1][1],
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


class PromptGuidance:
    """Per-step conditioning for one pipeline call of ``len(plans(...))`` pictures.

    ``plans(steps)`` plans every picture's prompt over ``steps`` sampling steps; it is
    called once the pipeline knows how many steps it runs.
    """

    def __init__(
        self,
        encoder: PromptEncoder,
        plans: Callable[[int], Sequence[PromptPlan]],
        pad_conds: bool = False,
        control: ControlHook | None = None,
        image_tokens: ImageTokens | None = None,
    ) -> None:
        self.encoder = encoder
        self.plans = plans
        self.pad_conds = pad_conds
        self.control = control
        self.image_tokens = image_tokens
        self.images: list[ImageConditioning] = []
        self.steps = 0
        self.iteration = 0  # UNet loop iterations finished
        self.iterations = 0

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
        """Plan and encode every picture over the steps this pass runs (first UNet call)."""
        self.iterations = pipeline.num_timesteps
        self.steps = max(1, math.ceil(self.iterations / pipeline.scheduler.order))
        self.images = [ImageConditioning.from_plan(p, self.encoder) for p in self.plans(self.steps)]

    @property
    def step_index(self) -> int:
        """The 0-based sampler step of the current UNet call."""
        if not self.iterations:
            return 0
        return min(self.iteration * self.steps // self.iterations, self.steps - 1)

    def recipes(self, rows: int) -> tuple[_Evaluations, list[_Recipe]]:
        """The rows to evaluate for a UNet input of ``rows`` rows, and how to combine them."""
        count = len(self.images)
        if rows not in (count, 2 * count):
            raise RuntimeError(f"the UNet got {rows} rows for {count} pictures")
        guided = rows == 2 * count
        step = self.step_index
        evaluations = _Evaluations([], [], [])
        recipes: list[_Recipe] = [(None, [])] * rows
        for index, image in enumerate(self.images):
            negative = image.negative.at_step(step)
            positives = [(sub.weight, sub.at_step(step)) for sub in image.subprompts]
            if self.pad_conds:
                longest = max(c.length for c in [negative, *(c for _, c in positives)])
                chunks = longest // self.encoder.empty.length
                negative = pad_to_chunks(negative, chunks, self.encoder.empty)
                positives = [
                    (w, pad_to_chunks(c, chunks, self.encoder.empty)) for w, c in positives
                ]
            source = count + index if guided else index
            uncond: int | None = None
            if guided:
                uncond = evaluations.add(index, negative, negative=True)
                recipes[index] = (None, [(1.0, uncond)])
            if image.plain:
                recipes[source] = (None, [(1.0, evaluations.add(source, positives[0][1]))])
                continue
            if uncond is None:
                uncond = evaluations.add(source, negative, negative=True)
            recipes[source] = (
                uncond,
                [(weight, evaluations.add(source, cond)) for weight, cond in positives],
            )
        return evaluations, recipes


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


def _rows(value: Any, sources: list[int], rows: int) -> Any:
    """Per-row tensors follow the evaluated rows; everything else passes unchanged.
    Rows are gathered by slicing, not with ``sources`` as an index: torch would copy that
    list from the host to the device, and on CUDA the copy waits for every queued kernel."""
    if not (isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == rows):
        return value
    if sources == list(range(rows)):
        return value
    return torch.cat([value[row : row + 1] for row in sources])


class ScheduledUNet(torch.nn.Module):
    """The pipeline's UNet, with the conditioning chosen by ``PromptGuidance`` at each call."""

    def __init__(self, unet: torch.nn.Module, guidance: PromptGuidance, pipeline: Any) -> None:
        super().__init__()
        self.unet = unet
        self._guidance = guidance
        self._pipeline = pipeline
        # The evaluated conditionings' states, stacked once while they stay the same.
        self._states: tuple[tuple[tuple[Conditioning, ...], torch.dtype], _States] | None = None

    def _stacked(self, conditionings: Sequence[Conditioning], dtype: torch.dtype) -> _States:
        """Text states (in ``dtype``), cross-attention mask and pooled states of the rows;
        made again only when a schedule changes the conditionings, not at every call."""
        # The cache keeps the conditionings it was made from: their ids stay theirs (a padded
        # copy made for one call and freed could otherwise lend its id to the next one's).
        if (
            self._states is None
            or self._states[0][1] != dtype
            or len(self._states[0][0]) != len(conditionings)
            or any(a is not b for a, b in zip(self._states[0][0], conditionings, strict=True))
        ):
            key = (tuple(conditionings), dtype)
            hidden, mask = _stack(conditionings)
            pooled = [c.pooled for c in conditionings if c.pooled is not None]
            self._states = (
                key,
                (
                    hidden.to(dtype),
                    None if mask is None else mask.to(hidden.dtype),
                    torch.cat(pooled) if len(pooled) == len(conditionings) else None,
                ),
            )
        return self._states[1]

    def __getattr__(self, name: str) -> Any:
        # The pipeline reads config, dtype, device, add_embedding... from its UNet.
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
        evaluations, recipes = guidance.recipes(rows)
        sources = evaluations.sources
        hidden, mask, pooled = self._stacked(evaluations.conditionings, encoder_hidden_states.dtype)
        extra = {key: _rows(value, sources, rows) for key, value in kwargs.items()}
        if mask is not None:
            extra["encoder_attention_mask"] = mask
        if added_cond_kwargs is not None:
            added = {key: _rows(value, sources, rows) for key, value in added_cond_kwargs.items()}
            if pooled is not None:
                added["text_embeds"] = pooled
            extra["added_cond_kwargs"] = added
        evaluated = _rows(sample, sources, rows)
        if guidance.control is not None:
            # The ControlNet sees the very rows and conditionings the UNet does.
            progress = guidance.step_index / guidance.steps
            timesteps = _rows(timestep, sources, rows)
            extra |= guidance.control(evaluated, timesteps, hidden, extra, progress)
        states: Any = hidden
        if guidance.image_tokens is not None:
            # The IP-Adapter processors read (text states, [image tokens]) per row.
            states = (hidden, [guidance.image_tokens(evaluations.negatives).to(hidden.dtype)])
        predicted = self.unet(
            evaluated,
            _rows(timestep, sources, rows),
            states,
            *args,
            return_dict=False,
            **extra,
        )[0]
        output = _combined(predicted, recipes)
        return (output,) if not return_dict else UNet2DConditionOutput(sample=output)


def _combined(predicted: torch.Tensor, recipes: list[_Recipe]) -> torch.Tensor:
    """The output rows; the evaluated rows themselves when each output is its own row."""
    picks = [weighted[0][1] if uncond is None else None for uncond, weighted in recipes]
    if picks == list(range(predicted.shape[0])):
        return predicted
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
