"""Wildcards (``__name__``) and dynamic prompts (``{a|b}``, ``{2$$a|b|c}``, ``{0.5::a|b}``).

Expansion is done by ``dynamicprompts``, seeded with the image seed (image ``i`` of a batch
uses ``seed + i``) so a stored seed reproduces the same text. Wildcards live in one folder:
``name.txt`` (one option a line, ``#`` comments) and ``.yaml``/``.json`` collections, used as
``__name__`` or ``__folder/name__``.

dynamicprompts gives meaning to characters the web UI syntax also uses (``|`` inside
``[a|b]`` nested in ``{...}``, ``#`` comments, ``$``, ``%``, a stray ``__``), so those are swapped
for private-use characters before expansion and restored after. ``\\{``, ``\\}``, ``\\|``... keep
their character literal. Only ``{}``, ``|`` and ``$$`` directly inside braces, ``::`` weights and
``__name__`` (letters, digits, ``_-./*``) reach dynamicprompts.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from dataclasses import dataclass
from pathlib import Path
from random import Random

from dynamicprompts.commands import Command, WildcardCommand
from dynamicprompts.enums import SamplingMethod
from dynamicprompts.parser.parse import parse
from dynamicprompts.samplers.combinatorial import CombinatorialSampler
from dynamicprompts.samplers.cycle import CyclicalSampler
from dynamicprompts.samplers.random import RandomSampler
from dynamicprompts.sampling_context import SamplingContext
from dynamicprompts.types import ResultGen
from dynamicprompts.wildcards import WildcardManager
from dynamicprompts.wildcards.item import WildcardItem
from dynamicprompts.wildcards.values import WildcardValues
from pyparsing import ParseBaseException

from inference.prompts.errors import (
    NestingError,
    PromptError,
    UnknownWildcardError,
    WildcardRecursionError,
)

MAX_WILDCARD_DEPTH = 20
# dynamicprompts parses ``{`` recursively, about 25 stack frames a level: 39 levels overflow
# Python's stack, so deeper nesting is refused before it is parsed.
MAX_BRACE_NESTING = 10
# A wildcard file can turn a short prompt into megabytes; expansion stops past these.
MAX_EXPANDED_CHARS = 16_000
MAX_WILDCARD_EXPANSIONS = 1_000
# Plane-15 private-use characters stand in for protected ASCII characters during expansion.
_SHIELD = 0xF0000
_SPECIAL = "{}|#$%_"


def _shield(char: str) -> str:
    return chr(_SHIELD + ord(char))


def _unshield(text: str) -> str:
    return "".join(chr(ord(c) - _SHIELD) if _SHIELD <= ord(c) < _SHIELD + 128 else c for c in text)


def _wildcard_end(text: str, start: int) -> int:
    """End of a ``__name__`` reference starting at ``start``, or -1."""
    position = start + 2
    while position < len(text) and (text[position].isalnum() or text[position] in "_-./*"):
        if text.startswith("__", position) and position > start + 2:
            return position + 2
        position += 1
    return -1


def _check_brace_nesting(shielded: str, where: str) -> None:
    """Refuse ``{`` nested deeper than ``MAX_BRACE_NESTING`` (escaped braces are shielded)."""
    depth = deepest = 0
    for char in shielded:
        if char == "{":
            depth += 1
            deepest = max(deepest, depth)
        elif char == "}" and depth:
            depth -= 1
    if deepest > MAX_BRACE_NESTING:
        raise NestingError(f"{where} nests {{ }} braces {deepest} deep", MAX_BRACE_NESTING)


def protect(text: str, *, keep_wildcards: bool = True) -> str:
    """Hide from dynamicprompts every character that is not its syntax (see module doc)."""
    out: list[str] = []
    open_brackets: list[str] = []
    position = 0
    while position < len(text):
        char = text[position]
        innermost = open_brackets[-1] if open_brackets else ""
        if char == "\\" and position + 1 < len(text) and text[position + 1] in _SPECIAL:
            out.append(char + _shield(text[position + 1]))
            position += 2
            continue
        if char == "_" and text.startswith("__", position) and keep_wildcards:
            end = _wildcard_end(text, position)
            if end > 0:
                out.append(text[position:end])
                position = end
                continue
        if char == "$" and innermost == "{" and text.startswith("$$", position):
            out.append("$$")
            position += 2
            continue
        if char in "{[":
            open_brackets.append(char)
        elif char in "}]" and innermost == {"}": "{", "]": "["}[char]:
            open_brackets.pop()
        protected = char in "#$%_" or (char == "|" and innermost == "[")
        out.append(_shield(char) if protected else char)
        position += 1
    return "".join(out)


class _Manager(WildcardManager):
    """Raises on unknown names and protects web UI syntax inside wildcard values."""

    def get_values(self, wildcard: str) -> WildcardValues:
        if ".." in wildcard:
            # Outside the folder: dynamicprompts refuses it too, but logs the member's text
            # with a traceback each time.
            raise UnknownWildcardError(wildcard, [])
        values = super().get_values(wildcard)
        if not values:
            names = sorted(self.get_collection_names())
            raise UnknownWildcardError(
                wildcard, difflib.get_close_matches(wildcard, names, n=3, cutoff=0.5)
            )
        items = [
            WildcardItem(protect(str(item)), getattr(item, "weight", 1.0)) for item in values.items
        ]
        for item in items:
            _check_brace_nesting(str(item), f"a value of __{wildcard}__")
        return WildcardValues.from_items(items)


class _Budget:
    """What one expansion may still produce: wildcard look-ups and characters of values."""

    def __init__(self) -> None:
        self.expansions = 0
        self.chars = 0

    def spend(self, chars: int) -> None:
        self.expansions += 1
        self.chars += chars
        if self.expansions > MAX_WILDCARD_EXPANSIONS:
            raise PromptError(
                f"the prompt's wildcards expand more than {MAX_WILDCARD_EXPANSIONS} times; "
                "use fewer wildcards, or wildcards that include fewer others"
            )
        if self.chars > MAX_EXPANDED_CHARS:
            raise _too_long()


def _too_long() -> PromptError:
    return PromptError(
        f"the prompt expands to more than {MAX_EXPANDED_CHARS:,} characters after wildcards "
        "and {a|b} choices; use shorter wildcard values or fewer wildcards"
    )


@dataclass(frozen=True)
class _Context(SamplingContext):
    wildcard_chain: tuple[str, ...] = ()
    budget: _Budget = dataclasses.field(default_factory=_Budget)


class _DepthLimitedSampler(RandomSampler):
    def _get_wildcard(self, command: WildcardCommand, context: SamplingContext) -> ResultGen:
        chain = getattr(context, "wildcard_chain", ())
        chain = (*chain, str(command.wildcard))
        if len(chain) > MAX_WILDCARD_DEPTH:
            earlier = [i for i, name in enumerate(chain[:-1]) if name == chain[-1]]
            loop = chain[earlier[-1] :] if earlier else chain  # one turn of the loop
            raise WildcardRecursionError(loop, MAX_WILDCARD_DEPTH)
        inner = dataclasses.replace(context, wildcard_chain=chain)  # type: ignore[call-arg]
        budget: _Budget = inner.budget  # type: ignore[attr-defined]
        for result in super()._get_wildcard(command, inner):
            budget.spend(len(result.text))
            yield result


class WildcardLibrary:
    """The wildcard folder (``None``: no folder); files are read on first use and cached."""

    def __init__(self, root: Path | str | None) -> None:
        self.root = Path(root) if root is not None else None
        self._manager = _Manager(self.root)

    def names(self) -> list[str]:
        return sorted(self._manager.get_collection_names())

    def context(self, seed: int) -> SamplingContext:
        return _Context(
            default_sampling_method=SamplingMethod.RANDOM,
            wildcard_manager=self._manager,
            samplers={
                SamplingMethod.RANDOM: _DepthLimitedSampler(),
                SamplingMethod.COMBINATORIAL: CombinatorialSampler(),
                SamplingMethod.CYCLICAL: CyclicalSampler(),
            },
            rand=Random(seed),
        )


_NO_FOLDER = WildcardLibrary(None)


@dataclass(frozen=True)
class Expansion:
    """One image's prompt: the template as typed and the text after expansion."""

    template: str
    text: str
    seed: int
    warnings: tuple[str, ...] = ()


@functools.lru_cache(maxsize=64)
def _parsed(shielded: str) -> Command:
    """dynamicprompts' parse, the slow part (pyparsing), once per text: every picture of a
    request, and every pass that plans it again, samples the same command."""
    return parse(shielded)


def draws_by_seed(*templates: str) -> bool:
    """Whether any of ``templates`` may expand to other text at another seed (wildcards,
    ``{a|b}``)."""
    return any("{" in template or "__" in template for template in templates)


def expand_prompt(
    template: str, seed: int, library: WildcardLibrary | None = None, *, count: int = 1
) -> list[Expansion]:
    """Expand ``template`` for ``count`` images, image ``i`` seeded with ``seed + i``.

    Raises ``UnknownWildcardError`` (with the closest names), ``WildcardRecursionError``,
    ``NestingError`` (braces deeper than ``MAX_BRACE_NESTING``) and ``PromptError`` past the
    expansion limits (``MAX_EXPANDED_CHARS``, ``MAX_WILDCARD_EXPANSIONS``). Malformed braces
    are not an error: the text is used as typed, with a warning. Without a
    library, ``__name__`` stays as typed (with a warning) and ``{a|b}`` still expands.
    """
    seeds = [seed + index for index in range(count)]
    if not draws_by_seed(template):
        return [Expansion(template, template, image_seed) for image_seed in seeds]
    warnings: tuple[str, ...] = ()
    if library is None and "__" in template:
        warnings = ("no wildcards folder is configured: __name__ is left as typed",)
    shielded = protect(template, keep_wildcards=library is not None)
    _check_brace_nesting(shielded, "the prompt")
    try:
        command = _parsed(shielded)
    except ParseBaseException as error:
        warning = f"dynamic prompt syntax not understood ({error}); the text is used as typed"
        return [Expansion(template, template, image_seed, (warning,)) for image_seed in seeds]
    expansions = []
    for image_seed in seeds:
        context = (library or _NO_FOLDER).context(image_seed)
        try:
            result = next(iter(context.sample_prompts(command, 1)), None)
        except ParseBaseException as error:
            raise PromptError(f"a wildcard value could not be expanded: {error}") from error
        text = _unshield(result.text) if result is not None else ""
        if len(text) > MAX_EXPANDED_CHARS:
            raise _too_long()
        expansions.append(Expansion(template, text, image_seed, warnings))
    return expansions
