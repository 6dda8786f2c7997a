"""``--chaos N`` (0..100): how different the pictures of one request are.

Each picture's seed already gives it its own noise; chaos also gives it its own reading of
the prompt. Every plain comma-separated part of the prompt gets a weight drawn from the
picture's seed, ``1 ± 0.5 × N/100``: at 100 a part may count half or one and a half times,
at 0 nothing changes. Parts that already use the prompt language (weights, schedules,
LoRA tags, wildcards, ``AND``/``BREAK``, escapes) are left as typed. The reweighted text is
the picture's prompt, so its infotext renders the same picture again.
"""

from __future__ import annotations

import random
import re

MAX_CHAOS = 100
# At chaos 100 a part's weight lies in [1 - SPREAD, 1 + SPREAD].
SPREAD = 0.5
_SYNTAX = re.compile(r"[()\[\]<>{}:|\\]|__|\bAND\b|\bBREAK\b")


def _top_level_parts(prompt: str) -> list[str]:
    """``prompt`` split on the commas outside brackets (the commas stay with the parts)."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(prompt):
        if char in "([{<":
            depth += 1
        elif char in ")]}>":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            parts.append(prompt[start : index + 1])
            start = index + 1
    parts.append(prompt[start:])
    return parts


def _reweighted(part: str, weight: float) -> str:
    comma = "," if part.endswith(",") else ""
    text = part.removesuffix(",") if comma else part
    core = text.strip()
    if not core or _SYNTAX.search(core) or weight == 1.0:
        return part
    lead = text[: len(text) - len(text.lstrip())]
    trail = text[len(text.rstrip()) :]
    return f"{lead}({core}:{weight:g}){trail}{comma}"


def chaos_prompt(prompt: str, chaos: int, seed: int) -> str:
    """The prompt one picture (of seed ``seed``) renders with under ``--chaos chaos``."""
    if not 0 <= chaos <= MAX_CHAOS:
        raise ValueError(f"chaos must be in 0..{MAX_CHAOS}, got {chaos}")
    if chaos == 0:
        return prompt
    draw = random.Random(seed)
    amplitude = SPREAD * chaos / MAX_CHAOS
    return "".join(
        _reweighted(part, round(1 + draw.uniform(-amplitude, amplitude), 2))
        for part in _top_level_parts(prompt)
    )
