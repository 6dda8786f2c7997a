"""Midjourney-style flags typed at the end of a prompt: ``a castle --ar 16:9 --seed 5``.

Known flags: ``--ar W:H`` (each side 1..21; ``--aspect`` is the same), ``--seed N``
(0..2**63-1, or -1 for random), ``--no a, b`` (appended to the negative prompt with ", "),
``--steps N`` (1..150), ``--cfg X`` (0..30), ``--sampler NAME`` (one word or "quoted"),
``--model NAME``, ``--count N`` (1..4) and ``--fast`` (no value: fast mode, never
Midjourney's queue class). Midjourney's ``--chaos N`` (0..100), ``--tile``, ``--repeat N``
(1..4), ``--stop N`` (10..100) and ``--relax`` too, and ``--preset NAME`` (a saved preset).
``--sref LINK`` names a picture (its URL on Discord, or a message link or id) for an IP-Adapter
image prompt and ``--sref-strength W`` (0..2) its strength; the bot reads it with the member's
rights.
``--faces`` re-renders each face (ADetailer-style) and ``--restore-faces`` restores them.
Flags start at the first `` --word``; everything after that must be flags.

Precedence: a slash-command option the user set explicitly beats the inline flag (both were
typed on purpose, and the option is the more specific place); the conflict is reported in
the warnings so the user sees which value was used. ``--no`` never conflicts: it adds to the
negative prompt.
"""

from __future__ import annotations

import dataclasses
import math
import re
import secrets
from dataclasses import dataclass

from inference.limits import (
    CFG_ACCEPTS,
    COUNT_ACCEPTS,
    MAX_CFG,
    MAX_COUNT,
    MAX_SEED,
    MAX_STEPS,
    MIN_CFG,
    MIN_COUNT,
    MIN_STEPS,
    RANDOM_SEEDS,
    SEED_ACCEPTS,
    STEPS_ACCEPTS,
    seed_refusal,
)
from inference.prompts.errors import InlineFlagError
from inference.quoting import cut, echoed


def picture_seed(seed: int, index: int) -> int:
    """Picture ``index`` of a batch from ``seed``: ``seed + index``, as the web UI counts
    (4294967295 then 4294967296), wrapped past ``MAX_SEED`` to 0 as ``--repeat`` does, so
    every picture's seed is one a member can give again."""
    return (seed + index) % (MAX_SEED + 1)


def random_seed() -> int:
    """A fresh seed for -1 or none given: below ``RANDOM_SEEDS`` (2**32), as the web UI draws
    its own, so it stays short enough to type back."""
    return secrets.randbelow(RANDOM_SEEDS)


def given_seed(seed: int | None, name: str = "seed") -> int | str:
    """The seed ``seed`` a member gives (``name`` in its refusal), rendered and recorded as
    given: -1 or nothing a fresh random one; one past ``MAX_SEED`` its refusal, for each
    layer to raise as its own error."""
    if seed is None or seed == -1:
        return random_seed()
    if (refusal := seed_refusal(name, seed)) is not None:
        return refusal
    return seed


def picture_seeds(
    seed: int, variation_seed: int | None, variation_strength: float, index: int
) -> tuple[int, int | None]:
    """Picture ``index`` of a batch's (seed, variation seed), as the web UI's ``all_seeds``
    and ``all_subseeds``: a varied batch (a variation seed at a strength above 0) keeps the
    main seed for every picture and steps only the variation seed, so its pictures are
    variations of one picture; otherwise both step (``picture_seed``). Every place that
    derives a picture's seeds (the engine, wildcard draws, chaos, admission's plan, re-making
    one picture of a grid) reads them here, so a picture's own settings give it again."""
    varied = variation_seed is not None and variation_strength > 0
    return (
        seed if varied else picture_seed(seed, index),
        None if variation_seed is None else picture_seed(variation_seed, index),
    )


_WORD = re.compile(r'"([^"]*)"|(\S+)')
_FLAGS_START = re.compile(r"(?:^|\s)--[A-Za-z]")
_ALIASES = {"aspect": "ar"}
_USAGE = {
    "ar": "--ar W:H with whole numbers between 1 and 21 on each side, e.g. --ar 16:9",
    "seed": f"--seed N with N {SEED_ACCEPTS}",
    "no": "--no followed by what to avoid, e.g. --no cars, people",
    "steps": f"--steps N with N {STEPS_ACCEPTS}",
    "cfg": f"--cfg X with X {CFG_ACCEPTS}",
    "sampler": '--sampler NAME, quoted when it has spaces: --sampler "DPM++ 2M Karras"',
    "model": "--model NAME",
    "count": f"--count N with N {COUNT_ACCEPTS}",
    "fast": "--fast alone, without a value",
    "chaos": "--chaos N with N between 0 and 100 (how different the grid's pictures are)",
    "tile": "--tile alone, without a value",
    "repeat": "--repeat N with N between 1 and 4 (that many jobs, each charged)",
    "stop": "--stop N with N between 10 and 100 (the percentage of the steps to run)",
    "relax": "--relax alone, without a value",
    "preset": "--preset NAME",
    "sref": "--sref followed by a picture's URL on Discord or a message link (or id)",
    "sref-strength": (
        "--sref-strength W with W between 0 and 2 (how strongly --sref's picture guides)"
    ),
    "faces": "--faces alone, without a value (re-render each face)",
    "restore-faces": "--restore-faces alone, without a value (restore each face)",
}
# Flags that are switches: present means on, and they take no value.
_SWITCHES = ("fast", "tile", "relax", "faces", "restore-faces")
KNOWN_FLAGS = tuple(f"--{name}" for name in _USAGE)


@dataclass(frozen=True)
class InlineFlags:
    """Settings typed in the prompt; ``None`` where the flag is absent."""

    aspect_ratio: tuple[int, int] | None = None
    seed: int | None = None
    no: str | None = None
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    model: str | None = None
    count: int | None = None
    fast: bool | None = None
    chaos: int | None = None
    tile: bool | None = None
    repeat: int | None = None
    stop: int | None = None
    relax: bool | None = None
    preset: str | None = None
    sref: str | None = None
    sref_strength: float | None = None
    faces: bool | None = None
    restore_faces: bool | None = None


_FIELD_OF = {
    "ar": "aspect_ratio",
    "sref-strength": "sref_strength",
    "restore-faces": "restore_faces",
}


def _bad(flag: str, value: str) -> InlineFlagError:
    return InlineFlagError(f"bad value {echoed(value)} for --{flag}: expected {_USAGE[flag]}")


def _integer(flag: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise _bad(flag, value) from None
    if not low <= number <= high:
        raise _bad(flag, value)
    return number


def parse_aspect_ratio(value: str, flag: str = "ar") -> tuple[int, int]:
    """``"16:9"`` -> ``(16, 9)``; each side must be a whole number in 1..21."""
    width, sep, height = value.partition(":")
    if not (sep and width.strip().isdigit() and height.strip().isdigit()):
        raise _bad(flag, value)
    try:
        sides = int(width), int(height)
    except ValueError:  # a digit int() does not read ("²"), or past its 4,300 digits
        raise _bad(flag, value) from None
    if not all(1 <= side <= 21 for side in sides):
        raise _bad(flag, value)
    return sides


def _convert(flag: str, words: list[str]) -> object:
    if flag == "no":
        text = " ".join(words).strip()
        if not text:
            raise _bad(flag, text)
        return text
    if flag in _SWITCHES:
        if words:
            raise _bad(flag, " ".join(words))
        return True
    if len(words) != 1:
        shown = " ".join(words)
        raise InlineFlagError(
            f"--{flag} takes one value, got {echoed(shown)}: expected {_USAGE[flag]}"
        )
    value = words[0]
    if flag == "ar":
        return parse_aspect_ratio(value)
    if flag == "seed":
        return -1 if value == "-1" else _integer(flag, value, 0, MAX_SEED)
    if flag == "steps":
        return _integer(flag, value, MIN_STEPS, MAX_STEPS)
    if flag == "count":
        return _integer(flag, value, MIN_COUNT, MAX_COUNT)
    if flag == "chaos":
        return _integer(flag, value, 0, 100)
    if flag == "repeat":
        return _integer(flag, value, 1, 4)
    if flag == "stop":
        return _integer(flag, value, 10, 100)
    if flag in ("cfg", "sref-strength"):
        try:
            number = float(value)
        except ValueError:
            raise _bad(flag, value) from None
        low, high = (MIN_CFG, MAX_CFG) if flag == "cfg" else (0, 2)
        if not (math.isfinite(number) and low <= number <= high):
            raise _bad(flag, value)
        return number
    return value  # sampler, model, preset, sref: checked where they are looked up


def _split_words(text: str) -> list[str]:
    """Whitespace-separated words; "double quotes" group words (apostrophes are text)."""
    return [
        match.group(1) if match.group(1) is not None else match.group(2)
        for match in _WORD.finditer(text)
    ]


def parse_inline_flags(prompt: str) -> tuple[str, InlineFlags]:
    """Cut the flags off the end of ``prompt``: ``(prompt without flags, flags)``."""
    start = _FLAGS_START.search(prompt)
    if start is None:
        return prompt, InlineFlags()
    values: dict[str, object] = {}
    flag: str | None = None
    words: list[str] = []

    def finish() -> None:
        if flag is not None:
            values[_FIELD_OF.get(flag, flag)] = _convert(flag, words)

    for word in _split_words(prompt[start.start() :]):
        if word.startswith("--") and word[2:3].isalpha():
            finish()
            name = word[2:].lower()
            flag = _ALIASES.get(name, name)
            if flag not in _USAGE:
                raise InlineFlagError(
                    f"unknown flag {cut(word)}: known flags are {', '.join(KNOWN_FLAGS)}"
                )
            if _FIELD_OF.get(flag, flag) in values:
                raise InlineFlagError(f"--{flag} is given twice; keep one")
            words = []
        else:
            words.append(word)
    finish()
    return prompt[: start.start()].rstrip(), InlineFlags(**values)  # type: ignore[arg-type]


def insert_before_flags(prompt: str, text: str) -> str:
    """``prompt`` with ``text`` added to its words, before any flags typed at its end (flags
    must stay last: ``a cat --ar 16:9`` and a LoRA's tag give ``a cat <lora:x:0.8> --ar 16:9``)."""
    start = _FLAGS_START.search(prompt)
    if start is None:
        return f"{prompt} {text}"
    return f"{prompt[: start.start()].rstrip()} {text}{prompt[start.start() :]}"


def resolve_flags(inline: InlineFlags, explicit: InlineFlags) -> tuple[InlineFlags, list[str]]:
    """Merge flags typed in the prompt with options set explicitly; explicit ones win."""
    merged = {}
    warnings = []
    for field in dataclasses.fields(InlineFlags):
        typed, chosen = getattr(inline, field.name), getattr(explicit, field.name)
        if chosen is not None and typed is not None and chosen != typed:
            warnings.append(
                f"the {field.name} option ({chosen}) overrides the prompt's flag ({typed})"
            )
        merged[field.name] = chosen if chosen is not None else typed
    return InlineFlags(**merged), warnings


def resolve_size(
    aspect: str | tuple[int, int], base_pixels: int = 512 * 512, multiple_of: int = 64
) -> tuple[int, int]:
    """Width and height for an aspect ratio with about ``base_pixels`` pixels.

    Each side is rounded to the nearest multiple of ``multiple_of`` (at least 8) and is at
    least one multiple. ``aspect`` is ``"16:9"`` or ``(16, 9)``.
    """
    if multiple_of < 8 or multiple_of % 8:
        raise ValueError(f"multiple_of must be a multiple of 8 and at least 8, got {multiple_of}")
    if base_pixels < multiple_of * multiple_of:
        raise ValueError(f"base_pixels must be at least {multiple_of**2}, got {base_pixels}")
    ratio_w, ratio_h = parse_aspect_ratio(aspect) if isinstance(aspect, str) else aspect
    width = math.sqrt(base_pixels * ratio_w / ratio_h)
    height = math.sqrt(base_pixels * ratio_h / ratio_w)

    def snap(side: float) -> int:
        return max(multiple_of, round(side / multiple_of) * multiple_of)

    return snap(width), snap(height)
