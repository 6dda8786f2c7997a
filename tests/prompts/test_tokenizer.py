"""Pure-Python CLIP tokenizer (its vocabulary read once, however many threads ask first)
and the web UI's chunking rules."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import inference.prompts.tokenizer as tokenizer_module
from inference.prompts import chunk_tokens, default_tokenizer, parse_attention
from inference.prompts.tokenizer import CHUNK_LENGTH

COMMA = 267


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("a photo of a cat", [320, 1125, 539, 320, 2368]),
        ("A PHOTO   of\na Cat", [320, 1125, 539, 320, 2368]),
        ("cat,", [2368, COMMA]),
        ("", []),
    ],
)
def test_known_clip_ids(text: str, ids: list[int]) -> None:
    assert default_tokenizer().encode(text) == ids


def test_vocabulary_shape() -> None:
    tokenizer = default_tokenizer()
    assert len(tokenizer.vocab) == 49408
    assert (tokenizer.start_id, tokenizer.end_id, tokenizer.comma_id) == (49406, 49407, COMMA)


def test_rare_words_split_into_known_pieces_and_digits_one_by_one() -> None:
    tokenizer = default_tokenizer()
    ids = tokenizer.encode("1234 Zyxwvutsrq 日本 🎉")
    assert len(ids) > 7
    assert tokenizer.encode("1234") == [tokenizer.vocab[d + "</w>"] for d in "1234"]
    assert tokenizer.encode("it's") == [tokenizer.vocab["it</w>"], tokenizer.vocab["'s</w>"]]


def test_short_prompt_one_chunk_with_weights() -> None:
    chunks = chunk_tokens(parse_attention("a (cat:1.5)"))
    assert len(chunks) == 1
    assert chunks[0].token_ids == (320, 2368)
    assert chunks[0].weights == (1.0, 1.5)


def test_model_input_is_77_tokens() -> None:
    tokenizer = default_tokenizer()
    ids, weights = chunk_tokens(parse_attention("a cat"))[0].model_input(
        tokenizer.start_id, tokenizer.end_id, tokenizer.end_id
    )
    assert len(ids) == len(weights) == 77
    assert ids[:3] == [49406, 320, 2368] and set(ids[3:]) == {49407}


def test_long_prompt_is_split_never_truncated() -> None:
    chunks = chunk_tokens(parse_attention("cat " * 200))
    assert [len(c.token_ids) for c in chunks] == [75, 75, 50]


def test_comma_backtrack_moves_words_after_last_comma() -> None:
    # 70 words, a comma, then 10 words: the chunk fills at 75 with the comma 5 tokens back.
    chunks = chunk_tokens(parse_attention("cat " * 70 + ", " + "dog " * 10))
    assert len(chunks[0].token_ids) == 71 and chunks[0].token_ids[-1] == COMMA
    assert chunks[1].token_ids == (1929,) * 10


def test_comma_too_far_back_does_not_move() -> None:
    chunks = chunk_tokens(parse_attention("cat " * 50 + ", " + "dog " * 40))
    assert len(chunks[0].token_ids) == CHUNK_LENGTH


def test_break_pads_current_chunk() -> None:
    chunks = chunk_tokens(parse_attention("a cat BREAK a dog"))
    assert [c.token_ids for c in chunks] == [(320, 2368), (320, 1929)]
    assert len(chunk_tokens(parse_attention("a BREAK"))) == 1
    assert [c.token_ids for c in chunk_tokens(parse_attention("BREAK a"))] == [(), (320,)]


def test_empty_prompt_one_empty_chunk() -> None:
    assert [c.token_ids for c in chunk_tokens(parse_attention(""))] == [()]


def test_concurrent_first_callers_read_the_vocabulary_once(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []

    class SlowToRead(tokenizer_module.ClipTokenizer):
        def __init__(self) -> None:
            reads.append(1)
            time.sleep(0.1)  # every caller is past the empty cache before the first is done
            super().__init__()

    def forget() -> None:
        default_tokenizer.cache_clear()
        tokenizer_module._loaded_tokenizer.cache_clear()

    monkeypatch.setattr(tokenizer_module, "ClipTokenizer", SlowToRead)
    forget()
    callers = 6
    together = threading.Barrier(callers)

    def first_call(_: int) -> tokenizer_module.ClipTokenizer:
        together.wait()
        return default_tokenizer()

    try:
        with ThreadPoolExecutor(callers) as pool:
            got = list(pool.map(first_call, range(callers)))
    finally:
        forget()  # later tests build the real one again
    assert len(reads) == 1
    assert all(one is got[0] for one in got)
