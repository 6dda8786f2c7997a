"""A CPU model's own thread (/describe's captioner, Vary (Region)'s CLIPSeg), with a short line
of members waiting for it.

Its runs take turns on that thread, never on asyncio's shared pool, which every acknowledgement
needs (``asyncio.to_thread``): a flood of them cannot make other members' commands miss
Discord's 3 s. The line is bounded and holds each member once, so one member cannot take every
place; a request past it is refused at once instead of queued for long.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

Result = TypeVar("Result")


class LineFull(Exception):
    """Every place in the line is taken."""


class AlreadyInLine(Exception):
    """The member holds a place in the line already."""


class ModelThread:
    """One thread for one model; ``run`` may be awaited from the event loop."""

    def __init__(self, name: str, places: int) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._places = places
        self._members: set[int] = set()

    @contextlib.contextmanager
    def place(self, member: int) -> Iterator[None]:
        """A place in the line for ``member`` while the block runs (what it downloads or
        checks before its run included); raises ``AlreadyInLine`` or ``LineFull`` at once."""
        if member in self._members:
            raise AlreadyInLine
        if len(self._members) >= self._places:
            raise LineFull
        self._members.add(member)
        try:
            yield
        finally:
            self._members.discard(member)

    async def run(self, work: Callable[..., Result], *args: Any) -> Result:
        """``work(*args)`` on the model's thread, after the runs queued before it; a member's
        run is awaited inside their ``place``."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)

    def start(self, work: Callable[..., object], *args: Any) -> Future[object]:
        """``work(*args)`` on the model's thread, not awaited: the bot's own (loading the model
        while a member types); what it raises stays in the returned future."""
        return self._executor.submit(work, *args)

    def close(self) -> None:
        """Runs not started are dropped; the one running finishes on its own."""
        self._executor.shutdown(wait=False, cancel_futures=True)
