"""Edges of the web UI's 75-token chunking (``inference.prompts.tokenizer.chunk_tokens``) that a
mutation audit found no test pinned."""

from __future__ import annotations

from inference.prompts import parse_attention
from inference.prompts.tokenizer import CHUNK_LENGTH, chunk_tokens

CAT, DOG, COMMA = 2368, 1929, 267


def test_a_comma_exactly_as_far_back_as_the_backtrack_moves_the_words_after_it() -> None:
    """The web UI moves the words after a comma when the full chunk ends at most
    20 tokens after it (its ``comma_padding_backtrack``): at 20 they move, at 21 they stay."""
    comma_at = CHUNK_LENGTH - 20  # the comma's index in the chunk
    chunks = chunk_tokens(parse_attention("cat " * comma_at + ", " + "dog " * 30))
    assert chunks[0].token_ids == (CAT,) * comma_at + (COMMA,)
    assert chunks[1].token_ids == (DOG,) * 30

    one_further = chunk_tokens(parse_attention("cat " * (comma_at - 1) + ", " + "dog " * 30))
    assert len(one_further[0].token_ids) == CHUNK_LENGTH
    assert one_further[0].token_ids[comma_at - 1] == COMMA
