"""Errors raised by the prompt language: each message names the problem and how to fix it."""

from __future__ import annotations


class PromptError(ValueError):
    """A prompt the user must change; the message is shown to them as is. Where a wildcard
    file is at fault instead (its syntax, a loop, braces too deep), ``in_wildcard`` names
    that wildcard and ``file_fault`` says what is wrong with it in a member's words: the
    message is then the operator's (what to mend)."""

    in_wildcard: str | None = None
    file_fault: str = ""


class InlineFlagError(PromptError):
    """An unknown ``--flag`` or a flag value outside its accepted range."""


class UnknownWildcardError(PromptError):
    """``__name__`` names no wildcard file or collection. Its message is the operator's (the
    file to add); ``available``: every wildcard name there is, for a member's refusal;
    ``named_in``: the wildcard whose value named it (None: the prompt did)."""

    def __init__(self, name: str, suggestions: list[str], available: list[str]) -> None:
        self.name = name
        self.named_in: str | None = None
        self.suggestions = suggestions
        self.available = available
        guess = (
            "did you mean " + ", ".join(f"__{s}__" for s in suggestions) + "? Else "
            if suggestions
            else ""
        )
        super().__init__(
            f"unknown wildcard __{name}__: {guess}add a file named {name}.txt to the wildcards "
            "folder."
        )


class WildcardRecursionError(PromptError):
    """Wildcards that include each other without end."""

    def __init__(self, chain: tuple[str, ...], limit: int) -> None:
        self.chain = chain
        path = " -> ".join(f"__{name}__" for name in chain)
        self.in_wildcard = chain[0]
        self.file_fault = f"its values include wildcards without end ({path})"
        super().__init__(
            f"wildcards nest deeper than {limit} levels, most likely a wildcard that includes "
            f"itself: {path}; remove the self-reference"
        )


class NestingError(PromptError):
    """Brackets or braces nested deeper than the prompt language allows."""

    def __init__(self, what: str, limit: int, fix: str = "flatten the prompt") -> None:
        self.limit = limit
        super().__init__(f"{what}; at most {limit} levels are allowed, {fix}")
