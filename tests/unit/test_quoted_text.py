"""A member's words quoted in what Easel posts fit Discord's message, however much escaping
they need, and show as typed: no markdown, masked link or link preview of theirs."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from cogs.common import quoted

# Letters, markdown that escaping doubles, and what may sit around it.
_TEXT = st.text(alphabet=st.sampled_from("ab _*~`|>#-\n[]()\\:/"), max_size=300)
_UNLIMITED = 10**6


@given(_TEXT, st.integers(min_value=2, max_value=200))
def test_a_quoted_text_never_outgrows_its_limit(text: str, limit: int) -> None:
    whole = quoted(text, _UNLIMITED)
    shown = quoted(text, limit)
    assert len(shown) <= limit
    if len(whole) <= limit:
        assert shown == whole  # nothing cut
    else:
        assert shown.endswith("…")


def test_underscores_are_escaped_within_the_limit() -> None:
    assert quoted("x_" * 1000, 1500) == "x\\_" * 499 + "x…"


def test_a_quoted_link_shows_no_preview_and_a_masked_one_no_link() -> None:
    """A member's link in a prompt never shows an outside picture under Easel's post."""
    assert (
        quoted("a cat https://evil.example/a_b.png.", 100)
        == "a cat <https://evil.example/a_b.png>."
    )
    assert (
        quoted("[cat](https://evil.example/x.png)", 100) == "\\[cat](<https://evil.example/x.png>)"
    )
    assert (
        quoted("<https://a.example> HTTP://B.EXAMPLE", 100)
        == "<https://a.example> <HTTP://B.EXAMPLE>"
    )
    # A bracket that closes early, or a line between them, leaves nothing bare.
    assert quoted("<https://a.example/x>https://evil.example", 100) == (
        "<https://a.example/x><https://evil.example>"
    )
    assert quoted("<https://a.example\nhttps://evil.example>", 100) == (
        "<<https://a.example>\n<https://evil.example>>"
    )
    assert quoted("<https://https://<>", 100) == "<<https://https://><>"
    cut = quoted("https://evil.example/picture.png", 20)
    assert cut == "<https://evil.exam>…"


_LINK_START = re.compile(r"(?i)https?://(?=[^\s<>]*[a-z0-9])")
_SUPPRESSED = re.compile(r"<[^\s<>]*>")  # what ends there does not run on past it


@given(
    st.lists(
        st.sampled_from(["https://", "HTTP://", "e.x", "/p", "_", "<", ">", " ", "\n", "[", "]("])
    ).map("".join),
    st.integers(min_value=2, max_value=200),
)
def test_no_link_is_left_bare(text: str, limit: int) -> None:
    shown = quoted(text, limit)
    assert len(shown) <= limit
    # What Discord shows without a preview: a link within angle brackets, on one line.
    assert not _LINK_START.search(_SUPPRESSED.sub(" ", shown)), shown


# How Discord reads a message, as far as a member's words could use it: an escape (a backslash
# and the character after it), a link in angle brackets (no markdown within), markdown that
# would change what shows (a style, code, spoiler, masked link; a quote, heading or list at a
# line's start), anything else.
_DISCORD_READS = re.compile(
    r"\\.|<(?:https?|steam)://[^\s>]+>|(?P<line>^[ \t]*[>#-])|(?P<mark>[*_~|`\[])|.",
    re.IGNORECASE | re.MULTILINE | re.DOTALL,
)


def _bare_markdown(shown: str) -> list[str]:
    return [read[0] for read in _DISCORD_READS.finditer(shown) if read["line"] or read["mark"]]


def test_markdown_after_a_link_shows_as_typed() -> None:
    """discord.py's escape took what follows a link up to a space for part of it: a masked
    link or bold right after a ">" stayed live."""
    masked = quoted("https://a.com/>[click](<https://evil.com>)", 200)
    assert masked == "<https://a.com/>>\\[click](<https://evil.com>)"
    assert quoted("https://a.com/>**bold**", 200) == "<https://a.com/>>\\*\\*bold\\*\\*"
    assert quoted(">||x||", 200) == "\\>\\|\\|x\\|\\|"


def test_every_masked_link_and_style_on_a_line_is_escaped() -> None:
    """discord.py escaped the first masked link of a line only, and nothing up to the last."""
    shown = quoted("[a](b) **x** `c` [free](<https://evil.example>)", 200)
    assert shown == "\\[a](b) \\*\\*x\\*\\* \\`c\\` \\[free](<https://evil.example>)"


def test_a_quote_heading_or_list_is_escaped_at_a_line_start_only() -> None:
    assert quoted("> q\n  - item\n### big\n-# small\na > b # c - d", 200) == (
        "\\> q\n  \\- item\n\\### big\n\\-# small\na > b # c - d"
    )


# Links, brackets, markdown and what may sit around them.
_PIECES = ["https://a.b/", "<https://c.d>", "<x:/y>", ">", "<", "**", "||", "`", "_", "~"]
_PIECES += ["[t](", ")", "\\", "\n", " ", "#", "-", "a"]


@given(
    st.one_of(st.lists(st.sampled_from(_PIECES)).map("".join), _TEXT),
    st.integers(min_value=2, max_value=300),
)
def test_no_markdown_of_a_member_is_left_bare(text: str, limit: int) -> None:
    shown = quoted(text, limit)
    assert len(shown) <= limit
    assert _bare_markdown(shown) == [], shown


def test_a_link_keeps_out_the_parenthesis_it_did_not_open() -> None:
    assert quoted("(see https://x.org/a)", 100) == "(see <https://x.org/a>)"
    assert quoted("https://x.org/Foo_(bar)", 100) == "<https://x.org/Foo_(bar)>"


def test_what_discord_shows_as_a_pill_is_shown_as_typed() -> None:
    """A mention (member, role, channel), a command, a custom emoji or a timestamp: no ping
    (``AllowedMentions.none()``), and no pill either (a fake "@Moderators" in Easel's voice)."""
    typed = "<@1> <@!2> <@&3> <#4> </imagine:5> <:e:6> <a:e:7> <t:8:f> 1 < 2"
    assert quoted(typed, 200) == (
        "\\<@1> \\<@!2> \\<@&3> \\<#4> \\</imagine:5> \\<:e:6> \\<a:e:7> \\<t:8:f> 1 < 2"
    )
