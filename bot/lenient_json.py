"""JSON text decoded with its unpaired UTF-16 surrogates replaced by U+FFFD, and the test
for one in any text (``holds_lone_surrogate``).

A JSON string may spell half a surrogate pair (``"\\ud800"``: a client that cut an emoji in
half); it is valid JSON, but orjson refuses it, and Python's decoder makes a ``str`` that no
UTF-8 can carry (the tokenizer and SQLite then fail on it). Replaced, it reads as the one
character that says something was lost. A form post (the mask editor's) is refused instead:
its sender is told, and can send it again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

# A surrogate reaches a decoded str only through a ``\\udXXX`` escape (UTF-8 cannot carry one).
# A pair, or an escaped backslash before "ud8", matches too: it costs only a walk.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# Left in a decoded str, a surrogate is unpaired: the decoder joins each pair into one character.
_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT_CHARACTER = "\ufffd"


def loads_replacing_lone_surrogates(
    text: str | bytes | bytearray | memoryview, fast_loads: Callable[[str], Any] = json.loads
) -> Any:
    """``text`` decoded, each unpaired surrogate in its strings (keys included) replaced by
    U+FFFD; ``fast_loads`` decodes text that spells none (most of it)."""
    if not isinstance(text, str):
        text = bytes(text).decode("utf-8")
    if _SURROGATE_ESCAPE.search(text) is None:
        return fast_loads(text)
    return _replaced(json.loads(text))


def holds_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds half a surrogate pair, which no UTF-8 can carry: in a ``str``
    every surrogate is one (a decoder joins each pair into the character it spells)."""
    return _SURROGATE.search(text) is not None


def _replaced(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub(REPLACEMENT_CHARACTER, value)
    if isinstance(value, list):
        return [_replaced(item) for item in value]
    if isinstance(value, dict):
        return {_replaced(key): _replaced(item) for key, item in value.items()}
    return value
