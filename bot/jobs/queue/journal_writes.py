"""Journal writes tried again while the database refuses them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import aiosqlite

log = logging.getLogger(__name__)

# The waits before each further try of a journal write that failed (the database locked by
# another writer past its busy timeout, or a full disk): about two minutes with the busy
# timeouts between them. The job is held meanwhile (its pictures kept); a start still failing
# is left as the journal says (queued), an end kept for the delivery sweep
# (``JobEnds.retry_kept``).
JOURNAL_RETRY_WAITS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0, 15.0)

_Written = TypeVar("_Written")


class JournalWriter:
    """Writes to the journal, each tried again after each of ``retry_waits``."""

    def __init__(self, retry_waits: Sequence[float] = JOURNAL_RETRY_WAITS_S) -> None:
        self._retry_waits = tuple(retry_waits)

    async def write(
        self, what: str, write: Callable[[], Awaitable[_Written]], *, retried: bool = True
    ) -> _Written:
        """``write()``, tried again after each of the retry waits while the database refuses
        it (``OperationalError``: locked past the busy timeout, disk full, an I/O error);
        ``write`` is one statement or one transaction, so a failed try wrote nothing. Raises
        the last failure once the waits are spent (at once when not ``retried``): the caller
        leaves the job as the journal says, for the next start."""
        waits = iter(self._retry_waits if retried else ())
        while True:
            try:
                return await write()
            except aiosqlite.OperationalError as error:
                if (wait := next(waits, None)) is None:
                    raise
                log.warning("%s not written (%s); tried again in %.1f s", what, error, wait)
            await asyncio.sleep(wait)
