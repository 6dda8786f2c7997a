"""What members and moderators read of a member's words is what the model reads: no direction
control turns a prompt around or runs into Easel's words after it, no line break but "\\n"
(none at all in a prompt) reaches Discord, padding pushes no word past the cut, and a cut
never splits what shows as one character (a letter and its mark, an emoji family, a flag)."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from bot.history import HistoryLine
from bot.presets import as_code
from bot.shown_text import shortened
from cogs.common import MESSAGE_LIMIT, quoted, shown_prompt, within_message_limit
from cogs.info import describe_infotext
from cogs.job_lines import history_line_text
from inference.prompts.tokenizer import default_tokenizer

_DIRECTION_CONTROLS = set(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_LINE_BREAKS = set("\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
_ZWJ = "\u200d"
_FAMILY = "👩\u200d👩\u200d👧"
_REGIONAL = range(0x1F1E6, 0x1F200)

# Letters, spaces, markdown (no link: what is kept of a cut text is then the start of the
# whole), direction controls, line breaks and what joins the character before it.
_PIECES = ["a", "é", " ", "  ", "\n", "_", "*", "\u202e", "\u2067", "\u200f", "\u2069"]
_PIECES += ["\u2028", "\u2029", "\r", "\x85", "\x0b", "\x0c", "\x1e"]
_PIECES += [_ZWJ, "\u0301", "\ufe0f", "👩", "🏻", "🇫", "🇷", "\U000e0067", _FAMILY]
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=120).map("".join)
_UNLIMITED = 10**6


def _joins_previous(char: str) -> bool:
    """A character that shows as part of the one before it."""
    return unicodedata.category(char) in ("Mn", "Mc", "Me") or char in (
        _ZWJ,
        "🏻",
        "\U000e0067",
    )


def _cut_whole(kept: str, whole: str) -> None:
    """``kept`` (a cut's start, its ellipsis left off) ends where a character as shown ends,
    or inside a run of more marks and joiners than any character holds (``"e\u0301" * 40``)."""
    assert whole.startswith(kept), (kept, whole)
    joined = len(kept) - len(kept.rstrip("".join(filter(_joins_previous, set(kept)))))
    if kept and joined < 32:
        # A joiner joins an emoji after it, not a letter ("a\u200d" | "a").
        emoji_next = unicodedata.category(whole[len(kept)]) == "So"
        assert not (kept.endswith(_ZWJ) and emoji_next), ascii(kept)
        assert not _joins_previous(whole[len(kept)]), ascii((kept, whole))
        flags = len(kept) - len(kept.rstrip("".join(map(chr, _REGIONAL))))
        assert flags % 2 == 0 or ord(whole[len(kept)]) not in _REGIONAL, ascii(kept)


@given(_TEXT, st.integers(min_value=2, max_value=150), st.booleans())
def test_a_shown_text_sets_no_direction_breaks_no_line_and_splits_no_character(
    text: str, limit: int, prompt: bool
) -> None:
    show = shown_prompt if prompt else quoted
    whole, shown = show(text, _UNLIMITED), show(text, limit)
    assert len(shown) <= limit
    assert not _DIRECTION_CONTROLS & set(shown) and not _LINE_BREAKS & set(shown), ascii(shown)
    if prompt:
        assert "\n" not in shown and "  " not in shown, ascii(shown)
    if shown != whole:
        assert shown.endswith("…")
        _cut_whole(shown[:-1], whole)


@given(_TEXT, st.integers(min_value=1, max_value=40))
def test_a_shortened_text_splits_no_character(text: str, room: int) -> None:
    shown = shortened(text, room)
    assert len(shown) <= room
    if shown != text:
        _cut_whole(shown[:-1], text)


# What shows as blank or as nothing, but is no whitespace to ``str.split``: the braille blank,
# the Hangul fillers, format characters (U+200B, the soft hyphen, the word joiner, the byte
# order mark, the Mongolian vowel separator, a tag), the joiners, the combining grapheme
# joiner, and marks (on a blank, or a run of them on a letter).
_PADDING = ["\u2800", "\u3164", "\u115f", "\u1160", "\uffa0", "\u200b", "\u00ad", "\u2060"]
_PADDING += ["\ufeff", "\u180e", "\U000e0067", _ZWJ, "\u200c", "\u034f", "\u0301", "\ufe0f"]
_PADDING += [" ", "\n", "\u3000"]


@given(st.lists(st.sampled_from(_PADDING), max_size=2000).map("".join), st.booleans())
def test_no_padding_pushes_a_later_word_past_the_cut(padding: str, spaced: bool) -> None:
    """However a prompt is padded with these, its later words show within a short caption:
    as many characters as its words, three marks, a space and an ellipsis."""
    words = "a cute kitten", "in a bloody knife fight"
    shown = shown_prompt(words[0] + padding + " " * spaced + words[1], 42)
    assert shown.endswith("knife fight"), ascii(shown)


def test_padding_hides_no_word_of_a_prompt() -> None:
    """The text encoder reads 1,600 spaces as one: so does a reader of the caption."""
    padded = "a cute kitten" + " " * 1600 + "in a bloody\n\n\n\u2029knife fight"
    tokens = default_tokenizer().encode
    assert tokens(padded) == tokens("a cute kitten in a bloody knife fight")
    assert shown_prompt(padded, 1500) == "a cute kitten in a bloody knife fight"
    for blank in ("\u2800", "\u3164", "\u200b", "\u034f"):  # review R1: each, 1,600 times
        padded = "a cute kitten" + blank * 1600 + " in a bloody knife fight"
        assert tokens("knife")[0] in tokens(padded)  # the model reads on past it
        assert shown_prompt(padded, 100) == "a cute kitten in a bloody knife fight", ascii(blank)


def test_a_prompt_shows_its_emoji_and_its_letters_marks() -> None:
    """Nothing a character is made of is taken for padding: an emoji sequence, a flag, a
    subdivision flag, a variation selector, a joiner inside a word; marks beyond three on a
    letter are not shown."""
    family, england = _FAMILY, "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"
    text = f"{family} 🇫🇷 {england} ❤\ufe0f می\u200cخواهم e\u0301\u0302\u0303"
    assert shown_prompt(text + "\u0304" * 50, 1500) == text


def test_a_direction_override_shows_the_words_in_the_order_the_model_reads_them() -> None:
    assert shown_prompt("\u202enaked woman", 1500) == "naked woman"
    assert quoted("\u2067a\u2069 b\u200f\u2028c\r\nd", 100) == "a b c \nd"


def test_a_moderators_job_line_keeps_a_prompt_on_its_line_and_its_direction_to_itself() -> None:
    """``/easel-mod jobs`` puts Easel's link after the line: nothing of the prompt reaches it."""
    line = HistoryLine(
        job_id="0123456789abcdef",
        created_at=1.0,
        status="done",
        prompt="\u202enaked" + " " * 200 + "woman\u2029\u2066x",
        image_count=1,
        withheld=False,
        withdrawn=False,
    )
    text = history_line_text(line)
    assert text.endswith("— naked woman x"), ascii(text)


def test_a_cut_keeps_an_emoji_family_and_a_letters_mark_whole() -> None:
    assert quoted("x" * 8 + _FAMILY * 3, 12) == "x" * 8 + "…"
    assert shortened("ab" + "e\u0301" * 5, 4) == "ab…"
    assert shortened("🇫🇷🇩🇪🇮🇹", 4) == "🇫🇷…"
    assert as_code("n\u0303" * 400) == "`" + "n\u0303" * 149 + "…`"


def test_a_message_cut_in_its_middle_splits_no_character() -> None:
    message = "e\u0301" * 1500
    shown = within_message_limit(message)
    assert len(shown) <= MESSAGE_LIMIT
    head, tail = shown.split("…")
    assert head.endswith("e\u0301") and tail.startswith("e\u0301"), ascii(shown[990:1010])


def test_a_run_of_joiners_or_marks_is_cut_in_it_not_lost_whole() -> None:
    """A joiner joins an emoji to what is before it, not a letter; a cut backs up past no more
    than any character holds: a message of such a run keeps nearly all its room (review R1)."""
    for message in ("a\u200d" * 3000, "\u200d" * 3000, "e" + "\u0301" * 3000):
        shown = within_message_limit(message)
        assert MESSAGE_LIMIT - 64 <= len(shown) <= MESSAGE_LIMIT, ascii(message[:2])
    assert quoted("x" + "a\u200d" * 10, 6) == "xa\u200da\u200d…"
    assert shortened("ab" + _FAMILY, 5) == "ab…"


def test_info_shows_a_padded_prompt_whole_and_the_right_way_round() -> None:
    """``/info`` shows the prompts as the model reads them; the PNG keeps them as typed."""
    infotext = (
        "\u202ea cute kitten" + " " * 2500 + "in a bloody knife fight\n"
        "Negative prompt: \u2067blurry\u2069" + "\n" * 50 + "ugly\n"
        "Steps: 20, Seed: 1, Size: 512x512"
    )
    shown = describe_infotext("picture.png", infotext)
    assert "**Prompt:** a cute kitten in a bloody knife fight\n" in shown, ascii(shown)
    assert "**Negative:** blurry ugly\n" in shown, ascii(shown)
