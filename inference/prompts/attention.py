"""Attention (emphasis) syntax of the web UI: ``(x)``, ``[x]``, ``(x:1.5)`` and ``BREAK``.

Behaviour follows the web UI, quirks included:

* ``(x)`` multiplies by 1.1, ``[x]`` divides by 1.1, ``(x:w)`` multiplies by ``w``; nesting
  multiplies, innermost first (so float results match the web UI to the last bit).
* A bracket never closed applies its multiplier to everything after it; a closing bracket
  with nothing open stays in the text as a literal character.
* ``\\(``, ``\\)``, ``\\[``, ``\\]`` and ``\\\\`` are escapes; any other backslash is dropped
  (so ``\\:`` reads as ``:``).
* ``BREAK`` (uppercase, a word of its own) becomes ``("BREAK", -1.0)``; inside brackets
  its marker is multiplied like any text, as in the web UI, and then no longer breaks.
* Adjacent pieces with exactly equal weights are merged; an empty prompt is ``[("", 1.0)]``.
"""

from __future__ import annotations

import re

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
BREAK_MARKER = ("BREAK", -1.0)

_TOKEN = re.compile(
    r"""
    \\[()\[\]\\]                            # escaped bracket or backslash
    | \\                                    # lone backslash: dropped
    | \(
    | \[
    | :\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)   # ':1.5)' closes a round bracket with a weight
    | \)
    | \]
    | [^\\()\[\]:]+
    | :
    """,
    re.VERBOSE,
)
BREAK_PATTERN = re.compile(r"\s*\bBREAK\b\s*")  # a chunk separator, its spaces dropped
# Each closing bracket re-weights every piece since its opening one (an unclosed one, every
# piece to the end), so parsing costs pieces x depth: planners refuse deeper text.
MAX_ATTENTION_NESTING = 100


def attention_depth(text: str) -> int:
    """The most ``(`` and ``[`` brackets open at once as ``parse_attention`` reads ``text``
    (an unclosed one stays open to the end); linear, for refusing before parsing."""
    open_round = open_square = deepest = 0
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if token == "(":
            open_round += 1
        elif token == "[":
            open_square += 1
        elif open_round and (token == ")" or match.group(1) is not None):
            open_round -= 1
        elif token == "]" and open_square:
            open_square -= 1
        deepest = max(deepest, open_round + open_square)
    return deepest


def parse_attention(text: str) -> list[tuple[str, float]]:
    """Split ``text`` into ``(piece, weight)`` pairs the way the web UI weights tokens."""
    return [(piece, weight) for piece, weight, _ in weigh_attention(text)]


def weigh_attention(text: str) -> list[tuple[str, float, str | None]]:
    """``parse_attention``'s pieces, each with its weight as typed where one bracket alone
    gives it: ``w`` of ``(x:w)`` around nothing else (None: no bracket, more than one, or
    ``(x)``/``[x]``), for a refusal to quote as typed. Merged pieces keep the first's."""
    # Each piece: its text, weight, and the "(" around it where it is the only bracket (its
    # offset in ``text``; -1: none, or more than one).
    pieces: list[list[str | float | int]] = []
    open_round: list[tuple[int, int]] = []  # each open "(": its first piece and its offset
    open_square: list[int] = []
    typed: dict[int, str] = {}  # the weight a "(" was closed with (":w)"), by its offset

    def multiply_from(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] = float(piece[1]) * factor

    def add(piece_text: str, weight: float = 1.0) -> None:
        alone = weight == 1.0 and len(open_round) == 1 and not open_square
        pieces.append([piece_text, weight, open_round[0][1] if alone else -1])

    for match in _TOKEN.finditer(text):
        token = match.group(0)
        weight = match.group(1)
        if token.startswith("\\"):
            add(token[1:])
        elif token == "(":
            open_round.append((len(pieces), match.start()))
        elif token == "[":
            open_square.append(len(pieces))
        elif weight is not None and open_round:
            start, offset = open_round.pop()
            typed[offset] = weight
            multiply_from(start, float(weight))
        elif token == ")" and open_round:
            multiply_from(open_round.pop()[0], ROUND_MULTIPLIER)
        elif token == "]" and open_square:
            multiply_from(open_square.pop(), SQUARE_MULTIPLIER)
        else:
            for index, part in enumerate(BREAK_PATTERN.split(token)):
                if index:
                    add(*BREAK_MARKER)
                add(part)

    # Unclosed brackets reach to the end of the prompt, outermost first as in the web UI.
    for start, _ in open_round:
        multiply_from(start, ROUND_MULTIPLIER)
    for start in open_square:
        multiply_from(start, SQUARE_MULTIPLIER)

    merged: list[tuple[str, float, str | None]] = []
    for piece_text, piece_weight, bracket in pieces:
        if merged and merged[-1][1] == piece_weight:
            merged[-1] = (merged[-1][0] + str(piece_text), merged[-1][1], merged[-1][2])
        else:
            merged.append((str(piece_text), float(piece_weight), typed.get(int(bracket))))
    return merged or [("", 1.0, None)]
