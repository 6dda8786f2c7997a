"""Composable diffusion: ``a cat AND a dog:0.5`` is two sub-prompts with their own weights.

As in the web UI the split is on the uppercase word ``AND`` (word boundaries, no spaces
needed), and a trailing ``:weight`` applies to a sub-prompt even when there is no ``AND``
(``a cat:1.5``). The weight is removed with the whitespace before it; other whitespace stays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from inference.prompts.errors import PromptError
from inference.prompts.weights import MAX_WEIGHT, check_weight, excerpt

_AND = re.compile(r"\bAND\b")
# Each part is one more UNet row per picture at every step (memory and time for the whole
# batch): the web UI sets no bound, 4,000 characters held up to 667 parts.
MAX_SUBPROMPTS = 16


@dataclass(frozen=True)
class SubPrompt:
    text: str
    weight: float


def split_subprompts(prompt: str, name: str = "the prompt") -> list[SubPrompt]:
    """Split on ``AND`` and read each part's optional trailing ``:weight`` (default 1.0).

    Raises ``PromptError`` past ``MAX_SUBPROMPTS`` parts, for a weight out of
    ``check_weight``'s range, or for parts whose weights, without their signs, add up past
    ``MAX_WEIGHT`` (``name``: the prompt's, in it)."""
    parts = _AND.split(prompt)
    if len(parts) > MAX_SUBPROMPTS:
        raise PromptError(
            f"{name} has {len(parts)} parts joined by AND; at most {MAX_SUBPROMPTS} are "
            "allowed: join fewer, or write a lowercase 'and' where the words belong together "
            "(only AND splits)"
        )
    weighed = [_weighed(part, name) for part in parts]
    # The engine adds up the parts' pulls, each scaled by its weight (``guidance._combine``):
    # fifteen parts of 100 pull as one of 1,500 would.
    total = sum(abs(part.weight) for part in weighed)
    if not total <= MAX_WEIGHT:
        raise PromptError(
            f"the weights of {name}'s {len(weighed)} AND parts add up to {total!r}, each "
            f"counted without its sign (a part without one weighs 1); together they may be at "
            f"most {MAX_WEIGHT:g}"
        )
    return weighed


def _weighed(part: str, name: str) -> SubPrompt:
    r"""``part`` without its trailing ``:weight`` (``\s*:\s*[-+]?(\d+\.?|\d*\.\d+)\s*$``),
    and that weight (1.0 when it has none), refused out of range (``name``: the prompt's).

    Read from the end, once: a regex anchored at the end tries every start, so a run of
    spaces cost its length squared (0.9 s at 16,000 characters)."""
    body = part.rstrip()  # str.isspace() and the regex \s agree on whitespace
    start = len(body)
    while start > 0 and (body[start - 1].isdecimal() or body[start - 1] == "."):
        start -= 1
    number = body[start:]
    if start > 0 and body[start - 1] in "+-":
        start -= 1
    before = body[:start].rstrip()
    if number.count(".") > 1 or number.strip(".") == "" or not before.endswith(":"):
        return SubPrompt(body, 1.0)
    text, typed = before[:-1].rstrip(), body[start:]
    weight = float(typed)
    check_weight(weight, f"the weight of {name}'s AND part {excerpt(text.strip())}", typed)
    return SubPrompt(text, weight)
