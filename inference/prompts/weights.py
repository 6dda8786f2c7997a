"""The range every weight a prompt gives must keep: emphasis (``(x:w)``, its brackets' weights
multiplied), an ``AND`` part's ``:w`` and an extra network's ``<lora:name:w>``; and so must
what the engine applies as one weight: a LoRA tagged more than once, at its tags' weights
added up, and the ``AND`` parts, whose weights without their signs may add up to ``MAX_WEIGHT``
(each part's pull is scaled by its weight, then added).

Far past it the picture comes out black (a weight of 1e9 overflowed the conditioning; a LoRA's
deltas swamp the model's weights) and the member is charged for it. The web UI sets no bound;
its users' weights stay within a few units either side of 1.
"""

from __future__ import annotations

from inference.prompts.errors import PromptError

MAX_WEIGHT = 100.0


def in_range(weight: float) -> bool:
    """Whether ``weight`` is within -``MAX_WEIGHT``..``MAX_WEIGHT`` (NaN is not)."""
    return -MAX_WEIGHT <= weight <= MAX_WEIGHT


def weight_refusal(what: str, given: str) -> PromptError:
    """The refusal of a weight out of range: ``what`` names it, ``given`` is its value as the
    member wrote it, or as it works out."""
    return PromptError(
        f"{what} is {given}; a weight must be a number between {-MAX_WEIGHT:g} and {MAX_WEIGHT:g}"
    )


def check_weight(weight: float, what: str, given: str) -> None:
    """Raise ``weight_refusal`` for ``weight`` out of range."""
    if not in_range(weight):
        raise weight_refusal(what, given)


def excerpt(text: str, limit: int = 40) -> str:
    """``text`` quoted, cut to ``limit`` characters (a piece of a prompt can run to thousands)."""
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")
