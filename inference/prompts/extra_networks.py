"""Extra-network tags ``<kind:name:weight>`` and textual-inversion embeddings in a prompt.

Like the web UI, every ``<word:...>`` tag is removed from the text whatever its kind.
``<lora:name>`` means weight 1.0; ``<lora:name:te:unet>`` (or ``te=``/``unet=``) sets the text
encoder and UNet weights apart. The web UI's dynamic rank (``dyn=N``, or a fourth value) is
read and told as not supported: the LoRA applies at its full rank. ``lyco`` and ``hypernet``
tags are recognised but not applied, and unknown names become warnings, never exceptions: a
typo must not fail a render.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from inference.names import as_typed

_TAG = re.compile(r"<(\w+):([^>]+)>")
# What ends a name in a tag (``_TAG``'s end, its values' separator): a file whose name holds
# one cannot be named by a tag.
TAG_NAME_STOPS = (":", ">")
_WORD = re.compile(r"\w+")
# The characters outside ASCII that a case-insensitive search equates with an ASCII one
# (İ ı: i, ſ: s, the Kelvin sign: k); ``find_embeddings`` searches a prompt holding one.
_ASCII_LOOKALIKES = frozenset("\u0130\u0131\u017f\u212a")
SUPPORTED_KINDS = frozenset({"lora"})
UNSUPPORTED_KINDS = frozenset({"lyco", "hypernet"})


@dataclass(frozen=True)
class ExtraNetwork:
    """One tag: ``weight`` scales the text encoder, ``unet_weight`` the UNet; ``typed``: the
    two as the prompt wrote them (None: not written), for messages."""

    kind: str
    name: str
    weight: float
    unet_weight: float
    typed: tuple[str | None, str | None] = field(default=(None, None), compare=False)


def _closest(name: str, available: Iterable[str]) -> str:
    matches = difflib.get_close_matches(name, list(available), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(matches)}?)" if matches else ""


# The web UI's named values; its positional ones come in this order after the name.
_SETTINGS = ("te", "unet", "dyn")


def _number(text: str | None, what: str, default: float, warnings: list[str]) -> float:
    """``text`` as a number; ``default`` when absent, or (told) when not a number."""
    if text is None:
        return default
    try:
        return float(text)
    except ValueError:
        warnings.append(f"{what} {text!r} is not a number; using {default}")
        return default


def _parse_tag(kind: str, args: list[str], warnings: list[str]) -> tuple[ExtraNetwork, str | None]:
    """The tag's network (its name ``as_typed``), and its ``dyn`` value as written (None:
    none)."""
    name, positional, named = as_typed(args[0]), [], {}
    for arg in args[1:]:
        key, sep, value = arg.partition("=")
        if sep and key in _SETTINGS:
            named[key] = value
        else:
            positional.append(arg)
    values = dict(zip(_SETTINGS, positional, strict=False)) | named
    label = f"<{kind}:{name}>"
    weight = _number(values.get("te"), f"{label} weight", 1.0, warnings)
    unet_weight = _number(values.get("unet"), f"{label} UNet weight", weight, warnings)
    typed = (values.get("te"), values.get("unet"))
    return ExtraNetwork(kind, name, weight, unet_weight, typed), values.get("dyn")


def _dyn_ignored(network: ExtraNetwork, dyn: str) -> str:
    """The warning for a LoRA applied with a ``dyn`` it cannot take."""
    weight, unet_weight = network.weight, network.unet_weight
    used = f"weight {weight:g}" + (f", UNet {unet_weight:g}" if unet_weight != weight else "")
    return (
        f"<{network.kind}:{network.name}> dyn={dyn}: dynamic rank is not supported here; "
        f"applied at its full rank ({used})"
    )


def extract_extra_networks(
    prompt: str, available_loras: Collection[str] | None = None
) -> tuple[str, list[ExtraNetwork], list[str]]:
    """Remove every ``<kind:...>`` tag; return the text, the tags and warnings.

    ``available_loras`` (names without extension) enables the unknown-name check; ``None``
    skips it (for callers that do not know the model folder, such as ``easel explain``).
    """
    networks: list[ExtraNetwork] = []
    warnings: list[str] = []

    def take(match: re.Match[str]) -> str:
        kind = match.group(1)
        network, dyn = _parse_tag(kind, match.group(2).split(":"), warnings)
        networks.append(network)
        if kind in UNSUPPORTED_KINDS:
            warnings.append(f"<{kind}:{network.name}> ignored: {kind} networks are not supported")
        elif kind not in SUPPORTED_KINDS:
            warnings.append(f"<{kind}:{network.name}> ignored: unknown extra network {kind!r}")
        elif available_loras is not None and network.name not in available_loras:
            warnings.append(
                f"unknown LoRA {network.name!r} ignored{_closest(network.name, available_loras)}"
            )
        elif dyn is not None:  # only a LoRA applied: an ignored one's would contradict it
            warnings.append(_dyn_ignored(network, dyn))
        return ""

    return _TAG.sub(take, prompt), networks, warnings


def without_unknown_loras(prompt: str, available_loras: Collection[str]) -> str:
    """``prompt`` less its LoRA tags naming none of ``available_loras`` (the ones
    ``extract_extra_networks`` warns of as unknown), and the commas and spaces that leaves at
    its ends; every other tag and word is kept, and a prompt without such a tag as it is."""

    def kept(match: re.Match[str]) -> str:
        name = as_typed(match.group(2).split(":")[0])
        unknown = match.group(1) == "lora" and name not in available_loras
        return "" if unknown else match.group(0)

    left = _TAG.sub(kept, prompt)
    return left.strip(" ,") if left != prompt else prompt


def find_embeddings(prompt: str, available: Iterable[str]) -> list[str]:
    """Textual-inversion names that appear as whole words (case-insensitive, like CLIP).

    Every admission looks for every installed name in every planned prompt, so a name of
    ASCII word characters is looked up among the prompt's words instead: the same answer, as
    such a name matches only a whole word, and one in any letter case (``lower()``), but in
    a prompt holding one of ``_ASCII_LOOKALIKES``. Any other name is searched for, in the
    prompt ``as_typed`` (the tokenizer reads it so: a name pasted in NFD is the same word)."""
    prompt = as_typed(prompt)
    words = None
    if _ASCII_LOOKALIKES.isdisjoint(prompt):
        words = {word.lower() for word in _WORD.findall(prompt)}
    found = []
    for name in available:
        if words is not None and name.isascii() and _WORD.fullmatch(name):
            if name.lower() in words:
                found.append(name)
        elif _whole_word(name).search(prompt):
            found.append(name)
    return sorted(found)


@functools.lru_cache(maxsize=4096)
def _whole_word(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(name)}(?!\w)", re.IGNORECASE)
