"""Prompt editing ``[from:to:when]`` and alternation ``[a|b]``: which text applies at each step.

The web UI's rules, quirks included:

* ``[to:when]`` adds ``to`` after step ``when``; ``[from::when]`` removes ``from`` after it;
  ``[from:to:when]`` swaps. ``when`` written with a decimal point is a fraction of the steps
  (``0.25`` of 20 steps is step 5, ``1.5`` is capped at the last step); without one it is a step
  number. Both are truncated towards zero. With ``legacy_timeline=True`` the web UI's old rule
  applies instead (below 1 is a fraction, 1 or more is a step number).
* A switch at step 0 or before never shows ``from``; one at or after the last step never shows
  ``to``.
* ``[a|b|c]`` cycles a, b, c, a, ... one option per step; an empty option is empty text.
* Editing and alternation nest. ``(x)``, ``(x:1.2)`` and ``[x]`` are kept verbatim for the
  attention parser.
* ``renderings`` lists every text a prompt can show at any step count (for moderation).
* Syntax the web UI grammar does not accept (a ``|`` outside brackets, a trailing backslash,
  ``[a|b`` left open...) leaves the whole prompt as literal text for every step; stray
  brackets and colons at the outermost level are literal characters.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+")
_WHEN = re.compile(r"\s*([+-]?(?:\d+[eE][+-]?\d+|(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+))\s*\]")
# Deeper nesting than this gives up on structure (the web UI itself overflows its stack).
_MAX_NESTING = 150
_WEIGHT = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)\s*")
# In literal text: an escaped bracket or backslash, another backslash, a bracket.
_ATTENTION_CHARACTER = re.compile(r"\\([()\[\]\\])|\\|([()\[\]])")


@dataclass(frozen=True)
class ScheduleSegment:
    """``text`` applies to every step up to and including ``until_step`` (1-based)."""

    until_step: int
    text: str


# Parse tree: a sequence is a list of nodes; a node is literal text or one of these.
@dataclass
class _Emphasis:
    opening: str
    parts: list[list[_Node]]  # one part, or two for "(text:weight)"
    closing: str


@dataclass
class _Edit:
    before: list[_Node] | None
    after: list[_Node]
    when_text: str
    when_step: int = 0


@dataclass
class _Alternation:
    options: list[list[_Node]]


_Node = str | _Emphasis | _Edit | _Alternation


class _NoParse(Exception):
    """The grammar does not accept the construct being tried."""


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.known: dict[int, tuple[_Node, int] | None] = {}  # bracket position -> result

    def document(self) -> list[_Node]:
        """Top level: structured constructs where they parse, stray ``[]():`` as text."""
        text, nodes, position = self.text, [], 0
        while position < len(text):
            char = text[position]
            if char in "([":
                try:
                    node, position = self.bracket(position, 0)
                    nodes.append(node)
                    continue
                except _NoParse:
                    pass
            if char in "[]():":
                nodes.append(char)
                position += 1
                continue
            match = _PLAIN.match(text, position)
            if match is None:  # '|' or a backslash with nothing to escape
                raise _NoParse
            nodes.append(match.group(0))
            position = match.end()
        return nodes

    def sequence(self, position: int, depth: int) -> tuple[list[_Node], int]:
        """Text inside brackets: stops before the first unmatched ``:|])``."""
        text, nodes = self.text, []
        while position < len(text):
            char = text[position]
            if char in "([":
                node, position = self.bracket(position, depth + 1)
                nodes.append(node)
            elif char in ":|])":
                break
            else:
                match = _PLAIN.match(text, position)
                if match is None:
                    raise _NoParse
                nodes.append(match.group(0))
                position = match.end()
        return nodes, position

    def bracket(self, position: int, depth: int) -> tuple[_Node, int]:
        if position in self.known:
            known = self.known[position]
            if known is None:
                raise _NoParse
            return known
        if depth > _MAX_NESTING:
            raise _NoParse
        try:
            if self.text[position] == "(":
                result = self.round(position, depth)
            else:
                result = self.square(position, depth)
        except _NoParse:
            self.known[position] = None
            raise
        self.known[position] = result
        return result

    def expect(self, position: int, char: str) -> int:
        if position >= len(self.text) or self.text[position] != char:
            raise _NoParse
        return position + 1

    def round(self, position: int, depth: int) -> tuple[_Node, int]:
        first, position = self.sequence(position + 1, depth)
        if position < len(self.text) and self.text[position] == ":":
            second, position = self.sequence(position + 1, depth)
            return _Emphasis("(", [first, second], ")"), self.expect(position, ")")
        return _Emphasis("(", [first], ")"), self.expect(position, ")")

    def square(self, position: int, depth: int) -> tuple[_Node, int]:
        first, position = self.sequence(position + 1, depth)
        char = self.text[position] if position < len(self.text) else ""
        if char == "]":
            return _Emphasis("[", [first], "]"), position + 1
        if char == "|":
            options = [first]
            while position < len(self.text) and self.text[position] == "|":
                option, position = self.sequence(position + 1, depth)
                options.append(option)
            return _Alternation(options), self.expect(position, "]")
        if char != ":":
            raise _NoParse
        when = _WHEN.match(self.text, position + 1)
        if when is not None:  # [to:when]
            return _Edit(None, first, when.group(1)), when.end()
        second, position = self.sequence(position + 1, depth)
        if position < len(self.text) and self.text[position] == ":":
            when = _WHEN.match(self.text, position + 1)
            if when is not None:  # [from:to:when]
                return _Edit(first, second, when.group(1)), when.end()
        raise _NoParse


def _switch_step(when_text: str, steps: int, legacy_timeline: bool) -> int:
    value = float(when_text)
    if legacy_timeline:
        value = value * steps if value < 1 else value
    elif "." in when_text:
        value *= steps
    if math.isinf(value):
        return steps if value > 0 else -1
    return min(steps, int(value))


def _children(node: _Node) -> list[list[_Node]]:
    if isinstance(node, _Emphasis):
        return node.parts
    if isinstance(node, _Edit):
        return [node.after] if node.before is None else [node.before, node.after]
    if isinstance(node, _Alternation):
        return node.options
    return []


def _switch_points(nodes: list[_Node], steps: int, legacy_timeline: bool) -> set[int]:
    """Resolve every ``when`` to a step and return the steps where the text may change."""
    points = {steps}
    pending = list(nodes)
    while pending:
        node = pending.pop()
        if isinstance(node, _Edit):
            node.when_step = _switch_step(node.when_text, steps, legacy_timeline)
            if node.when_step >= 1:
                points.add(node.when_step)
        elif isinstance(node, _Alternation):
            points.update(range(1, steps + 1))
        for child in _children(node):
            pending.extend(child)
    return points


def _render(nodes: list[_Node], step: int) -> str:
    out: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Emphasis):
            out.append(node.opening + ":".join(_render(p, step) for p in node.parts))
            out.append(node.closing)
        elif isinstance(node, _Edit):
            chosen = (node.before or []) if step <= node.when_step else node.after
            out.append(_render(chosen, step))
        else:
            out.append(_render(node.options[(step - 1) % len(node.options)], step))
    return "".join(out)


def schedule_prompt(
    text: str, steps: int, *, legacy_timeline: bool = False
) -> list[ScheduleSegment]:
    """The texts ``text`` produces over ``steps`` sampling steps, equal neighbours merged.

    Never raises on any text: what the grammar rejects is used literally for every step.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    try:
        nodes = _Parser(text).document()
    except _NoParse:
        return [ScheduleSegment(steps, text)]
    segments: list[ScheduleSegment] = []
    for step in sorted(_switch_points(nodes, steps, legacy_timeline)):
        rendered = _render(nodes, step)
        if segments and segments[-1].text == rendered:
            segments[-1] = ScheduleSegment(step, rendered)
        else:
            segments.append(ScheduleSegment(step, rendered))
    return segments


# Literal text, or a choice between sequences.
Rendering = tuple["str | tuple[Rendering, ...]", ...]


def renderings(text: str) -> Rendering:
    """Every text ``text`` can show, at any step of any step count, as a sequence of literal
    text and choices: both sides of each ``[from:to:when]``, every option of each ``[a|b]``,
    each taken independently (a superset of what renders). Attention brackets, ``:weight``
    and escapes are resolved, as the text encoder never sees them."""
    try:
        nodes = _Parser(text).document()
    except _NoParse:
        return _literal(text)
    return _renderings(nodes)


def _literal(text: str) -> Rendering:
    """Literal text as the attention parser passes it on: escapes resolved, other backslashes
    dropped, and each bracket either an emphasis mark (gone, its neighbours joined) or a
    stray character kept: both are checked."""
    out: list[str | tuple[Rendering, ...]] = []
    position = 0
    for match in _ATTENTION_CHARACTER.finditer(text):
        out.append(text[position : match.start()])
        escaped, bracket = match.groups()
        if escaped:
            out.append(escaped)
        elif bracket:
            out.append(((), (bracket,)))
        position = match.end()
    out.append(text[position:])
    return tuple(part for part in out if part)


def _is_weight(nodes: list[_Node]) -> bool:
    return len(nodes) == 1 and isinstance(nodes[0], str) and bool(_WEIGHT.fullmatch(nodes[0]))


def _renderings(nodes: list[_Node]) -> Rendering:
    out: list[str | tuple[Rendering, ...]] = []
    for node in nodes:
        if isinstance(node, str):
            out.extend(_literal(node))
        elif isinstance(node, _Emphasis):
            first, *rest = node.parts
            out.extend(_renderings(first))
            if rest and not _is_weight(rest[0]):  # "(a:b)" is text, "(a:1.2)" a weight
                out.extend((":", *_renderings(rest[0])))
        elif isinstance(node, _Edit):
            out.append((_renderings(node.before or []), _renderings(node.after)))
        else:
            out.append(tuple(_renderings(option) for option in node.options))
    return tuple(out)
