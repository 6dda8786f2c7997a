"""Prompt editing ``[from:to:when]`` and alternation ``[a|b]``: which text applies at each step.

The web UI's rules, quirks included:

* ``[to:when]`` adds ``to`` after step ``when``; ``[from::when]`` removes ``from`` after it;
  ``[from:to:when]`` swaps. ``when`` written with a decimal point is a fraction of the steps
  (``0.25`` of 20 steps is step 5, ``1.5`` is capped at the last step); without one it is a step
  number. Both are truncated towards zero. With ``legacy_timeline=True`` the web UI's old rule
  applies instead (below 1 is a fraction, 1 or more is a step number).
* The hires fix's pass (``first_pass_steps``: the steps of the pass before it) goes on where
  the first pass stopped: a fraction counts from 1.0 (``1.5`` is half-way through the hires
  steps, ``0.5`` was over before it began) and a step number from the first pass's steps.
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

from inference.prompts.attention import BREAK_PATTERN

_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+")
_WHEN = re.compile(r"\s*([+-]?(?:\d+[eE][+-]?\d+|(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+))\s*\]")
# Deeper nesting than this gives up on structure (the web UI itself overflows its stack).
_MAX_NESTING = 150


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


def _switch_step(
    when_text: str, steps: int, first_pass_steps: int | None, legacy_timeline: bool
) -> int:
    value = float(when_text)
    if legacy_timeline:
        value = value * steps if value < 1 else value
    elif "." in when_text:
        value = (value - (first_pass_steps is not None)) * steps
    else:
        value -= first_pass_steps or 0
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


def _switch_points(
    nodes: list[_Node], steps: int, first_pass_steps: int | None, legacy_timeline: bool
) -> set[int]:
    """Resolve every ``when`` to a step and return the steps where the text may change."""
    points = {steps}
    pending = list(nodes)
    while pending:
        node = pending.pop()
        if isinstance(node, _Edit):
            node.when_step = _switch_step(node.when_text, steps, first_pass_steps, legacy_timeline)
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
    text: str,
    steps: int,
    *,
    first_pass_steps: int | None = None,
    legacy_timeline: bool = False,
) -> list[ScheduleSegment]:
    """The texts ``text`` produces over ``steps`` sampling steps, equal neighbours merged.
    ``first_pass_steps``: these are a hires pass's steps, after a first pass of that many.

    Never raises on any text: what the grammar rejects is used literally for every step.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if legacy_timeline and first_pass_steps is not None:
        # The web UI's old rule plans a hires pass as if it were the first pass again.
        steps, first_pass_steps = first_pass_steps, None
    try:
        nodes = _Parser(text).document()
    except _NoParse:
        return [ScheduleSegment(steps, text)]
    segments: list[ScheduleSegment] = []
    for step in sorted(_switch_points(nodes, steps, first_pass_steps, legacy_timeline)):
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
    each taken independently (a superset of what renders). Attention brackets, ``:weight)``
    and escapes are resolved as ``parse_attention`` resolves them in each text rendered, a
    weight included whose number an ``[a|b]`` or ``[from:to:when]`` writes."""
    try:
        nodes = _Parser(text).document()
    except _NoParse:
        nodes = [text]
    return _sequence(_pieces(nodes)).shown


# A weight's number (in ``attention._TOKEN``'s ``:\s*number\s*)``) read one character at a
# time: state -> next state, for each kind of character. 0: spaces before it, 1: a sign,
# 2: digits, 3: digits with a point, 4: a point with no digit yet, 5: spaces after it.
_WEIGHT_STEPS = {
    "space": {0: 0, 2: 5, 3: 5, 5: 5},
    "sign": {0: 1},
    "point": {0: 4, 1: 4, 2: 3},
    "digit": {0: 2, 1: 2, 2: 2, 3: 3, 4: 3},
}
_WEIGHT_STATES = frozenset(range(6))
_WEIGHT_ENDS = frozenset({2, 3, 5})  # where ")" may close ":weight)"
# Which states a piece of text can lead from each state, rendering as part of a weight
# (empty: it cannot).
_Relation = dict[int, frozenset[int]]
_IDENTITY: _Relation = {state: frozenset({state}) for state in _WEIGHT_STATES}
# The attention parser's tokens, bar ":weight)", which these pieces follow across choices.
_ATTENTION_TOKEN = re.compile(r"\\[()\[\]\\]|\\|[()\[\]:]|[^\\()\[\]:]+")


def _weight_relation(raw: str) -> _Relation:
    relation = {}
    for start in _WEIGHT_STATES:
        state = start
        for char in raw:
            if char.isspace():  # what \s and \d match
                kind = "space"
            elif char.isdecimal():
                kind = "digit"
            else:
                kind = {"+": "sign", "-": "sign", ".": "point"}.get(char, "")
            following = _WEIGHT_STEPS.get(kind, {}).get(state)
            if following is None:
                break
            state = following
        else:
            relation[start] = frozenset({state})
    return relation


def _compose(first: _Relation, then: _Relation) -> _Relation:
    composed = {
        start: frozenset().union(*(then.get(middle, ()) for middle in middles))
        for start, middles in first.items()
    }
    return {start: ends for start, ends in composed.items() if ends}


def _reaching(relation: _Relation, ends: frozenset[int]) -> frozenset[int]:
    return frozenset(start for start, reached in relation.items() if reached & ends)


def _reached(relation: _Relation, starts: frozenset[int]) -> frozenset[int]:
    return frozenset().union(*(relation.get(start, ()) for start in starts))


@dataclass(frozen=True)
class _Tail:
    """Variants that end inside ``:weight)`` not yet closed: what shows before its ``:``, and
    the states its number may have reached."""

    rendering: Rendering
    states: frozenset[int]


@dataclass(frozen=True)
class _Piece:
    """Part of a text as the attention parser reads it: ``shown`` is what reaches the text
    encoder unless the piece is inside a ``:weight)`` that closes a bracket."""

    shown: Rendering
    relation: _Relation  # how it can go on a weight's number
    tail: _Tail | None = None  # its variants that open a weight (a ":" and what follows)
    closes_round: bool = False  # a ")": it closes a weight
    fixed: bool = True  # it renders one way only (for a ")": it is always gone)


_COLON = _Piece((":",), {}, _Tail((), frozenset({0})))
# Where a bracket opens or closes, the weight before and after may differ: the text encoder
# then reads the two sides as separate pieces (a word boundary), or the same and joins them.
_WEIGHT_BOUNDARY = ((), (" ",))
_BRACKET = _Piece((_WEIGHT_BOUNDARY,), {})
# "BREAK" is a chunk separator, or (merged into a word at weight 0) the word itself; the
# spaces around it go either way.
_BREAK_MARK = _Piece((((" ",), ("BREAK",)),), {}, fixed=False)


def _pieces(nodes: list[_Node]) -> list[_Piece]:
    """Emphasis is spread out (its brackets and ":" are tokens like any other: a weight's
    ":" may be typed inside it, its number written by a choice); choices analysed once."""
    out = []
    for node in nodes:
        if isinstance(node, str):
            out.extend(_lexed(node))
        elif isinstance(node, _Emphasis):
            out.append(_BRACKET)  # an opening bracket is never shown
            for index, part in enumerate(node.parts):
                out.extend(([_COLON] if index else []) + _pieces(part))
            # Its content is balanced, so its own bracket is open here: the closing one goes.
            out.append(_Piece(_BRACKET.shown, {}, closes_round=node.closing == ")"))
        else:
            options = [node.before or [], node.after] if isinstance(node, _Edit) else node.options
            out.append(_choice([_sequence(_pieces(option)) for option in options]))
    return out


def _lexed(raw: str) -> list[_Piece]:
    """Text, or a stray bracket or ":" outside any construct: escapes resolved, other
    backslashes and opening brackets dropped (the attention parser opens one even if never
    closed), a closing one either closes one (gone) or stays; text split at each BREAK."""
    out: list[_Piece] = []
    for token in _ATTENTION_TOKEN.findall(raw):
        if token == ":":
            out.append(_COLON)
        elif token in {"(", "["}:
            out.append(_BRACKET)
        elif token in {")", "]"}:
            choice = (*_WEIGHT_BOUNDARY, (token,))
            out.append(_Piece((choice,), {}, closes_round=token == ")", fixed=False))
        elif token.startswith("\\"):
            out.append(_Piece((token[1:],) if token[1:] else (), _weight_relation(token)))
        else:
            for index, text in enumerate(BREAK_PATTERN.split(token)):
                out.extend([_BREAK_MARK] if index else [])
                out.append(_Piece((text,) if text else (), _weight_relation(text)))
    return out


def _choice(options: list[_Piece]) -> _Piece:
    relation: _Relation = {}
    for option in options:
        for start, ends in option.relation.items():
            relation[start] = relation.get(start, frozenset()) | ends
    tails = [option.tail for option in options if option.tail is not None]
    tail = None
    if tails:
        states = frozenset().union(*(each.states for each in tails))
        tail = _Tail((tuple(each.rendering for each in tails),), states)
    shown = (tuple(option.shown for option in options),)
    return _Piece(shown, relation, tail, fixed=False)


def _sequence(pieces: list[_Piece]) -> _Piece:
    """Pieces one after another. A ":" (or a choice with one) and the pieces after it that
    can write a number (``run``) wait for a ")": there, each that can open a weight the
    number closes is offered gone to the ")" as well as shown as it is."""
    done: list[str | tuple[Rendering, ...]] = []
    run: list[_Piece] = []
    relation = _IDENTITY
    for piece in pieces:
        relation = _compose(relation, piece.relation)
        if piece.closes_round:
            done.extend(_closed(run, piece))
            run = []
            continue
        if not piece.relation:  # no weight opened before goes on through it
            done.extend(part for earlier in run for part in earlier.shown)
            run = []
        if run or piece.tail is not None:
            run.append(piece)
        else:
            done.extend(piece.shown)
    shown = (*done, *(part for piece in run for part in piece.shown))
    return _Piece(shown, relation, _open_tail(done, run))


def _closed(run: list[_Piece], closing: _Piece) -> Rendering:
    """``run`` then ``closing``: each weight ``closing`` can end, gone, or all as shown."""
    out = closing.shown
    # A ":" and a number that render one way only, closed by a bracket that is always
    # gone, are a weight for certain: gone with it.
    certain = closing.fixed and all(piece.fixed for piece in run)
    ends = _WEIGHT_ENDS  # states from which what follows the piece reaches the ")"
    for piece in reversed(run):
        as_shown = (*piece.shown, *out)
        if piece.tail is not None and piece.tail.states & ends:
            gone = (*piece.tail.rendering, *_BRACKET.shown)  # the weight closes a bracket
            out = gone if certain else ((gone, as_shown),)
        else:
            out = as_shown
        ends = _reaching(piece.relation, ends)
    return out


def _open_tail(done: list[str | tuple[Rendering, ...]], run: list[_Piece]) -> _Tail | None:
    """The variants of a sequence that end inside a weight (for a ")" after it)."""
    out: Rendering | None = None
    going_on = _WEIGHT_STATES  # states from which the pieces after this one are a number
    for piece in reversed(run):
        later = None if out is None else (*piece.shown, *out)
        if piece.tail is not None and piece.tail.states & going_on:
            out = piece.tail.rendering if later is None else ((piece.tail.rendering, later),)
        else:
            out = later
        going_on = _reaching(piece.relation, going_on)
    if out is None:
        return None
    states: frozenset[int] = frozenset()
    for piece in run:
        opened = piece.tail.states if piece.tail is not None else frozenset()
        states = _reached(piece.relation, states) | opened
    return _Tail((*done, *out), states)
