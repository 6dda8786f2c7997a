"""Half a surrogate pair in JSON text (``"\\ud800"``) is read as U+FFFD, in keys and values at
any depth; pairs stay the character they spell, and text that spells none takes the fast path."""

from __future__ import annotations

import json
from typing import Any

from bot.lenient_json import holds_lone_surrogate, loads_replacing_lone_surrogates


def test_lone_surrogates_become_the_replacement_character_and_pairs_stay() -> None:
    text = (
        '{"d": {"options": [{"value": "a \\ud800 cat"}, "\\udfff", 3]},'
        ' "\\uDBFF": "\\ud83d\\ude00 \\ud83d", "\\\\ud800": "x"}'
    )
    decoded = loads_replacing_lone_surrogates(text)
    assert decoded == {
        "d": {"options": [{"value": "a \ufffd cat"}, "\ufffd", 3]},
        "\ufffd": "\U0001f600 \ufffd",
        "\\ud800": "x",  # an escaped backslash: six characters, no surrogate
    }
    json.dumps(decoded).encode("utf-8")  # every string is UTF-8 now (SQLite, the tokenizer)
    assert loads_replacing_lone_surrogates(text.encode()) == decoded


def test_text_spelling_no_surrogate_is_read_by_the_fast_decoder() -> None:
    read: list[str] = []

    def fast_loads(text: str) -> Any:
        read.append(text)
        return json.loads(text)

    assert loads_replacing_lone_surrogates('{"t": "a cat 🐈"}', fast_loads) == {"t": "a cat 🐈"}
    assert loads_replacing_lone_surrogates('{"t": "\\ud800"}', fast_loads) == {"t": "\ufffd"}
    assert read == ['{"t": "a cat 🐈"}']


def test_the_shared_test_finds_half_a_pair_wherever_it_is_and_nothing_else() -> None:
    """The one test both answers use: the Discord decoder replaces what it finds, the mask
    editor's form refuses it (``tests/integration/test_web_server.py``)."""
    for text in ("\ud800", "a \udfff cat", "\ud83d cat", "cat \udbff"):
        assert holds_lone_surrogate(text), ascii(text)
        assert not holds_lone_surrogate(loads_replacing_lone_surrogates(json.dumps(text)))
    for text in ("", "a cat", "\U0001f600 \ufffd \uffff \ud7ff\ue000"):
        assert not holds_lone_surrogate(text), ascii(text)
