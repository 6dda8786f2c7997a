"""Guild rules applied to a request before it is queued (pure: no discord, no torch)."""

from __future__ import annotations

import contextlib
import functools
import itertools
import re
import threading
import unicodedata
from collections.abc import Collection, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bot.policy.unavailable import unavailable_here
from bot.user_errors import Reason, UserError
from inference.compare import cell_requests, is_comparison
from inference.face_options import FIX_FACES_PROMPT, FaceOptions
from inference.infotext import parse_infotext
from inference.prompts import (
    PlannedDraws,
    PromptError,
    Rendering,
    expand_prompt,
    extract_extra_networks,
    renderings,
)
from inference.prompts.stopping import checkpoint
from inference.types import RenderInputError, RenderRequest


class NsfwPolicy(StrEnum):
    ALLOW = "allow"
    SPOILER = "spoiler"  # results are posted behind a spoiler
    AGE_RESTRICTED_ONLY = "age_restricted_only"  # generation only in age-restricted channels


# Besides format characters (zero-width space and joiners, word joiner, BOM, soft hyphen:
# category Cf), these show nothing either: combining grapheme joiner, Hangul fillers,
# variation selectors. All are removed before matching, so they cannot split a banned word.
_INVISIBLE = re.compile(r"[\u034f\u115f\u1160\u3164\ufe00-\ufe0f\uffa0]")
_SPACES = re.compile(r"\s+")
# A word is a run of letters, as CLIP's tokenizer splits them: "red_hair" and "cat2" show
# the text encoder "hair" and "cat".
_LETTER = r"[^\W\d_]"
# CLIP's tokenizer reads a space as a word boundary only: "bad, wolf" and "bad ,wolf" give it
# the same tokens. So a space matters between two letters only (and at either end: a text's
# start is context, its end is not read yet); elsewhere it is dropped, so a bracket's word
# boundary beside a non-letter adds no variant to check.
_SPACE_BESIDE_NON_LETTER = re.compile(r"(?<=[\W\d_]) |(?<=.) (?=[\W\d_])")
# A banned word or phrase of letters, digits and spaces only: punctuation in a text is read as
# a space where it is looked for (``as_words``).
_WORDS = re.compile(r"[^\W_]+(?: [^\W_]+)*")
# Start and end of a text: a non-letter, so a word there is a whole word.
_EDGE = " "
# Choices whose variants end in more distinct ways than this are not checked one by one:
# such a prompt is refused where words are banned (see find_banned_rendering).
MAX_CHECKED_ENDINGS = 4096
# Where ``_read_apart`` keeps a word boundary that ``normalise`` would close: a character
# that normalising keeps as it is, no letter, digit or space (the object replacement
# character, which no banned word is expected to hold).
_BOUNDARY = "\ufffc"
# A run of characters that are no letter, digit or space: ``as_words`` reads it as one
# space, so a banned phrase's space matches ``hot-dog`` and ``hot_dog``.
_PUNCTUATION_RUN = re.compile(r"(?:[^\w\s]|_)+")
# Scripts written without spaces between words: Thai, Lao, Myanmar, Khmer, Hiragana, Katakana
# (and the long vowel mark), Han (and the iteration mark), halfwidth Katakana.
_UNSPACED_LETTERS = (
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u19e0-\u19ff\u3005\u3040-\u30ff"
    "\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\ua9e0-\ua9ff\uaa60-\uaa7f\uf900-\ufaff"
    "\uff66-\uff9f\U00020000-\U0003134f]"
)
_UNSPACED_SCRIPT = re.compile(_UNSPACED_LETTERS)
# The script of a letter with no name in this Python's Unicode data (``_script``).
_UNNAMED = "UNNAMED"
# Hangul: its jamo, compatibility jamo and syllables (``_whole_word``).
_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\uac00-\ud7ff]")


def normalise(text: str) -> str:
    """Text as compared with banned words: invisible characters removed, NFKC, case folded,
    whitespace runs as one space and kept between letters only (``ｃａ\u200bT`` reads ``cat``,
    ``bad , wolf`` reads ``bad,wolf``); a number character that is
    no decimal digit (``৴``, ``৹``) reads ``0``: CLIP's tokenizer splits words at
    every number character, and ``_LETTER`` would count it a letter. Turkish ``İ`` and ``ı``
    read ``i`` (``_turkish_i_as_i``). Removing and folding joins letters the tokenizer reads
    apart (``cat™`` reads ``cattm``): the text read apart first (``_read_apart``) is checked as
    well."""
    visible = "".join(c for c in text if unicodedata.category(c) != "Cf")
    folded = unicodedata.normalize("NFKC", _INVISIBLE.sub("", visible)).casefold()
    normal = unicodedata.normalize("NFKC", _turkish_i_as_i(folded))
    spaced = _SPACES.sub(" ", "".join(map(_number_as_digit, normal)))
    return _SPACE_BESIDE_NON_LETTER.sub("", spaced)


def _turkish_i_as_i(lowered: str) -> str:
    """A lower-cased text with Turkish ``İ`` (lower cased: ``i`` and a combining dot above)
    and dotless ``ı`` read ``i``. Lower casing turns Turkish capitals into other letters than
    a Turkish writer's lower case (``İSTANBUL`` into ``i̇stanbul``, ``KIZ`` into ``kiz``), so a
    banned word typed in either case matches the text typed in the other; ``ı`` reads ``i``
    where it is typed too (a banned ``sik`` also refuses ``sık``)."""
    return lowered.replace("i\u0307", "i").replace("ı", "i")


def _read_apart(text: str) -> str:
    """``text`` NFC, lower cased, each character the tokenizer splits words at made a
    ``_BOUNDARY``, so that ``normalise`` keeps the split. CLIP's tokenizer reads a text in NFC,
    lower cased (``inference.prompts.tokenizer.ClipTokenizer.encode``), and splits it at every
    character that is no letter, digit or space (``split_words``). Such a character stays a
    word boundary where ``normalise`` would join the letters either side: an invisible one
    (soft hyphen, zero-width space, BOM, variation selector), one NFKC turns into letters
    (``™``, ``℡``, ``Ⅻ``) and a combining mark NFC left apart, which case folding would make a
    letter (``\u0345`` folds to ``ι``) or compose (``T\u0308`` folds to ``ẗ``): ``a dog\u00adcat``,
    ``cat™``, ``cat\u0345`` and ``caT\u0308`` read ``cat``. A part of a prompt is mapped on its
    own, before it joins the carried (lower-cased) tail: NFC would compose that tail's ``t``
    with a leading ``\u0308``, which the tokenizer never does to the ``T`` typed
    (``caT[\u0308|\u0308]`` reads ``cat``)."""
    lowered = _turkish_i_as_i(unicodedata.normalize("NFC", text).lower())
    return "".join(map(_split_where_read_apart, lowered))


def _marks_apart(word: str) -> str:
    """A banned word as the split forms look for it: its combining marks read as
    ``_BOUNDARY``, as a text's are (``चूत`` is looked for as ``च\ufffcत``, so ``चूत™``
    matches); its other characters as ``normalise`` reads them (a ``™`` in a word stays
    ``tm``, so it does not match every boundary). Empty for a word of marks only, which would."""
    nfc = _turkish_i_as_i(unicodedata.normalize("NFC", word).lower())
    marked = "".join(_BOUNDARY if unicodedata.category(c)[0] == "M" else c for c in nfc)
    split = normalise(marked).strip()
    return split if split.strip(_BOUNDARY) else ""


@functools.lru_cache(maxsize=4096)  # a prompt's distinct characters
def _split_where_read_apart(char: str) -> str:
    category = unicodedata.category(char)
    if category[0] == "L" or char.isspace():
        return char
    if category[0] == "M" or category == "Cf" or unicodedata.normalize("NFKC", char) != char:
        return _BOUNDARY
    return char


def as_words(normalised: str) -> str:
    """A normalised text with each run of punctuation read as a space: the text encoder reads
    the words either side next to each other (``hot-dog`` as ``hot - dog``), so a banned
    phrase is found there too (``hot-dog``, ``hot, dog``, ``hot™dog`` read ``hot dog``). As in
    ``normalise``, a space beside a digit is none (``r-34`` reads ``r34``)."""
    return _SPACE_BESIDE_NON_LETTER.sub("", _SPACES.sub(" ", _PUNCTUATION_RUN.sub(" ", normalised)))


def _number_as_digit(char: str) -> str:
    return "0" if unicodedata.category(char)[0] == "N" and not char.isdecimal() else char


def find_banned_rendering(texts: Iterable[Rendering], banned: Collection[str]) -> str | None:
    """The first banned word or phrase some variant of ``texts`` contains as a whole word (not
    inside a longer run of letters), or None; both sides are normalised (``normalise``), the
    texts also split where the tokenizer splits them (``_read_apart``). A word or phrase of
    letters, digits and spaces is looked for with punctuation read as spaces (``as_words``),
    one with punctuation as written. ``BannedWords``: its server's own words are looked for
    first, then the operator's, each list by its own matcher.

    A rendering is literal text and choices between renderings (``schedule.renderings``);
    every combination of choices is checked without listing them: only each variant's last
    characters (the longest banned word's length, and one before it) are carried along,
    so ``[c|d]at`` costs two short strings, not every full text.
    """
    words = banned if isinstance(banned, BannedWords) else BannedWords(frozenset(banned))
    matchers = [
        matcher
        for matcher in (_matcher_for(words.own), operator_matcher(words.operator))
        if matcher is not None
    ]
    read = list(texts) if len(matchers) > 1 else texts  # read once by each matcher
    return next(
        (found for matcher in matchers if (found := matcher.first_banned(read)) is not None),
        None,
    )


class BannedWords(AbstractSet[str]):
    """The words refused in one place, as a set: its server's own list (``own``) and the
    operator's (``EASEL_BANNED_WORDS_FILE``, ``operator``), kept apart so that each list has
    a matcher of its own (``find_banned_rendering``). The operator's, of up to tens of
    thousands of words, is built once for every server; a server's is kept by its own list
    alone (``MATCHERS_KEPT``), so no server's list, nor how many servers are active, builds
    or holds the operator's words again."""

    __slots__ = ("operator", "own")

    def __init__(
        self, own: frozenset[str] = frozenset(), operator: frozenset[str] = frozenset()
    ) -> None:
        self.own = own
        self.operator = operator

    def __contains__(self, word: object) -> bool:
        return word in self.own or word in self.operator

    def __iter__(self) -> Iterator[str]:
        yield from self.operator
        yield from self.own - self.operator

    def __len__(self) -> int:
        return len(self.operator) + len(self.own - self.operator)

    def __bool__(self) -> bool:
        return bool(self.own or self.operator)

    def __le__(self, other: AbstractSet[object]) -> bool:
        """Whether no word here is missing from ``other``: one server's words of two moments
        share the operator's set, so only the server's own are compared (each edit of a
        job's previews asks; ``cogs.results.progress``)."""
        if isinstance(other, BannedWords) and other.operator is self.operator:
            return all(word in other for word in self.own)
        return super().__le__(other)


def _matcher(banned: frozenset[str]) -> _Matcher | None:
    """The matcher of ``banned`` (None: no word left once normalised)."""
    words = {normalise(word).strip(): word for word in sorted(banned, reverse=True)}
    words.pop("", None)
    return _Matcher(words) if words else None


# Servers' lists whose matchers are kept, of those read last (each list one set until it
# changes: ``GuildPolicy``), keyed by a server's own words only. Building one normalises and
# compiles every word: each prompt paid it (5,000 words: 0.32 s a /imagine), the read
# itself a few ms. A matcher of ``BANNED_WORDS_PER_SERVER`` words of the longest takes 0.65 MiB
# (RSS; of 4 to 12 letters, 0.5 MiB), so all kept take at most 170 MiB, and lists of tens of
# words a few MiB. Past this many active lists, a prompt pays its own list's build (100
# words: 3 ms; 1,000: about 0.1 s), never the operator's (5,000 words: 0.3 s).
MATCHERS_KEPT = 256
_matcher_for = functools.lru_cache(maxsize=MATCHERS_KEPT)(_matcher)
# The operator's words: one list for the process (read at start), its matcher built once and
# kept (``operator_matcher``); a server's list never evicts it. One build at a time: a
# prompt read during the start's build waits for it, rather than building the same again.
_operator_matcher_for = functools.lru_cache(maxsize=1)(_matcher)
_operator_build = threading.Lock()


def operator_matcher(banned: frozenset[str]) -> _Matcher | None:
    """The matcher of the operator's words (``EASEL_BANNED_WORDS_FILE``), built once and kept:
    the start builds it ahead of the first prompt, which finds it kept. Blocking (20,000
    words: about 1.5 s): at the start, on a thread of its own."""
    with _operator_build:
        return _operator_matcher_for(banned)


class TooManyCombinations(UserError):
    """A text whose choices end in more ways than ``MAX_CHECKED_ENDINGS``: not checked."""

    def __init__(self) -> None:
        super().__init__(
            "This prompt has too many [a|b] and [from:to:when] combinations to check against "
            f"the server's banned words (more than {MAX_CHECKED_ENDINGS:,}); simplify it."
        )


class _Banned(Exception):
    def __init__(self, word: str) -> None:
        self.word = word


@dataclass
class _Sequence:
    """A rendering being read: its parts, the next one's index, the endings so far."""

    parts: Rendering
    start: frozenset[_Ending]
    next: int = 0
    endings: frozenset[_Ending] = field(init=False)

    def __post_init__(self) -> None:
        self.endings = self.start


@dataclass
class _Choice:
    """A choice being read: its options, the next one's index, the endings they reached."""

    options: tuple[Rendering, ...]
    start: frozenset[_Ending]
    next: int = 0
    reached: set[_Ending] = field(default_factory=set)


@dataclass(frozen=True)
class _WholeWord:
    """A banned word as normalised, found only where it is no part of a longer word
    (``_whole_word``): ``first`` and ``last``, its edge letters that a letter beside them may
    continue (None: nothing does)."""

    word: str
    first: str | None
    last: str | None

    def end(self, buffer: str, start: int) -> int | None:
        """Where the first whole-word match at or after ``start`` ends; None: none. A match at
        the buffer's end is whole: what follows is not read yet (``_Matcher.check``)."""
        at = buffer.find(self.word, start)
        while at >= 0:
            end = at + len(self.word)
            joined_before = at > 0 and _continues(buffer[at - 1], self.first)
            joined_after = end < len(buffer) and _continues(buffer[end], self.last)
            if not (joined_before or joined_after):
                return end
            at = buffer.find(self.word, at + 1)
        return None


def _whole_word(word: str) -> _WholeWord:
    """``word`` not inside a longer run of letters: a letter at its edge has none of a spaced
    script beside it (an edge that is no letter is a word boundary itself, even with no space
    beside it). An edge letter of a script written without spaces (``_UNSPACED_SCRIPT``) is
    matched inside a run too: ``黒猫`` holds ``猫``, as its tokens do. So is a last letter in
    Hangul with letters after it: Korean writes a noun's particles onto it (``고양이가``, whose
    tokens start as ``고양이``'s do), though it spaces its words (``검은고양이`` holds none).
    A letter of another script ends a word too (``_continues``): ``жnaked`` holds ``naked``."""
    first = word[0] if _spaced_letter(word[0]) else None
    ends_open = _HANGUL.match(word[-1]) is not None or not _spaced_letter(word[-1])
    return _WholeWord(word, first, None if ends_open else word[-1])


def _spaced_letter(char: str) -> bool:
    """A letter of a script written with spaces (a switch to a script written without them, as
    in ``黒いcat``, ends a word)."""
    return re.match(_LETTER, char) is not None and _UNSPACED_SCRIPT.match(char) is None


@functools.lru_cache(maxsize=4096)  # the characters beside a banned word's matches
def _continues(char: str, edge: str | None) -> bool:
    """Whether ``char`` beside a word's ``edge`` letter continues the word: a letter of a
    spaced script, and of the edge's own script where both name one (``_script``). CLIP's
    tokenizer keeps a word's own tokens beside a letter of another script: ``жnaked`` gives
    the text encoder ``naked``'s (so do all but one of 126,765 letters before it)."""
    if edge is None or not _spaced_letter(char):
        return False
    scripts = {_script(char), _script(edge)}
    return len(scripts) == 1 or "" in scripts


def _script(letter: str) -> str:
    """A letter's script, as its Unicode name starts (``LATIN``, ``CYRILLIC``, ``GREEK``,
    ``HANGUL``); empty for a modifier letter, which several scripts share: it continues a word
    of any script, as it did before scripts counted. A letter with no name here (the 6,145
    Tangut ideographs, to Python 3.11) is a script of its own, continuing only another such
    letter: ``𗀀naked`` gives the text encoder ``naked``'s tokens as ``жnaked`` does."""
    script = unicodedata.name(letter, _UNNAMED).split(" ", 1)[0]
    return "" if script == "MODIFIER" else script


# A variant's last characters as each of the matcher's forms reads them.
_Ending = tuple[str, ...]
# A banned word as normalised, where it is whole (``_whole_word``), and the word as banned.
_Search = tuple[str, _WholeWord, str]


@dataclass(frozen=True)
class _Form:
    """One way of reading the texts (split where the tokenizer splits, or as ``normalise``
    joins; punctuation as written, or as spaces) and the banned words looked for in it."""

    split: bool
    words: bool
    patterns: tuple[_Search, ...]

    def read(self, tail: str, text: str) -> str:
        """``text`` after ``tail`` (already read in this form)."""
        normal = normalise(tail + (_read_apart(text) if self.split else text))
        return as_words(normal) if self.words else normal


class _Matcher:
    """Banned words over renderings, carrying each variant's ending along."""

    def __init__(self, words: dict[str, str]) -> None:
        # By (punctuation as spaces, split): the split forms look for a word's marks apart.
        patterns: dict[tuple[bool, bool], list[_Search]] = {
            (spaced, split): [] for spaced in (False, True) for split in (False, True)
        }
        for word, original in sorted(words.items()):
            spaced = _WORDS.fullmatch(word) is not None
            split_word = _marks_apart(original) or word
            patterns[spaced, False].append((word, _whole_word(word), original))
            patterns[spaced, True].append((split_word, _whole_word(split_word), original))
        # Each joined form just before its split twin (``_read``).
        self.forms = tuple(
            _Form(split, spaced, tuple(patterns[spaced, split]))
            for spaced in (False, True)
            if patterns[spaced, False]
            for split in (False, True)
        )
        self.keep = max(len(search[0]) for searches in patterns.values() for search in searches) + 1

    @staticmethod
    def check(form: _Form, buffer: str, *, at_end: bool = False) -> None:
        """Raise ``_Banned`` for a whole-word match after the buffer's first character (its
        context) that ends before its last one, or anywhere once the text has ended."""
        for word, whole_word, original in form.patterns:
            if word not in buffer:  # a small part of a search's cost; a match needs it
                continue
            end = whole_word.end(buffer, 1)
            if end is not None and (at_end or end < len(buffer)):
                raise _Banned(original)

    def endings(self, start: frozenset[_Ending], rendering: Rendering) -> frozenset[_Ending]:
        """The endings of every variant after ``rendering``, checked on the way. Renderings
        share their parts (a prefix both kept and dropped by a choice, nested): each part is
        read once for each set of endings it follows, and with a stack of our own, so neither
        time nor depth grows with the number of paths through it."""
        read: dict[tuple[int, frozenset[_Ending]], frozenset[_Ending]] = {}
        stack: list[_Sequence | _Choice] = [_Sequence(rendering, start)]
        result = start
        while stack:
            frame = stack[-1]
            if isinstance(frame, _Choice):
                if frame.next == len(frame.options):
                    stack.pop()
                    result = self._bounded(frame.reached)
                    read[id(frame.options), frame.start] = result
                    parent = stack[-1]  # a choice is always a sequence's part
                    assert isinstance(parent, _Sequence)
                    parent.endings = result
                    continue
                option = frame.options[frame.next]
                frame.next += 1
                known = read.get((id(option), frame.start))
                if known is None:
                    stack.append(_Sequence(option, frame.start))
                else:
                    frame.reached |= known
                continue
            if frame.next == len(frame.parts):
                stack.pop()
                read[id(frame.parts), frame.start] = frame.endings
                result = frame.endings
                if stack:
                    parent = stack[-1]
                    assert isinstance(parent, _Choice)
                    parent.reached |= result
                continue
            part = frame.parts[frame.next]
            frame.next += 1
            checkpoint()  # a long text's parts add up to seconds nobody may wait for
            if isinstance(part, str):
                frame.endings = self._after(frame.endings, part)
                continue
            known = read.get((id(part), frame.endings))
            if known is None:
                stack.append(_Choice(part, frame.endings))
            else:
                frame.endings = known
        return result

    def _after(self, endings: frozenset[_Ending], text: str) -> frozenset[_Ending]:
        """Each ending followed by ``text``, checked. A checkpoint per ending: one long part
        after up to ``MAX_CHECKED_ENDINGS`` endings reads for seconds (15 s), each
        ending milliseconds (4,000 characters: 8 ms; a stored text's 16,000: 25 ms)."""
        buffers = set()
        for ending in endings:
            checkpoint()
            buffers.add(self._read(ending, text))
        for buffer in buffers:
            checkpoint()
            self._check_forms(buffer)
        return self._bounded({tuple(read[-self.keep :] for read in buffer) for buffer in buffers})

    def _check_forms(self, buffer: _Ending, *, at_end: bool = False) -> None:
        for index, (form, read) in enumerate(zip(self.forms, buffer, strict=True)):
            if not (form.split and read == buffer[index - 1]):  # read apart as joined
                self.check(form, read, at_end=at_end)

    def _read(self, ending: _Ending, text: str) -> _Ending:
        """``text`` after ``ending``, in each form. Read apart or joined, an ASCII text reads
        alike (it has no invisible or NFKC-folded character)."""
        reads: list[str] = []
        for index, (form, tail) in enumerate(zip(self.forms, ending, strict=True)):
            joined = index - 1  # the form before a split one is its joined twin
            if form.split and ending[joined] == tail and (tail + text).isascii():
                reads.append(reads[joined])
            else:
                reads.append(form.read(tail, text))
        return tuple(reads)

    @staticmethod
    def _bounded(endings: set[_Ending] | frozenset[_Ending]) -> frozenset[_Ending]:
        if len(endings) > MAX_CHECKED_ENDINGS:
            raise TooManyCombinations
        return frozenset(endings)

    def at_end(self, endings: frozenset[_Ending]) -> None:
        for ending in endings:
            checkpoint()
            self._check_forms(self._read(ending, _EDGE), at_end=True)

    def first_banned(self, texts: Iterable[Rendering]) -> str | None:
        """The first of this matcher's words some variant of ``texts`` renders; None: none."""
        start = frozenset({(_EDGE,) * len(self.forms)})
        try:
            for text in texts:
                self.at_end(self.endings(start, text))
        except _Banned as banned_word:
            return banned_word.word
        return None


def check_channel(
    channel_id: int | None, allowed_channels: Collection[int], parent_id: int | None = None
) -> None:
    """Raise ``UserError`` when Easel is not enabled in this channel (empty list: all are). A
    thread or a forum post (``parent_id``: the channel it belongs to) is enabled with that
    channel, as its members expect."""
    if (
        allowed_channels
        and channel_id not in allowed_channels
        and parent_id not in allowed_channels
    ):
        where = ", ".join(f"<#{channel}>" for channel in sorted(allowed_channels))
        raise UserError(f"Easel is not enabled in this channel; use it in {where}.", Reason.CHANNEL)


AGE_RESTRICTED_PICTURE = (
    "That picture comes from an age-restricted channel (or one I no longer see); use it or "
    "show it again only in an age-restricted channel."
)


def check_age_restriction_kept(*, source_age_restricted: bool, here_age_restricted: bool) -> None:
    """A picture from an age-restricted channel stays in those: what Easel makes of it or shows
    of it is posted where the member asks (``/vary message:``, ``--sref``, buttons, ``/show``)."""
    if source_age_restricted and not here_age_restricted:
        raise UserError(AGE_RESTRICTED_PICTURE, Reason.NSFW)


def check_repost(
    *, made_age_restricted: bool, here_age_restricted: bool, nsfw_policy: NsfwPolicy
) -> None:
    """A result posted again for others to see (``/show``) keeps the rules it was made
    under: one made in an age-restricted channel (or one no longer known), or where the
    server renders only in those, is posted again only in an age-restricted channel."""
    check_age_restriction_kept(
        source_age_restricted=kept_in_age_restricted_channels(
            made_age_restricted=made_age_restricted, nsfw_policy=nsfw_policy
        ),
        here_age_restricted=here_age_restricted,
    )


AGE_RESTRICTED_STAYS_IN_THE_SERVER = (
    "This picture was made in an age-restricted channel (or one I no longer see), or this "
    "server keeps its pictures in age-restricted channels; it stays in the server, so I do not "
    "send it to direct messages."
)


def kept_in_age_restricted_channels(*, made_age_restricted: bool, nsfw_policy: NsfwPolicy) -> bool:
    """Whether a result keeps the age restriction it was made under: made in an age-restricted
    channel (or one no longer known), or where the server renders only in those. Such a result
    is shown again only in an age-restricted channel (``check_repost``) and never goes to a
    direct message, which no server age-gates (``cogs.results.copies``)."""
    return made_age_restricted or nsfw_policy is NsfwPolicy.AGE_RESTRICTED_ONLY


WITHDRAWN_PICTURE = (
    "A moderator removed this picture from the channel; it is not shown or used again. "
    "Make a new one with /imagine."
)
# Withdrawn by Easel at delivery (``History.withhold_job``): no moderator acted.
# A result withheld at delivery, as /show, a moderator's list and a DM whose recorded reason is
# lost say it: no cause named, since the reason recorded (``withheld_why``) is its maker's alone
# (told by DM and in the maker's own /history) and many are not a rule changed (Easel removed,
# a thread Easel cannot see...).
WITHHELD_BECAUSE = "Easel withheld it when it was finished"
WITHHELD_PICTURE = (
    f"This picture was never posted: {WITHHELD_BECAUSE}, and it was not counted against its "
    "maker's quota. It is not shown or used again unless a server admin restores it; make a "
    "new one with /imagine."
)
# The same in direct messages, whose rules are the operator's: no server admin restores it.
WITHHELD_IN_DIRECT_MESSAGES = (
    "This picture was never posted: Easel's rules for direct messages changed after it was "
    "queued (or it could not be checked against them), so it was withheld and not counted "
    "against your quota. It is not shown or used again; make a new one with /imagine."
)
BANNED_SINCE = (
    "This picture's prompt uses a word this server has since banned; it is not shown or used "
    "again. Make a new one with /imagine."
)

# Not the member's fault: the texts passed when they were typed, one at a time.
STORED_TOO_LONG = (
    "This picture's texts are too long to check against the server's banned words now, so it "
    "is not shown or used; make a new one with /imagine."
)


@contextlib.contextmanager
def as_the_stored_pictures_refusal() -> Iterator[None]:
    """A refusal of a stored picture's prompt under the server's rules of now, raised inside,
    given as the picture's own, naming no word (the member may not have typed that prompt):
    a banned word is ``BANNED_SINCE``; too many combinations to read, ``STORED_TOO_LONG``
    (they passed when typed, under the words of then)."""
    try:
        yield
    except TooManyCombinations:
        raise UserError(STORED_TOO_LONG, Reason.UNCHECKED) from None
    except UserError as refused:
        if refused.reason is Reason.BANNED_WORD:
            raise UserError(BANNED_SINCE, Reason.BANNED_WORD) from None
        raise


def each_once(texts: Iterable[object]) -> tuple[str, ...]:
    """The texts that are strings with more than blanks, each once, in order."""
    return tuple(dict.fromkeys(t for t in texts if isinstance(t, str) and t.strip()))


@dataclass(frozen=True)
class FixFacesDraws:
    """What a stored job's fix-faces prompt is drawn again from, as each picture's faces pass
    rendered it (``fix_faces_prompts_drawn``): the job's options (the prompt as typed, its
    recorded draws) and its pictures' seeds. Drawing parses the prompt (seconds for a heavy
    one), so only the banned-word read does it (``check_banned_since``: on a prompt reader's
    thread, within the stored check's budget), after the reader's own checks of who asks (a
    click's, /show's), not where a stored job is read (``History.job``)."""

    options: Mapping[str, object]
    seeds: tuple[object, ...]


@dataclass(frozen=True)
class ConditioningTexts:
    """What a stored job's pictures were conditioned on, each text once, apart as the engine
    reads them: ``prompts`` (prompts and a fix-faces prompt, whose extra-network tags it
    applies, not reads) and ``negatives`` (whose tags it reads as plain words); ``fix_faces``:
    the fix-faces prompt still to draw for each picture (``with_fix_faces_drawn``; None:
    none), a prompt too once drawn."""

    prompts: tuple[str, ...] = ()
    negatives: tuple[str, ...] = ()
    fix_faces: FixFacesDraws | None = None

    def __bool__(self) -> bool:
        return bool(self.prompts or self.negatives or self.fix_faces)

    def without(self, other: ConditioningTexts) -> ConditioningTexts:
        """These texts less ``other``'s, each kind apart; the fix-faces prompt still to draw
        is kept (what it draws is read whether or not ``other`` has it too)."""
        return ConditioningTexts(
            tuple(text for text in self.prompts if text not in other.prompts),
            tuple(text for text in self.negatives if text not in other.negatives),
            self.fix_faces,
        )

    def with_fix_faces_drawn(self) -> ConditioningTexts:
        """These texts with the fix-faces prompt drawn for each picture among the prompts."""
        if self.fix_faces is None:
            return self
        drawn = fix_faces_prompts_drawn(self.fix_faces.options, self.fix_faces.seeds)
        return ConditioningTexts(each_once([*self.prompts, *drawn]), self.negatives)


def conditioning_texts(request: dict[str, Any], infotexts: list[str]) -> ConditioningTexts:
    """A stored job's prompt and fix-faces prompt as typed and each picture's prompt as
    rendered (wildcards drawn); its negative prompt as typed and as each picture rendered it.
    Read from the journal's texts (a fraction of a millisecond a picture); the fix-faces
    prompt as each picture rendered it is left to draw (``ConditioningTexts.fix_faces``) by
    the banned-word check, which alone needs it, within its budget, after the checks of who
    asks (the draw parses the prompt: seconds for a heavy one)."""
    options = request.get("options") or {}
    rendered = [parse_infotext(infotext) for infotext in infotexts]
    face_prompt = options.get(FIX_FACES_PROMPT)
    prompts = [request.get("prompt"), face_prompt]
    negatives = [request.get("negative_prompt")]
    for prompt, negative, _ in rendered:
        prompts.append(prompt)
        negatives.append(negative)
    seeds = tuple(params.get("Seed") for *_, params in rendered)
    fix_faces = FixFacesDraws(options, seeds) if each_once([face_prompt]) and seeds else None
    return ConditioningTexts(each_once(prompts), each_once(negatives), fix_faces)


def fix_faces_prompts_drawn(options: Mapping[str, object], seeds: Iterable[object]) -> list[str]:
    """A stored job's fix-faces prompt as the faces pass rendered it for each picture's seed:
    its ``{a|b}`` and ``__name__`` drawn as the bot recorded them where the job was planned
    (``WILDCARD_DRAWS_OPTION``, by text and seed, as the engine reads them). A job queued
    before draws were recorded: ``{a|b}`` drawn at the seed, wildcards as typed (the engine
    drew those from its own folder). A seed the prompt cannot be drawn at rendered nothing.
    The prompt is read as the engine reads it (``FaceOptions``: trimmed), as its draws were
    recorded."""
    try:
        prompt = FaceOptions.from_options(dict(options)).prompt
        draws = PlannedDraws.of(dict(options))
    except (RenderInputError, PromptError):  # the engine refused the job too: no picture
        return []
    if prompt is None:
        return []
    drawn = []
    for seed in seeds:
        if isinstance(seed, int):
            with contextlib.suppress(PromptError):
                drawn += [expansion.text for expansion in expand_prompt(prompt, seed, draws)]
    return drawn


def check_banned_since(texts: ConditioningTexts, banned: Collection[str]) -> None:
    """A stored picture is shown again or made into a new job only while none of ``texts``
    (what it was conditioned on, its fix-faces prompt drawn for each picture here) renders a
    word the server bans now, read as a new prompt's text is (``[a|b]``, ``[from:to:when]``
    and attention resolved; a prompt's extra-network tags left out, a negative prompt's read
    as words, as ``build_plan`` does). The refusal never names the word: the member may not
    have typed it."""
    texts = texts.with_fix_faces_drawn()
    texts_read = itertools.chain(
        (renderings(extract_extra_networks(text)[0]) for text in texts.prompts),
        (renderings(text) for text in texts.negatives),
    )
    with as_the_stored_pictures_refusal():
        found = find_banned_rendering(texts_read, banned)
    if found is not None:
        raise UserError(BANNED_SINCE, Reason.BANNED_WORD)


# A banned word or phrase, as /easel-admin banned-word and the operator's file accept it: as
# typed and as matched (``banned_word_too_long``).
BANNED_WORD_MAX_LENGTH = 100
# A server's banned words and phrases at most (/easel-admin banned-word; not the operator's
# file): every /imagine there reads them all, and each list is a matcher built and kept
# (``MATCHERS_KEPT``). Lists of words to refuse run to hundreds; 5,000 words cost 0.32 s a
# prompt before matchers were kept. A list longer from before keeps its words until
# removed; none is added while it holds this many.
BANNED_WORDS_PER_SERVER = 1_000


def banned_word_too_long(word: str) -> str | None:
    """Why ``word`` is too long to ban (None: it is not): over ``BANNED_WORD_MAX_LENGTH``
    characters as typed or in any form the matcher looks for it (``normalise``; its marks
    apart, ``_marks_apart``). NFKC spells some characters out (one ``\ufdfa`` reads as 18),
    each combining mark read apart is one character (a variation selector too, which
    ``normalise`` drops), and every ending of a prompt's variants carries the longest form's
    length: one word of 100 of those made a prompt with 10 choices 20 times dearer to read."""
    typed, matched, apart = len(word), len(normalise(word).strip()), len(_marks_apart(word))
    if max(typed, matched, apart) <= BANNED_WORD_MAX_LENGTH:
        return None
    if typed >= max(matched, apart):
        length = f"{typed:,} characters long"
    elif matched >= apart:
        length = (
            f"{matched:,} characters long as prompts are compared (some characters, such as "
            "U+FDFA, read as several letters)"
        )
    else:
        length = (
            f"{apart:,} characters long as prompts are compared (each combining mark, such as "
            "a variation selector, counts as one)"
        )
    return f"is {length}; a banned word or phrase is 1 to {BANNED_WORD_MAX_LENGTH}"


def read_banned_words(text: str) -> frozenset[str]:
    """The operator's banned words (``EASEL_BANNED_WORDS_FILE``): one word or phrase a line,
    stored as an admin's are (trimmed, lower case); blank lines and ``#`` comments skipped.
    ``ValueError`` names the first line too long (``banned_word_too_long``)."""
    words = set()
    for number, line in enumerate(text.splitlines(), start=1):
        word = line.strip().lower()
        if not word or word.startswith("#"):
            continue
        if (too_long := banned_word_too_long(word)) is not None:
            raise ValueError(f"line {number} {too_long}")
        words.add(word)
    return frozenset(words)


def model_allowed(name: str, allowed_models: Collection[str]) -> bool:
    """Whether a server's model list lets ``name`` be used (an empty list allows all)."""
    return not allowed_models or name in allowed_models


def default_model_here(
    server_default: str | None,
    operator_default: str | None,
    allowed_models: Collection[str],
    installed: Collection[str] | None = None,
) -> str | None:
    """The model a request that names none renders with: the server's default, else the
    operator's (``EASEL_DEFAULT_MODEL``), the first of them the server's list allows; a server
    that allows some models only and neither is among them gets its first allowed by name.
    None: no list and no default (the engine takes the first model installed). A request that
    names no model is never rendered with one the server left out. ``installed`` (None: not
    known): a default or listed model removed since is passed over (the first listed still
    stands when none is installed: its refusal names what may be used)."""

    def usable(name: str) -> bool:
        return model_allowed(name, allowed_models) and (installed is None or name in installed)

    for candidate in (server_default, operator_default):
        if candidate is not None and usable(candidate):
            return candidate
    return min(filter(usable, allowed_models), default=min(allowed_models, default=None))


def model_left_out(models: Iterable[str | None], allowed_models: Collection[str]) -> str | None:
    """The first of ``models`` (a request's model and refiner: a refiner is a model too, the
    list governs it as well; ``models_rendered``) the server's model list leaves out; None:
    none."""
    named = (name for name in models if name is not None)
    return next((name for name in named if not model_allowed(name, allowed_models)), None)


def models_rendered(request: RenderRequest) -> list[str | None]:
    """Every model a job renders with: its model, its refiner, and a /compare's cells'."""
    models = [request.model, request.options.get("refiner")]
    if is_comparison(request):
        models.extend(cell.model for cell in cell_requests(request))
    return models


def check_request(
    *,
    model: str | None,
    channel_id: int | None,
    channel_is_age_restricted: bool,
    allowed_channels: Collection[int],
    allowed_models: Collection[str],
    nsfw_policy: NsfwPolicy,
    refiner: str | None = None,
    usable_models: Collection[str] | None = None,
    parent_id: int | None = None,
) -> None:
    """Raise ``UserError`` when the guild's rules refuse this request; empty lists allow all.
    Banned words are looked for in what the prompt renders: ``bot.policy.prompt_safety``.
    ``usable_models``: what a model refusal names, the listed models installed (None: the
    list as it is). ``parent_id``: a thread's channel (``check_channel``)."""
    check_channel(channel_id, allowed_channels, parent_id)
    if nsfw_policy is NsfwPolicy.AGE_RESTRICTED_ONLY and not channel_is_age_restricted:
        raise UserError(
            "This server allows generation only in age-restricted channels; use one of those.",
            Reason.NSFW,
        )
    if (left_out := model_left_out((model, refiner), allowed_models)) is not None:
        usable = allowed_models if usable_models is None else usable_models
        raise unavailable_here("model", left_out, usable, "/models")
