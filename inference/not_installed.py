"""An add-on this server has not installed: the member is told so and to ask an admin (the
server's folders are the operator's business, never shown to a member); the operator is told
where it goes in the log, once per add-on and sentence, and by ``easel doctor``
(``NotInstalled.for_operator``)."""

from __future__ import annotations

import logging
import threading

from inference.types import RenderInputError

log = logging.getLogger(__name__)

_told: set[tuple[str, str]] = set()
_told_lock = threading.Lock()  # refusals come from the event loop's threads and the engine's


class NotInstalled(RenderInputError):
    """The member's refusal (its message); ``for_operator``: where the add-on goes, naming the
    server's folders (``easel doctor`` shows it)."""

    def __init__(self, message: str, for_operator: str = "") -> None:
        super().__init__(message)
        self.for_operator = for_operator or message


def not_installed(
    what: str, where_it_goes: str, otherwise: str = "", *, asked: str = ""
) -> NotInstalled:
    """``what`` is not installed on this server, ask an admin (then ``otherwise``, another way
    to the same end). ``where_it_goes``, naming the server's folder, goes to the log the first
    time only. ``asked``: the name a member typed, in their refusal only (typed text never
    reaches the log)."""
    with _told_lock:
        first = (what, where_it_goes) not in _told
        _told.add((what, where_it_goes))
    if first:
        log.warning("%s is not installed: %s", what, where_it_goes)
    named = f"{what} {asked!r}" if asked else what
    member = f"{named} is not installed on this server: ask an admin{otherwise}"
    return NotInstalled(member, where_it_goes)


def for_operator(error: RenderInputError) -> str:
    """What the operator reads of ``error``: where a missing add-on goes, else its message."""
    return error.for_operator if isinstance(error, NotInstalled) else str(error)
