"""CLIP's byte-level BPE tokenizer in pure Python, and the web UI's 75-token chunking.

Reads ``inference/configs/tokenizers/clip/{vocab.json,merges.txt}`` (the OpenAI CLIP
vocabulary). Text is cleaned like CLIP (HTML unescaped, whitespace collapsed, lowercased),
split into words, letters, single digits and punctuation runs, then each word is merged
pair by pair in merge-rank order, its last symbol marked with ``</w>``.

Chunking follows the web UI: a prompt longer than 75 tokens continues in further chunks
(never truncated); when a chunk fills up, text after a comma among its last 20 tokens moves
to the next chunk ("comma padding backtrack"); ``BREAK`` pads the current chunk to the end.
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

CHUNK_LENGTH = 75
COMMA_BACKTRACK = 20
VOCAB_DIR = Path(__file__).resolve().parent.parent / "configs" / "tokenizers" / "clip"
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
_SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (no spaces or controls)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    mapping = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


_BYTE_TO_UNICODE = _byte_to_unicode()


def _kind(char: str) -> str:
    if char.isspace():
        return " "
    category = unicodedata.category(char)[0]
    return category if category in "LN" else "P"


def split_words(text: str) -> list[str]:
    """CLIP's pre-tokenizer: contractions, letter runs, single digits, punctuation runs."""
    words: list[str] = []
    position = 0
    while position < len(text):
        special = next((s for s in _SPECIAL_TOKENS if text.startswith(s, position)), None)
        special = special or next((c for c in _CONTRACTIONS if text.startswith(c, position)), None)
        if special:
            words.append(special)
            position += len(special)
            continue
        kind = _kind(text[position])
        end = position + 1
        if kind in "LP":  # letters and punctuation come in runs; digits one at a time
            while end < len(text) and _kind(text[end]) == kind:
                end += 1
        if kind != " ":
            words.append(text[position:end])
        position = end
    return words


# Longer words are tokenized again at each use rather than cached.
MAX_CACHED_WORD = 64


class ClipTokenizer:
    """Text to CLIP token ids (without the start and end tokens)."""

    def __init__(self, vocab_dir: Path = VOCAB_DIR) -> None:
        with (vocab_dir / "vocab.json").open(encoding="utf-8") as handle:
            self.vocab: dict[str, int] = json.load(handle)
        with (vocab_dir / "merges.txt").open(encoding="utf-8") as handle:
            lines = handle.read().split("\n")[1:]  # the first line is "#version: 0.2"
        self.ranks = {tuple(line.split()): rank for rank, line in enumerate(lines) if line}
        self.start_id = self.vocab["<|startoftext|>"]
        self.end_id = self.vocab["<|endoftext|>"]
        self.comma_id = self.vocab[",</w>"]
        self._cached_word_ids = lru_cache(maxsize=65536)(self._word_ids)

    def _bpe(self, word: str) -> list[str]:
        """CLIP's merges: the pair of lowest rank first, its occurrences left to right. A heap
        of (rank, position) makes the same merges (a merge's result only forms pairs of a
        higher rank) in n log n: CLIP's loop is quadratic, half a second for a 3,500-letter
        word, and a prompt can hold hundreds of such words over its steps."""
        letters = [*word[:-1], word[-1] + "</w>"]
        ranks = self.ranks
        heap = [
            (rank, index)
            for index, pair in enumerate(itertools.pairwise(letters))
            if (rank := ranks.get(pair)) is not None
        ]
        symbols: list[str | None] = list(letters)  # None: merged into its left neighbour
        after = [*range(1, len(symbols)), -1]  # the next live symbol's position, or -1
        before = list(range(-1, len(symbols) - 1))
        heapq.heapify(heap)
        while heap:
            rank, index = heapq.heappop(heap)
            right = after[index]
            left_symbol = symbols[index]
            if left_symbol is None or right == -1:
                continue
            right_symbol = symbols[right]
            if ranks.get((left_symbol, right_symbol)) != rank:  # changed since it was pushed
                continue
            merged = left_symbol + str(right_symbol)
            symbols[index], symbols[right] = merged, None
            after[index] = after[right]
            if after[right] != -1:
                before[after[right]] = index
            formed = []  # the pairs the merged symbol makes with its live neighbours
            if before[index] != -1:
                formed.append((before[index], (str(symbols[before[index]]), merged)))
            if after[index] != -1:
                formed.append((index, (merged, str(symbols[after[index]]))))
            for position, pair in formed:
                if (found := ranks.get(pair)) is not None:
                    heapq.heappush(heap, (found, position))
        return [symbol for symbol in symbols if symbol is not None]

    def _word_ids(self, word: str) -> tuple[int, ...]:
        if word in _SPECIAL_TOKENS:
            return (self.vocab[word],)
        encoded = "".join(_BYTE_TO_UNICODE[b] for b in word.encode("utf-8"))
        return tuple(self.vocab[symbol] for symbol in self._bpe(encoded))

    def word_ids(self, word: str) -> tuple[int, ...]:
        """Prompts repeat their words; only short ones are kept (a long word's ids would be
        most of a full cache's memory: 65,536 of 4,000-letter words, over a gigabyte)."""
        if len(word) > MAX_CACHED_WORD:
            return self._word_ids(word)
        return self._cached_word_ids(word)

    def encode(self, text: str) -> list[int]:
        cleaned = " ".join(text.split())
        cleaned = unicodedata.normalize("NFC", cleaned).lower()
        return [token for word in split_words(cleaned) for token in self.word_ids(word)]


_LOADING = threading.Lock()


@cache
def default_tokenizer() -> ClipTokenizer:
    """The shared tokenizer. ``cache`` alone would let concurrent first callers (a burst's
    threads, a CLI, workers) each read the vocabulary; under the lock, the later ones wait
    and take the first one's. Once cached, no call takes the lock."""
    with _LOADING:
        return _loaded_tokenizer()


@cache
def _loaded_tokenizer() -> ClipTokenizer:
    return ClipTokenizer()


@dataclass(frozen=True)
class Chunk:
    """Up to 75 tokens with their attention weights, before start/end/padding tokens."""

    token_ids: tuple[int, ...]
    weights: tuple[float, ...]

    def model_input(self, start_id: int, end_id: int, pad_id: int) -> tuple[list[int], list[float]]:
        """77 ids and weights: start, tokens, padding to 75, end (what the encoder takes)."""
        padding = CHUNK_LENGTH - len(self.token_ids)
        ids = [start_id, *self.token_ids, *[pad_id] * padding, end_id]
        return ids, [1.0, *self.weights, *[1.0] * padding, 1.0]


def chunk_tokens(
    parsed: Sequence[tuple[str, float]], tokenizer: ClipTokenizer | None = None
) -> list[Chunk]:
    """Token chunks for ``parse_attention`` output, cut the way the web UI cuts them."""
    tokenizer = tokenizer or default_tokenizer()
    chunks: list[Chunk] = []
    ids: list[int] = []
    weights: list[float] = []
    last_comma = -1

    def close_chunk() -> None:
        nonlocal ids, weights, last_comma
        chunks.append(Chunk(tuple(ids), tuple(weights)))
        ids, weights, last_comma = [], [], -1

    for text, weight in parsed:
        if text == "BREAK" and weight == -1:
            close_chunk()
            continue
        for token in tokenizer.encode(text):
            if token == tokenizer.comma_id:
                last_comma = len(ids)
            elif (
                len(ids) == CHUNK_LENGTH
                and last_comma != -1
                and len(ids) - last_comma <= COMMA_BACKTRACK
            ):
                # Move the words after the comma to the next chunk rather than split them.
                moved_ids, moved_weights = ids[last_comma + 1 :], weights[last_comma + 1 :]
                ids, weights = ids[: last_comma + 1], weights[: last_comma + 1]
                close_chunk()
                ids, weights = moved_ids, moved_weights
            if len(ids) == CHUNK_LENGTH:
                close_chunk()
            ids.append(token)
            weights.append(weight)
    if ids or not chunks:
        close_chunk()
    return chunks
