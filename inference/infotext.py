"""Generation parameters as text, in the Stable Diffusion web UI's "infotext" layout.

    a cat on a sofa
    Negative prompt: blurry
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: ..., Model: x

The text travels inside PNGs as a ``parameters`` text chunk, which the web UI's "PNG Info"
tab, sd-parsers and most image sites read back.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping

from PIL import Image
from PIL.PngImagePlugin import PngInfo

InfotextValue = str | int | float
NEGATIVE_PREFIX = "Negative prompt:"
PNG_TEXT_KEY = "parameters"
# The web UI only takes the last line as parameters when it holds at least this many pairs.
MIN_PARAMETER_PAIRS = 3

_KEY = re.compile(r"\s*([A-Za-z][^:,\n]*?):\s*")
_INT = re.compile(r"-?\d+")
_FLOAT = re.compile(r"-?(\d+\.\d*|\.\d+)([eE][-+]?\d+)?|-?\d+[eE][-+]?\d+")


def format_value(value: object) -> str:
    """Write one value: whole floats without ``.0`` (``CFG scale: 7``), text quoted when needed."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value)
    # Commas separate pairs and colons separate key from value, so such text is JSON-quoted.
    if any(mark in text for mark in ",:\n") or text.startswith('"'):
        return json.dumps(text, ensure_ascii=False)
    return text


def format_infotext(prompt: str, negative: str, params: Mapping[str, object]) -> str:
    """Build the infotext; parameters with the value ``None`` are left out."""
    lines = [prompt]
    if negative:
        lines.append(f"{NEGATIVE_PREFIX} {negative}")
    pairs = [f"{key}: {format_value(value)}" for key, value in params.items() if value is not None]
    lines.append(", ".join(pairs))
    return "\n".join(lines)


def _typed(raw: str) -> InfotextValue:
    if _INT.fullmatch(raw):
        return int(raw)
    if _FLOAT.fullmatch(raw):
        return float(raw)
    return raw


def parse_parameters(line: str) -> dict[str, InfotextValue] | None:
    """Read ``Key: value, Key: "quoted, value"`` pairs; None when the line is not such a list.

    Unquoted numbers come back as int or float; quoted values always stay text.
    """
    params: dict[str, InfotextValue] = {}
    decoder = json.JSONDecoder()
    position = 0
    while position < len(line):
        key_match = _KEY.match(line, position)
        if key_match is None:
            return None
        position = key_match.end()
        value: InfotextValue
        if line.startswith('"', position):
            try:
                value, position = decoder.raw_decode(line, position)
            except json.JSONDecodeError:
                return None
        else:
            end = line.find(",", position)
            end = len(line) if end == -1 else end
            value = _typed(line[position:end].strip())
            position = end
        params[key_match.group(1).strip()] = value
        rest = line[position:].lstrip()
        if rest and not rest.startswith(","):
            return None
        position = len(line) - len(rest) + 1
    return params


def parse_infotext(text: str) -> tuple[str, str, dict[str, InfotextValue]]:
    """Split an infotext into (prompt, negative prompt, parameters)."""
    lines = text.strip().split("\n")
    params = parse_parameters(lines[-1])
    if params is not None and len(params) >= MIN_PARAMETER_PAIRS:
        lines = lines[:-1]
    else:
        params = {}
    for index, line in enumerate(lines):
        if line.startswith(NEGATIVE_PREFIX):
            negative_lines = [line.removeprefix(NEGATIVE_PREFIX).lstrip(" "), *lines[index + 1 :]]
            return "\n".join(lines[:index]), "\n".join(negative_lines), params
    return "\n".join(lines), "", params


def png_with_infotext(image: Image.Image, infotext: str) -> bytes:
    """Encode ``image`` as PNG carrying ``infotext`` (tEXt, or iTXt when not Latin-1)."""
    metadata = PngInfo()
    metadata.add_text(PNG_TEXT_KEY, infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=metadata)
    return buffer.getvalue()


def infotext_from_png(data: bytes) -> str | None:
    """The ``parameters`` text of a PNG, or None when it carries none."""
    with Image.open(io.BytesIO(data)) as image:
        text = image.info.get(PNG_TEXT_KEY)
    return text if isinstance(text, str) else None
