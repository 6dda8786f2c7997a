"""The one refusal of a model or add-on a member may not use here, whether it is not installed
or the server leaves it out: one sentence for both, so whether a file the server leaves out
exists is not told. It names only what the member may use here, and a few of those at most
(a server may allow hundreds: a refusal must fit a Discord message). Pure: no discord, no
torch."""

from __future__ import annotations

from collections.abc import Callable, Collection
from difflib import get_close_matches

from bot.user_errors import Reason, UserError
from inference.quoting import cut

__all__ = [
    "MAX_NAMED",
    "broken_wildcard",
    "closest_of",
    "named_at_most",
    "quoted",
    "unavailable_here",
    "unknown_wildcard",
]

# A refusal names up to this many usable names, then says how many more there are.
MAX_NAMED = 10
# "Did you mean": up to this many usable names close to what was typed (as diffusers' own).
_CLOSEST = 3


def unavailable_here(
    what: str, typed: str, usable: Collection[str], listed_by: str | None = None
) -> UserError:
    """The refusal of ``typed``, a ``what`` ("model", "LoRA"...) not installed or not allowed
    here: the closest of ``usable`` (what the member may use here) to it, then the first
    ``MAX_NAMED`` of ``usable`` by name and how many more, and the command listing them all
    (``listed_by``) when there are more. Never names anything outside ``usable``."""
    names = sorted(usable, key=str.casefold)
    sentence = f"The {what} {quoted(typed)} is not installed or not allowed here"
    if not names:
        return UserError(f"{sentence}; there is none you may use here.", Reason.MODEL)
    return UserError(
        f"{sentence}{closest_of(typed, names)} You may use: {named_at_most(names, listed_by)}.",
        Reason.MODEL,
    )


def closest_of(typed: str, names: Collection[str]) -> str:
    """The end of a sentence refusing ``typed``: "; did you mean" the closest of ``names``
    to it, else a full stop."""
    closest = get_close_matches(typed, names, n=_CLOSEST)
    return f"; did you mean {' or '.join(map(quoted, closest))}?" if closest else "."


def named_at_most(
    usable: Collection[str], listed_by: str | None = None, form: Callable[[str], str] = cut
) -> str:
    """The first ``MAX_NAMED`` of ``usable`` by name, each in ``form``, then how many more
    and the command listing them all (``listed_by``)."""
    names = sorted(usable, key=str.casefold)
    shown = ", ".join(form(name) for name in names[:MAX_NAMED])
    more = len(names) - MAX_NAMED
    if more > 0:
        shown += f" and {more} more" + (f" (`{listed_by}` lists them all)" if listed_by else "")
    return shown


def unknown_wildcard(name: str, available: Collection[str]) -> str:
    """A member's refusal of ``__name__``, which names no wildcard: the closest of those
    there are (``available``, by name), then a few of them; what the operator could add is
    for the log, not for the member."""
    typed, wildcards = f"__{name}__", [f"__{wildcard}__" for wildcard in available]
    sentence = f"There is no wildcard {quoted(typed)}"
    if not wildcards:
        return f"{sentence}; there are no wildcards here. Fix the prompt and try again."
    return (
        f"{sentence}{closest_of(typed, wildcards)} Wildcards here: "
        f"{named_at_most(wildcards, '/wildcards', quoted)}. Fix the prompt and try again."
    )


def broken_wildcard(holders: Collection[str], fault: str) -> str:
    """A member's refusal of a prompt whose wildcard's file is at fault, not the prompt the
    member typed: ``holders``, the wildcards of the faulty files (as found), and ``fault``,
    what is wrong in them (it names a wildcard that does not exist, a `{` has no `}`...)."""
    which = " and ".join(quoted(f"__{holder}__") for holder in holders) or "one your prompt uses"
    return (
        f"The wildcard {which} is broken: {fault}. Tell a moderator, and leave that wildcard "
        "out until it is fixed."
    )


def quoted(name: str) -> str:
    """A name as a refusal quotes it: code, so no markdown, mention or link."""
    return f"`{cut(name.replace('`', ''))}`"
