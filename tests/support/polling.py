"""Waiting for state no event announces (a thread's progress, a count the bot keeps)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# Generous: on a loaded two-core machine a condition may take seconds; only a broken one
# waits this long.
POLLED_WAIT_S = 60.0


async def until(condition: Callable[[], object], timeout_s: float = POLLED_WAIT_S) -> None:
    """Returns once ``condition()`` holds, polled; ``TimeoutError`` after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 (polled: nothing to await)
            await asyncio.sleep(0.01)
