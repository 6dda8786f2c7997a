"""From what the user typed to what the text encoder needs, step by step: ``PromptPlan``.

Order, as in the web UI with the dynamic-prompts extension: inline flags are cut off (a
``styles.csv`` style was applied before, by the bot), wildcards and ``{a|b}`` expanded (seeded
by the image seed), extra-network tags removed (positive prompt only, as in the web UI),
``AND`` splits sub-prompts with their weights, each sub-prompt is scheduled over the steps
(editing and alternation), each scheduled text is weighted by the attention parser and cut
into 75-token chunks. The negative prompt gets the same scheduling but no ``AND`` and no
weight.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.limits import (
    MAX_STEPS,
    MIN_STEPS,
    STEPS_ACCEPTS,
    out_of_range,
)
from inference.prompt_work import PromptWork
from inference.prompts.attention import MAX_ATTENTION_NESTING, attention_depth, weigh_attention
from inference.prompts.composition import split_subprompts
from inference.prompts.errors import NestingError, PromptError
from inference.prompts.extra_networks import (
    SUPPORTED_KINDS,
    ExtraNetwork,
    extract_extra_networks,
    find_embeddings,
)
from inference.prompts.flags import InlineFlags, given_seed, parse_inline_flags, resolve_flags
from inference.prompts.schedule import Rendering, renderings, schedule_prompt
from inference.prompts.stopping import checkpoint
from inference.prompts.tokenizer import (
    CHUNK_LENGTH,
    Chunk,
    ClipTokenizer,
    chunk_tokens,
    default_tokenizer,
)
from inference.prompts.weights import check_weight, excerpt, in_range, weight_refusal
from inference.prompts.wildcards import WildcardLibrary, expand_prompt

DEFAULT_STEPS = 20
# Chunks one prompt (its AND parts together) or the negative prompt may make. Each is encoded
# on its own and is 77 more keys for every cross-attention of every UNet step, so the cost
# grows with the count; long wildcard expansions legitimately reach 100+ (BREAK closes one).
MAX_PROMPT_CHUNKS = 150
# Chunks of all the distinct texts a prompt's edits and alternations ([a:b:N], [a|b]) make
# over the steps: each is encoded and its conditioning held for the whole render.
MAX_SCHEDULED_CHUNKS = 4 * MAX_PROMPT_CHUNKS


@dataclass(frozen=True)
class ScheduledText:
    """The text used up to and including ``until_step``, weighted and chunked."""

    until_step: int
    text: str
    pieces: tuple[tuple[str, float], ...]
    chunks: tuple[Chunk, ...]

    @property
    def token_count(self) -> int:
        return sum(len(chunk.token_ids) for chunk in self.chunks)


@dataclass(frozen=True)
class SubPromptPlan:
    weight: float
    schedule: tuple[ScheduledText, ...]
    text: str  # before scheduling

    def at_step(self, step: int) -> ScheduledText:
        """The scheduled text in force at ``step`` (1-based)."""
        return next(
            (entry for entry in self.schedule if step <= entry.until_step), self.schedule[-1]
        )


@dataclass(frozen=True)
class PromptPlan:
    """Everything the engine needs from the prompt text for one image."""

    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    subprompts: tuple[SubPromptPlan, ...]
    negative: SubPromptPlan
    extra_networks: tuple[ExtraNetwork, ...]
    embeddings_used: tuple[str, ...]
    flags: InlineFlags
    warnings: tuple[str, ...] = field(default=())
    # A hires pass's plan: the steps of the first pass it goes on from (``schedule_prompt``).
    first_pass_steps: int | None = None
    # The sampler's model calls per step: the schedules' steps are its calls (``build_plan``).
    calls_per_step: int = 1
    # Whether the engine applies the prompt's LoRA tags (``build_plan``).
    applies_loras: bool = True

    def loras(self, available: Collection[str] | None = None) -> list[ExtraNetwork]:
        """LoRA tags to apply: kind ``lora`` and, when ``available`` is given, a known name;
        none where the engine applies none of the prompt's (``applies_loras``)."""
        return _applied(self.extra_networks, available) if self.applies_loras else []

    def work(self) -> PromptWork:
        """Its picture's rows and key length in each model call: a row an ``AND`` part (and
        one the negative's), every row as long as its longest text's chunks."""
        texts = (*self.subprompts, self.negative)
        chunks = max(len(entry.chunks) for sub in texts for entry in sub.schedule)
        return PromptWork(parts=len(self.subprompts), chunks=max(chunks, 1))

    def renderings(self) -> tuple[Rendering, ...]:
        """Every text each sub-prompt and the negative prompt can condition the model on,
        whatever number of steps a pass runs (what moderation must read)."""
        return tuple(renderings(sub.text) for sub in (*self.subprompts, self.negative))

    def to_explain(self) -> dict[str, Any]:
        """The ``easel explain`` JSON structure (docs: interfaces.md)."""
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "subprompts": [
                {
                    "weight": sub.weight,
                    "schedule": [
                        {
                            "until_step": entry.until_step,
                            "text": entry.text,
                            "chunks": [
                                [text, -1 if (text, weight) == ("BREAK", -1.0) else weight]
                                for text, weight in entry.pieces
                            ],
                            "tokens": entry.token_count,
                        }
                        for entry in sub.schedule
                    ],
                }
                for sub in self.subprompts
            ],
            "extra_networks": [
                {
                    "kind": n.kind,
                    "name": n.name,
                    "weight": n.weight if math.isfinite(n.weight) else None,
                }
                for n in self.extra_networks
            ],
            "warnings": [
                *self.warnings,
                *(
                    _unwritable_weight(n)
                    for n in self.extra_networks
                    if not math.isfinite(n.weight)
                ),
            ],
        }


def _unwritable_weight(network: ExtraNetwork) -> str:
    """The explain warning for a tag whose weight strict JSON has no number for, written as
    null: only a tag the engine ignores keeps one (``<a:x:nan>``; an applied LoRA's is
    refused), and it was typed (an unwritten weight is the finite 1)."""
    return (
        f"<{network.kind}:{network.name}> weight {network.typed[0]!r} is no finite number: "
        "written as null"
    )


class _TooDeep(Exception):
    def __init__(self, depth: int) -> None:
        self.depth = depth


class _WeighedPast(Exception):
    """A piece its brackets weigh out of ``check_weight``'s range: ``(a:500)``, and multiplied
    ``((a:100):100)`` 10,000, a hundred ``(`` 13,781. ``typed``: the weight as written where
    one bracket alone gives it (``weigh_attention``)."""

    def __init__(self, piece: str, weight: float, typed: str | None) -> None:
        self.piece = piece
        self.weight = weight
        self.typed = typed

    @property
    def given(self) -> str:
        """The weight as the refusal tells it: as typed, else as its brackets multiply."""
        if self.typed is not None:
            return self.typed
        return f"{self.weight!r} (its brackets multiplied)"


class _ScheduledChunks:
    """The chunks of one prompt's distinct texts (its AND parts together), counted as they are
    tokenized: a prompt over ``MAX_SCHEDULED_CHUNKS`` is refused as soon as it passes them,
    before the rest of its steps (a hires pass's, times its sampler's calls) are weighted and
    chunked."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._seen: set[tuple[Chunk, ...]] = set()
        self._count = 0

    def add(self, chunks: tuple[Chunk, ...]) -> None:
        # Each distinct text is encoded once (the encoder keeps each encoding), whatever its
        # steps.
        if chunks in self._seen:
            return
        self._seen.add(chunks)
        self._count += len(chunks)
        if self._count > MAX_SCHEDULED_CHUNKS:
            raise PromptError(
                f"{self._name} makes at least {self._count} chunks of {CHUNK_LENGTH} tokens "
                "over its steps (each text an edit [a:b:N] or alternation [a|b] makes is "
                f"encoded on its own); at most {MAX_SCHEDULED_CHUNKS} are allowed: use fewer "
                "edits or a shorter text"
            )


def _plan_subprompt(
    text: str,
    weight: float,
    timeline: tuple[int, int | None],
    tokenizer: ClipTokenizer,
    name: str,
    scheduled: _ScheduledChunks,
) -> SubPromptPlan:
    """``timeline``: the steps to plan over, and a hires pass's first pass's steps.
    ``name`` is the prompt's in messages ("the negative prompt"); ``scheduled`` counts the
    chunks of its distinct texts over all its parts."""
    steps, first_pass_steps = timeline
    schedule = []
    for segment in schedule_prompt(text, steps, first_pass_steps=first_pass_steps):
        checkpoint()  # each text is milliseconds of work, 150 steps x 8 pictures of them
        try:
            pieces, chunks = _weighted_chunks(segment.text, tokenizer)
        except _TooDeep as error:
            raise NestingError(
                f"{name} nests ( ) and [ ] brackets {error.depth} deep (an unclosed one counts "
                "to the end)",
                MAX_ATTENTION_NESTING,
                fix=r"close them, or write \( for a literal bracket",
            ) from None
        except _WeighedPast as error:
            raise weight_refusal(
                f"{name}'s weight of {excerpt(error.piece)}", error.given
            ) from None
        scheduled.add(chunks)
        schedule.append(ScheduledText(segment.until_step, segment.text, pieces, chunks))
    return SubPromptPlan(weight, tuple(schedule), text)


# 64: the texts of one request's pictures and steps; a 16,000-character text's entry is
# ~0.5 MiB.
@functools.lru_cache(maxsize=64)
def _weighted_chunks(
    text: str, tokenizer: ClipTokenizer
) -> tuple[tuple[tuple[str, float], ...], tuple[Chunk, ...]]:
    """One scheduled text weighted and chunked, once per text: alternation shows the same
    texts step after step, and each picture of a request plans the same ones again."""
    depth = attention_depth(text)
    if depth > MAX_ATTENTION_NESTING:
        raise _TooDeep(depth)
    weighed = weigh_attention(text)
    past = next((piece for piece in weighed if not in_range(piece[1])), None)
    if past is not None:
        raise _WeighedPast(*past)
    pieces = [(piece, weight) for piece, weight, _ in weighed]
    return tuple(pieces), tuple(chunk_tokens(pieces, tokenizer))


def _applied(
    networks: Sequence[ExtraNetwork], available: Collection[str] | None
) -> list[ExtraNetwork]:
    """The networks the engine applies: LoRAs, and of those, where ``available`` (the LoRAs
    installed) is known, the ones installed; the others are dropped with a warning."""
    return [
        network
        for network in networks
        if network.kind in SUPPORTED_KINDS and (available is None or network.name in available)
    ]


def _check_extra_networks(
    networks: Sequence[ExtraNetwork], available: Collection[str] | None, name: str
) -> None:
    """Refuse an out-of-range weight of a network the engine applies, told as typed, and a
    LoRA tagged more than once whose weights add up out of range (the engine applies their sum,
    ``inference.networks.merged_loras``). An ignored tag's weight does nothing: a Discord
    animated emoji ``<a:name:id>`` keeps its warning, as does a LoRA not installed where that
    is known (admission, which cannot know a broker worker's folder, refuses it: the engine
    there may apply it). ``name``: the prompt's, in messages."""
    tags: dict[str, list[ExtraNetwork]] = {}
    for network in _applied(networks, available):
        tags.setdefault(network.name, []).append(network)
        label = f"<{network.kind}:{network.name}> in {name}"
        typed_weight, typed_unet = network.typed
        # An unwritten weight is the default 1, or (the UNet's) the written one, checked first.
        for what, weight, typed in (
            ("the weight", network.weight, typed_weight),
            ("the UNet weight", network.unet_weight, typed_unet),
        ):
            if typed is not None:
                check_weight(weight, f"{what} of {label}", typed)
    for lora, same in tags.items():
        if len(same) == 1:
            continue
        # Added in the tags' order, as ``merged_loras`` adds them: the very float it applies.
        for what, total in (
            ("the weight", sum(tag.weight for tag in same)),
            ("the UNet weight", sum(tag.unet_weight for tag in same)),
        ):
            check_weight(
                total,
                f"{what} of <lora:{lora}> in {name}",
                f"{total!r} (it is tagged {len(same)} times: the engine adds up their weights)",
            )


def _check_chunk_count(parts: Sequence[SubPromptPlan], name: str) -> None:
    """Refuse a prompt whose AND parts make more than ``MAX_PROMPT_CHUNKS`` chunks at their
    longest (after wildcards: what the text encoder and the UNet would take); the cap over all
    their distinct texts is ``_ScheduledChunks``'."""
    count = sum(max(len(entry.chunks) for entry in part.schedule) for part in parts)
    if count > MAX_PROMPT_CHUNKS:
        raise PromptError(
            f"{name} makes {count} chunks of {CHUNK_LENGTH} tokens after wildcards (each BREAK "
            f"starts a new one); at most {MAX_PROMPT_CHUNKS} are allowed: shorten it or use "
            "fewer BREAKs"
        )


def _choose_seed(explicit: int | None, typed: int | None) -> int:
    seed = given_seed(explicit if explicit is not None else typed)
    if isinstance(seed, str):
        raise PromptError(seed)
    return seed


def build_plan(
    prompt: str,
    negative: str = "",
    *,
    seed: int | None = None,
    steps: int | None = None,
    wildcards: WildcardLibrary | Path | str | None = None,
    loras: Collection[str] | None = None,
    embeddings: Collection[str] = (),
    name: str = "the prompt",
    first_pass_steps: int | None = None,
    calls_per_step: int = 1,
    applies_loras: bool = True,
) -> PromptPlan:
    """Plan one image. ``seed``/``steps`` given here win over ``--seed``/``--steps`` flags.
    ``name`` is the prompt's in messages ("the fix-faces prompt"). ``first_pass_steps``:
    ``steps`` are a hires pass's, after a first pass of that many (``schedule_prompt``).
    ``calls_per_step``: a second-order sampler's 2, whose schedules the web UI plans over
    (and reads at) each model call, so that ``[a:b:N]`` counts N calls. ``applies_loras``:
    whether the engine applies the prompt's LoRA tags; only then are their weights checked
    (a fix-faces prompt's, or a /fix-faces or upscale pass's, are removed and do nothing).

    ``seed`` is this image's seed (``None`` or -1: the flag's, else random). ``loras`` are
    the LoRA names on disk (``None``: not checked); ``embeddings`` the textual-inversion
    names. Raises ``PromptError`` for bad flags, unknown wildcards, steps out of range or a
    weight out of ``check_weight``'s; any other text is accepted.
    """
    typed_prompt, typed_flags = parse_inline_flags(prompt)
    flags, warnings = resolve_flags(
        typed_flags,
        InlineFlags(seed=None if seed == -1 else seed, steps=steps),
    )
    steps = flags.steps if flags.steps is not None else DEFAULT_STEPS
    # The range every request's steps are checked against (``inference.validation``).
    if not MIN_STEPS <= steps <= MAX_STEPS:
        raise PromptError(out_of_range("steps", STEPS_ACCEPTS, steps))
    image_seed = _choose_seed(seed if seed != -1 else None, typed_flags.seed)
    if flags.no:
        negative = ", ".join(part for part in (negative.strip(), flags.no) if part)

    library = (
        wildcards if isinstance(wildcards, WildcardLibrary | None) else WildcardLibrary(wildcards)
    )
    expanded = expand_prompt(typed_prompt, image_seed, library)[0]
    expanded_negative = expand_prompt(negative, image_seed, library)[0]
    for warning in (*expanded.warnings, *expanded_negative.warnings):
        if warning not in warnings:
            warnings.append(warning)

    text, networks, network_warnings = extract_extra_networks(expanded.text, loras)
    if applies_loras:
        _check_extra_networks(networks, loras, name)
    warnings += network_warnings
    if extract_extra_networks(expanded_negative.text)[1]:
        warnings.append("extra-network tags in the negative prompt are read as plain text")

    tokenizer = default_tokenizer()
    timeline = (
        steps * calls_per_step,
        None if first_pass_steps is None else first_pass_steps * calls_per_step,
    )
    scheduled = _ScheduledChunks(name)
    subprompts = tuple(
        _plan_subprompt(sub.text, sub.weight, timeline, tokenizer, name, scheduled)
        for sub in split_subprompts(text, name)
    )
    _check_chunk_count(subprompts, name)
    negative_name = "the negative prompt"
    negative_scheduled = _ScheduledChunks(negative_name)
    negative_plan = _plan_subprompt(
        expanded_negative.text, 1.0, timeline, tokenizer, negative_name, negative_scheduled
    )
    _check_chunk_count((negative_plan,), negative_name)
    return PromptPlan(
        prompt=expanded.text,
        negative_prompt=expanded_negative.text,
        seed=image_seed,
        steps=steps,
        subprompts=subprompts,
        negative=negative_plan,
        extra_networks=tuple(networks),
        embeddings_used=tuple(find_embeddings(f"{text}\n{expanded_negative.text}", embeddings)),
        flags=flags,
        warnings=tuple(warnings),
        first_pass_steps=first_pass_steps,
        calls_per_step=calls_per_step,
        applies_loras=applies_loras,
    )


def explain(
    prompt: str,
    negative: str = "",
    seed: int | None = None,
    steps: int | None = None,
    wildcards_dir: Path | str | None = None,
    loras: Collection[str] | None = None,
    embeddings: Collection[str] = (),
) -> dict[str, Any]:
    """How the prompt is understood, as the ``easel explain`` JSON (no torch needed)."""
    plan = build_plan(
        prompt,
        negative,
        seed=seed,
        steps=steps,
        wildcards=wildcards_dir,
        loras=loras,
        embeddings=embeddings,
    )
    return plan.to_explain()
