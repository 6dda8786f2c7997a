"""A member's words as Easel shows them to members and moderators: nothing in them may set the
direction of what follows or break its line, a prompt's whitespace shows as the text encoder
reads it, and a cut never splits what shows as one character."""

from __future__ import annotations

import unicodedata

ELLIPSIS = "…"

# Direction embeddings, overrides, isolates and marks: "\u202enaked woman" shows reversed, and
# an override left open runs on into Easel's own words after the quote (a moderator's link).
# Dropped rather than each quote wrapped in an isolate: the words then show in the order the
# text encoder reads them, and Arabic or Hebrew letters still lay out by their own direction.
_DIRECTION_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
# What ends a line or paragraph besides "\n": a carriage return, vertical tab, form feed, the
# file, group and record separators, next line, and the line and paragraph separators.
_LINE_BREAKS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_LAID_OUT = str.maketrans(
    dict.fromkeys(_DIRECTION_CONTROLS, None) | dict.fromkeys(_LINE_BREAKS, " ")
)

_ZERO_WIDTH_JOINER = "\u200d"
_JOINERS = "\u200c\u200d"  # the zero-width non-joiner and joiner
# What joins the character before it: a combining mark (a variation selector is one), the
# zero-width (non-)joiner, a skin-tone modifier, a tag character (a subdivision flag's), an
# emoji after a zero-width joiner.
_MARK_CATEGORIES = frozenset({"Mn", "Mc", "Me"})
_EMOJI_MODIFIERS = range(0x1F3FB, 0x1F400)
_TAGS = range(0xE0020, 0xE0080)
_REGIONAL_INDICATORS = range(0x1F1E6, 0x1F200)  # a flag is two of them
# A cut backs up (or on) at most this many characters to keep one whole: more than any emoji
# sequence or flag holds, so that a run of marks or joiners ("e" + "\u0301" * 3000,
# "\u200d" * 3000) is cut in it, not before it whole (a message of it shown as "…" alone).
_LONGEST_CHARACTER = 32

# Characters that show as nothing, or as a blank, but are no whitespace to ``str.split``: the
# Hangul fillers, the braille blank, the combining grapheme joiner and the Mongolian and Khmer
# ones that show nothing; with every format character (category Cf: U+200B, the soft hyphen,
# U+2060, U+FEFF...), a prompt shows them as whitespace (``as_read``).
_BLANKS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f\u17b4\u17b5\u180b\u180c\u180d\u180f")
# Marks shown on one character at most (a run of them stacks on it, or is padding); a
# subdivision flag's tags after its black flag (U+1F3F4: England's are 6).
_MARKS_SHOWN = 3
_FLAG_TAGS_SHOWN = 7
_BLACK_FLAG = "\U0001f3f4"


def laid_out(text: str) -> str:
    """``text`` without direction controls, each line break but "\\n" a space."""
    return text.translate(_LAID_OUT)


def as_read(text: str) -> str:
    """A prompt as a reader should see its words: each run of whitespace, and of what shows
    as blank or as nothing (``_BLANKS``, format characters, a joiner but one between two
    characters shown), one space, none at either end; at most ``_MARKS_SHOWN`` marks on a
    character, none on a blank. So padding (1,600 spaces, braille blanks, U+200B, marks)
    pushes none of its words past a cut, as the text encoder reads them on past it."""
    text = laid_out(text)
    if text.isascii():  # no mark, blank or format character: whitespace alone to fold
        return " ".join(text.split())
    shown: list[str] = []
    base, joined = " ", 0  # the last character shown but a mark or tag, and how many since
    for index, char in enumerate(text):
        if ord(char) in _TAGS and base == _BLACK_FLAG:  # a subdivision flag
            joined += 1
            if joined <= _FLAG_TAGS_SHOWN:
                shown.append(char)
        elif unicodedata.category(char) in _MARK_CATEGORIES and char not in _BLANKS:
            joined += 1
            if base != " " and joined <= _MARKS_SHOWN:
                shown.append(char)
        elif char in _JOINERS and base != " " and _joinable(text, index + 1):
            shown.append(char)
        else:
            base = " " if _blank(char) else char
            joined = 0
            shown.append(base)
    return " ".join("".join(shown).split())


def _blank(char: str) -> bool:
    return char.isspace() or char in _BLANKS or unicodedata.category(char) == "Cf"


def _joinable(text: str, index: int) -> bool:
    """Whether a joiner before ``index`` joins two characters shown: one follows it, no blank
    and nothing joined to what is before it."""
    if index == len(text) or _blank(following := text[index]):
        return False
    return unicodedata.category(following) not in _MARK_CATEGORIES and ord(following) not in _TAGS


def grapheme_boundary(text: str, index: int, *, forward: bool = False) -> int:
    """The nearest place at or before ``index`` (after it, ``forward``) where a cut keeps each
    character as shown whole: a letter with its marks, an emoji sequence, a flag."""
    step = 1 if forward else -1
    start = index
    while 0 < index < len(text) and _joins_previous(text, index):
        if abs(index - start) == _LONGEST_CHARACTER:  # a run of marks or joiners: cut in it
            return start
        index += step
    return index


def shortened(text: str, room: int) -> str:
    """``text`` in at most ``room`` characters, an ellipsis marking a cut."""
    if len(text) <= room:
        return text
    return text[: grapheme_boundary(text, room - 1)] + ELLIPSIS


def _joins_previous(text: str, index: int) -> bool:
    char = text[index]
    if char in _JOINERS:
        return True
    if text[index - 1] == _ZERO_WIDTH_JOINER and unicodedata.category(char) == "So":
        return True  # an emoji sequence ("👩\u200d👧"); a joiner between letters joins none
    code = ord(char)
    if code in _EMOJI_MODIFIERS or code in _TAGS:
        return True
    if code in _REGIONAL_INDICATORS:
        before = index
        while before > 0 and ord(text[before - 1]) in _REGIONAL_INDICATORS:
            before -= 1
        return (index - before) % 2 == 1  # the second of a pair
    return unicodedata.category(char) in _MARK_CATEGORIES
