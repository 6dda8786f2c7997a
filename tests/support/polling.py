"""Waiting for state no event announces (a thread's progress, a count the bot keeps)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# Generous: on a loaded two-core machine a condition may take seconds; only a broken one
# waits this long.
POLLED_WAIT_S = 60.0


async def until(condition: Callable[[], bool]) -> None:
    """Returns once ``condition()`` holds, polled; ``TimeoutError`` after ``POLLED_WAIT_S``."""
    async with asyncio.timeout(POLLED_WAIT_S):
        while not condition():  # noqa: ASYNC110 (polled: nothing to await)
            await asyncio.sleep(0.01)
