"""EASEL_DATA_DIR short of room, logged as the shortage begins and as it ends (``RoomLog``):
an operator reads why jobs fail or are refused, once, not a line per job while it lasts."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from bot.jobs.retention import free_bytes

log = logging.getLogger(__name__)


class RoomLog:
    """One WARNING as EASEL_DATA_DIR (``data_dir``) runs short of room (``short``: how short;
    ``meanwhile``: what happens until space is freed), with the bytes free, and one INFO once
    it has room again (``again``: what works again); nothing for the readings or jobs
    between."""

    def __init__(self, data_dir: Path, short: str, meanwhile: str, again: str) -> None:
        self._data_dir = data_dir
        self._short = short
        self._meanwhile = meanwhile
        self._again = again
        self._was_short = False

    async def ran_short(self, free: int | None = None) -> None:
        """It is short of room: logged unless it was already; ``free``, the bytes free as
        the caller read them, else read here (off the loop)."""
        if self._was_short:
            return
        self._was_short = True
        if free is None:
            free = await asyncio.to_thread(free_bytes, self._data_dir)
        log.warning(
            "EASEL_DATA_DIR (%s) %s (%s bytes free): %s until space is freed",
            self._data_dir,
            self._short,
            "unknown" if free is None else free,
            self._meanwhile,
        )

    def has_room(self) -> None:
        """It has room (again): logged if it was short."""
        if self._was_short:
            self._was_short = False
            log.info("EASEL_DATA_DIR (%s) has room again: %s", self._data_dir, self._again)
