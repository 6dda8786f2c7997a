"""A value a member typed or pasted, as an error repeats it: cut to ``MAX_QUOTED``
characters, so a 5,000-digit paste makes no 5,000-character error. Pure: the prompt language
and the bot's refusals both quote through it."""

from __future__ import annotations

MAX_QUOTED = 100


def cut(text: str) -> str:
    """``text`` cut to ``MAX_QUOTED`` characters, an ellipsis marking the cut."""
    return text if len(text) <= MAX_QUOTED else text[: MAX_QUOTED - 1] + "…"


def echoed(value: object) -> str:
    """``value`` as an error repeats it: ``repr``, its text cut to ``MAX_QUOTED``
    characters."""
    text = value if isinstance(value, str) else str(value)
    return repr(cut(text)) if len(text) > MAX_QUOTED else repr(value)
