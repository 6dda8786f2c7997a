"""/describe's message: the buttons read back exactly the suggestions it shows."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cogs.describe import suggestion_in, suggestions_message

# Captions are single lines with their whitespace collapsed (inference.describe).
captions = st.text(min_size=1, max_size=80).map(lambda text: " ".join(text.split())).filter(bool)


@given(st.lists(captions, min_size=1, max_size=4))
def test_every_suggestion_reads_back_as_written(written: list[str]) -> None:
    message = suggestions_message(written)
    assert [suggestion_in(message, n) for n in range(1, len(written) + 1)] == written
    assert suggestion_in(message, len(written) + 1) is None


def test_markdown_in_a_caption_is_shown_as_text_and_read_back() -> None:
    caption = "a *bold* cat_x at https://x.y/a_b ~~ `code` \\ | > end"
    message = suggestions_message([caption])
    assert "\\*bold\\*" in message
    assert suggestion_in(message, 1) == caption
