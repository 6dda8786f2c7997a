"""Acting on a log record as it is logged: a test waits for what the code says it did,
not for the clock."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

RecordTest = Callable[[logging.LogRecord], bool]


def naming(subject: str, level: int, text: str = "") -> RecordTest:
    """Records at ``level`` or above whose message names ``subject`` and holds ``text``."""

    def matches(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return record.levelno >= level and subject in message and text in message

    return matches


class _Then(logging.Handler):
    def __init__(self, matches: RecordTest, then: Callable[[], None]) -> None:
        super().__init__(logging.DEBUG)
        self._matches = matches
        self._then = then

    def emit(self, record: logging.LogRecord) -> None:
        if self._matches(record):
            self._then()


@contextmanager
def when_logged(
    matches: RecordTest, then: Callable[[], None], logger: str = "bot.jobs.queue"
) -> Iterator[None]:
    """Calls ``then()`` as each record ``matches`` is logged to ``logger``, on the thread
    that logs it (the event loop's, for the queue: before its next statement)."""
    handler = _Then(matches, then)
    target = logging.getLogger(logger)
    target.addHandler(handler)
    try:
        yield
    finally:
        target.removeHandler(handler)
