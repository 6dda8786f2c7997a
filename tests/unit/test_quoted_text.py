"""A member's words quoted in what Easel posts fit Discord's message, however much escaping
they need."""

from __future__ import annotations

import discord
from hypothesis import given
from hypothesis import strategies as st

from cogs.common import quoted

# Letters, markdown that escaping doubles, and what may sit around it.
_TEXT = st.text(alphabet=st.sampled_from("ab _*~`|>#-\n[]()\\:/"), max_size=300)


@given(_TEXT, st.integers(min_value=2, max_value=200))
def test_a_quoted_text_never_outgrows_its_limit(text: str, limit: int) -> None:
    escaped = discord.utils.escape_markdown(text)
    shown = quoted(text, limit)
    assert len(shown) <= limit
    if len(escaped) <= limit:
        assert shown == escaped  # whole: nothing cut
    else:
        assert shown.endswith("…")


def test_underscores_are_escaped_within_the_limit() -> None:
    assert quoted("x_" * 1000, 1500) == "x\\_" * 499 + "x…"
