"""Composable diffusion: ``a cat AND a dog:0.5`` is two sub-prompts with their own weights.

As in the web UI the split is on the uppercase word ``AND`` (word boundaries, no spaces
needed), and a trailing ``:weight`` applies to a sub-prompt even when there is no ``AND``
(``a cat:1.5``). The weight is removed with the whitespace before it; other whitespace stays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_AND = re.compile(r"\bAND\b")
_TRAILING_WEIGHT = re.compile(r"^(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$", re.DOTALL)


@dataclass(frozen=True)
class SubPrompt:
    text: str
    weight: float


def split_subprompts(prompt: str) -> list[SubPrompt]:
    """Split on ``AND`` and read each part's optional trailing ``:weight`` (default 1.0)."""
    subprompts = []
    for part in _AND.split(prompt):
        match = _TRAILING_WEIGHT.match(part)
        assert match is not None  # the pattern accepts any text
        text, weight = match.groups()
        subprompts.append(SubPrompt(text, float(weight) if weight is not None else 1.0))
    return subprompts
