"""Generation parameters as text, in the Stable Diffusion web UI's "infotext" layout.

    a cat on a sofa
    Negative prompt: blurry
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: ..., Model: x

The text travels inside PNGs as a ``parameters`` text chunk, which the web UI's "PNG Info"
tab, sd-parsers and most image sites read back.
"""

from __future__ import annotations

import functools
import io
import itertools
import json
import re
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from inference.samplers import (
    AUTOMATIC_SCHEDULE,
    SAMPLERS,
    canonical_sampler_name,
    canonical_schedule_type,
    scheduler_spec,
    split_sampler,
)
from inference.types import RenderInputError

InfotextValue = str | int | float
STEPS = "Steps"
SAMPLER = "Sampler"
SCHEDULE_TYPE = "Schedule type"
UNIFORM_SCHEDULE = "Uniform"  # the model's own sigmas, as plain sampler names use
NEGATIVE_PREFIX = "Negative prompt:"
PNG_TEXT_KEY = "parameters"
PROMPT_WARNINGS = "Prompt warnings"
VERSION = "Version"
CFG_SCALE = "CFG scale"
# Flux dev's guidance, as Forge writes it (its ``CFG scale`` is 1: no true CFG runs).
DISTILLED_CFG_SCALE = "Distilled CFG Scale"
# Keys only Easel's own render writes (``inference.passes.output``): what it said about reading
# this render's prompt, and which Easel made it. Read off an input picture, they are whoever
# made that picture's text, and a result posts its warnings as Easel's notes.
EASEL_OWN_KEYS = frozenset({PROMPT_WARNINGS, VERSION})
# The eight bytes every PNG file starts with.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The web UI only takes the last line as parameters when it holds at least this many pairs.
MIN_PARAMETER_PAIRS = 3

_JSON_OPENERS = ('"', "{", "[")
# Lists and objects nest at most this deep in a value (Civitai's go 3 deep); thousands of
# ``[`` would take the JSON decoder, which recurses once per level, past Python's limit.
MAX_JSON_DEPTH = 20
# Where an infotext's parameters start when its line breaks were lost.
_PARAMETERS_START = re.compile(r"(?:^|\s)(Steps:\s*\d+\s*(,|$))")
_MAX_PARAMETER_STARTS = 4
_KEY = re.compile(r"\s*([A-Za-z][^:,\n]*?):\s*")
# Digits with a leading zero (a hash such as 0123456789) stay text.
_INT = re.compile(r"-?(0|[1-9]\d*)")
_MAX_INT_CHARS = 4_000
_FLOAT = re.compile(r"-?(\d+\.\d*|\.\d+)([eE][-+]?\d+)?|-?\d+[eE][-+]?\d+")


@functools.cache  # a metadata look-up on disk, for a value fixed for the process
def easel_version() -> str:
    """``Version: Easel 0.1.0``: the installed package's version, as the web UI names its own."""
    try:
        return f"Easel {version('easel')}"
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "Easel"


def without_easel_keys(params: Mapping[str, InfotextValue]) -> dict[str, InfotextValue]:
    """An input picture's parameters, to carry over to a render of it: less ``EASEL_OWN_KEYS``
    (the render writes its own)."""
    return {key: value for key, value in params.items() if key not in EASEL_OWN_KEYS}


def web_ui_sampler_fields(sampler: str, schedule_type: str = AUTOMATIC_SCHEDULE) -> dict[str, str]:
    """Easel's sampler as the web UI 1.9+ writes it: ``DPM++ 2M Karras`` is ``Sampler: DPM++
    2M, Schedule type: Karras``. A sampler that takes schedules gets its type even when plain
    (``Uniform``): without one, the web UI would use the sampler's own default (Karras for
    DPM++ 2M)."""
    base, schedule = split_sampler(sampler, schedule_type)
    if schedule == AUTOMATIC_SCHEDULE and SAMPLERS[base].sigma_schedules:
        schedule = UNIFORM_SCHEDULE
    fields = {SAMPLER: base}
    if schedule != AUTOMATIC_SCHEDULE:
        fields[SCHEDULE_TYPE] = schedule
    return fields


def sampler_and_schedule(params: Mapping[str, object]) -> tuple[str, str] | None:
    """The (sampler, schedule type) an infotext asks for, checked (``RenderInputError`` names
    what is unknown here); no ``Schedule type`` is ``Automatic``, what the sampler's name says.
    None when it names no sampler."""
    sampler, schedule = params.get(SAMPLER), params.get(SCHEDULE_TYPE)
    if not isinstance(sampler, str):
        return None
    if not isinstance(schedule, str) or not schedule.strip():
        schedule = AUTOMATIC_SCHEDULE
    canonical = canonical_sampler_name(sampler)
    label = canonical_schedule_type(schedule)
    scheduler_spec(canonical, label)  # a schedule this sampler cannot take is refused
    return canonical, label


def asks_for_sampler(params: Mapping[str, object], sampler: str, schedule_type: str) -> bool:
    """Whether ``params`` (``Sampler`` and ``Schedule type``, ``sampler_and_schedule``) ask
    for ``sampler`` with ``schedule_type``, compared as the web UI writes them (``DPM++ 2M
    Karras`` is ``DPM++ 2M`` with ``Karras``); one unknown here, or none, does not."""
    try:
        named = sampler_and_schedule(params)
    except RenderInputError:
        return False
    return named is not None and web_ui_sampler_fields(*named) == web_ui_sampler_fields(
        sampler, schedule_type
    )


def guidance_of(
    params: Mapping[str, InfotextValue], *, distilled_model: bool
) -> InfotextValue | None:
    """The guidance a picture's text asks for, as Easel's CFG on the model rendering it:
    its ``Distilled CFG Scale`` where that model takes distilled guidance (Flux:
    ``distilled_model``) or where its ``CFG scale`` is missing, 1 (no true CFG: Forge's Flux,
    Easel's since) or equal to it (Easel's older Flux text); else its ``CFG scale``, the true
    CFG an SD or SD3 model runs."""
    true_cfg, distilled = params.get(CFG_SCALE), params.get(DISTILLED_CFG_SCALE)
    if distilled is not None and (distilled_model or true_cfg in (None, 1, distilled)):
        return distilled
    return true_cfg


def described_sampler(params: Mapping[str, object]) -> str:
    """``sampler 'X'``, with ``with schedule type 'Y'`` when the infotext names one."""
    schedule = params.get(SCHEDULE_TYPE)
    described = f"sampler {params.get(SAMPLER)!r}"
    if isinstance(schedule, str) and schedule.strip() not in ("", AUTOMATIC_SCHEDULE):
        described += f" with schedule type {schedule!r}"
    return described


def format_value(value: object) -> str:
    """Write one value: whole floats without ``.0`` (``CFG scale: 7``), text quoted when needed."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value)
    # Commas separate pairs and colons separate key from value, so such text is JSON-quoted;
    # so is text the reader would take for JSON once it skips the spaces after the colon.
    if any(mark in text for mark in ",:\n") or text.lstrip().startswith(_JSON_OPENERS):
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


class InfotextError(RenderInputError):
    """Parameters whose text cannot be read; the message names the key and the fix."""


def _typed(raw: str) -> InfotextValue:
    # Digits past Python's 4,300-digit conversion limit stay text.
    if _INT.fullmatch(raw) and len(raw) <= _MAX_INT_CHARS:
        return int(raw)
    if _FLOAT.fullmatch(raw):
        return float(raw)
    return raw


def _skip_spaces(line: str, position: int) -> int:
    while position < len(line) and line[position].isspace():
        position += 1
    return position


def _nesting(value: object) -> int:
    """How deep lists and objects nest in a decoded JSON value (walked without recursing)."""
    deepest, pending = 0, [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            pending.extend((child, depth + 1) for child in item)
    return deepest


def _too_deep(key: str) -> InfotextError:
    return InfotextError(
        f"the settings' value at {key!r} nests lists or objects more than {MAX_JSON_DEPTH} "
        f"deep; at most {MAX_JSON_DEPTH} levels are read"
    )


def _json_value(
    decoder: json.JSONDecoder, line: str, position: int, key: str
) -> tuple[str, int] | None:
    """A quoted text, or a JSON object or list (Civitai's ``Hashes: {...}``, kept as its JSON
    text), starting at ``position``; None when there is none. ``InfotextError`` for one nested
    too deep or a text holding half a surrogate pair (``\\ud800``: no UTF-8 can carry it)."""
    if not line.startswith(_JSON_OPENERS, position):
        return None
    try:
        decoded, end = decoder.raw_decode(line, position)
    except RecursionError:  # the decoder recurses once per level, up to Python's limit
        raise _too_deep(key) from None
    except ValueError:  # not JSON, or a number past Python's conversion limit
        return None
    after = _skip_spaces(line, end)
    if after < len(line) and line[after] != ",":
        return None  # JSON-looking text such as "{}0": read as plain text
    if not isinstance(decoded, str):
        if _nesting(decoded) > MAX_JSON_DEPTH:
            raise _too_deep(key)
        return json.dumps(decoded), end  # ASCII: any escape in it stays an escape
    try:
        decoded.encode("utf-8")
    except UnicodeEncodeError:
        raise InfotextError(
            f"the settings' quoted value at {key!r} holds half a surrogate pair "
            "(\\ud800-\\udfff), which is no character; remove it"
        ) from None
    return decoded, end


def parse_parameters(line: str) -> dict[str, InfotextValue] | None:
    """Read ``Key: value, Key: "quoted, value"`` pairs; None when the line is not such a list.

    Unquoted numbers come back as int or float; quoted values always stay text.
    ``InfotextError`` for a quoted value that cannot be read (``_json_value``).
    """
    params: dict[str, InfotextValue] = {}
    decoder = json.JSONDecoder()
    position = 0
    while position < len(line):
        key_match = _KEY.match(line, position)
        if key_match is None:
            return None
        position = key_match.end()
        key = key_match.group(1).strip()
        value: InfotextValue
        decoded = _json_value(decoder, line, position, key)
        if decoded is not None:
            value, position = decoded
        elif line.startswith('"', position):
            return None
        else:
            end = line.find(",", position)
            end = len(line) if end == -1 else end
            value = _typed(line[position:end].strip())
            position = end
        params[key] = value
        # Skipped in place: slicing the rest of the line for every pair would be quadratic.
        position = _skip_spaces(line, position)
        if position < len(line) and line[position] != ",":
            return None
        position += 1
    return params


def _parameters_inside(line: str) -> tuple[str, dict[str, InfotextValue]] | None:
    """(text before, parameters) when ``line`` ends with parameters that start at ``Steps:``
    (the web UI's first key) after some text: an infotext pasted where line breaks are lost."""
    # A few tries: each reads to the end of the line, and hostile text may repeat "Steps: 1,".
    for match in itertools.islice(_PARAMETERS_START.finditer(line), _MAX_PARAMETER_STARTS):
        params = parse_parameters(line[match.start(1) :])
        if params is not None and len(params) >= MIN_PARAMETER_PAIRS:
            return line[: match.start(1)].rstrip(), params
    return None


def parse_infotext(text: str) -> tuple[str, str, dict[str, InfotextValue]]:
    """Split an infotext into (prompt, negative prompt, parameters); ``InfotextError`` when a
    quoted value cannot be read (the only error it raises).

    Also reads one pasted on a single line (Discord's text options drop line breaks):
    ``prompt Negative prompt: negative Steps: 20, Sampler: ...``. Only such a text is split
    within a line: one with line breaks keeps a prompt holding those words whole, as the web
    UI reads it (its negative starts a line)."""
    lines = text.strip().split("\n")
    one_line = len(lines) == 1
    whole_line = parse_parameters(lines[-1]) or {}
    inside = _parameters_inside(lines[-1])
    params: dict[str, InfotextValue] = {}
    # A real parameter line has its own "Steps" key; text glued to "Steps:" means a
    # prompt on the same line. So does a first key holding "Negative prompt" (a one-line paste
    # whose negative ends in a comma; a later key may, as ADetailer's "ADetailer Negative prompt"),
    # or a first value starting with it (a one-line prompt ending in a colon: "A: Negative …").
    first_key, first_value = next(iter(whole_line.items()), ("", ""))
    negative_label = NEGATIVE_PREFIX.removesuffix(":")
    if (
        len(whole_line) >= MIN_PARAMETER_PAIRS
        and (inside is None or not inside[0] or STEPS in whole_line)
        and negative_label not in first_key
        and not str(first_value).startswith(negative_label)
    ):
        lines, params = lines[:-1], whole_line
    elif inside is not None:
        lines[-1], params = inside
    if one_line and len(lines) == 1 and (at := lines[0].find(f" {NEGATIVE_PREFIX}")) > 0:
        lines = [lines[0][:at], lines[0][at + 1 :]]
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
    # ``str``, not Pillow's iTXt string, which carries a language tag and a translated
    # keyword of any size that writing it again would keep.
    return str(text) if isinstance(text, str) else None
