"""discord.py's webhook calls (interaction responses, follow-ups, edits of them) wait 1, 3, 5, 7
and 9 s between the tries of a call Discord answered with a server error (5xx): 25 s of a
test's time for each call the fake Discord fails for good. Tests keep every try and its order,
not the wait; a 429's ``retry_after`` (which the fake checks was waited out), a rate-limit
bucket's reset and every wait of an interaction's first response (``/callback``, which Discord
refuses after 3 s: a shorter wait there would let a test pass on an answer that is too late)
are waited as discord.py says."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import discord.webhook.async_ as webhook_module

# 1, 3, ... 9 s become 10, 30, ... 90 ms: still a wait, still growing.
SERVER_ERROR_WAIT_SCALE = 0.01

_RETRY_LOOP = webhook_module.AsyncWebhookAdapter.request.__code__


class _ShortServerErrorWaits:
    """``asyncio`` as the webhook module sees it: its sleep after a 5xx answer to anything but
    an interaction's first response is shorter."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    def sleep(delay: float, result: object = None) -> Any:
        caller = sys._getframe(1)
        if caller.f_code is _RETRY_LOOP:
            response = caller.f_locals.get("response")
            route = caller.f_locals["route"]
            first_response = route.path.endswith("/callback")
            if response is not None and response.status >= 500 and not first_response:
                delay *= SERVER_ERROR_WAIT_SCALE
        return asyncio.sleep(delay, result)


@contextmanager
def short_webhook_server_error_waits() -> Iterator[None]:
    """Within it, discord.py's webhook tries after a 5xx answer wait a hundredth as long, but
    for an interaction's first response."""
    webhook_module.asyncio = _ShortServerErrorWaits()  # type: ignore[attr-defined,assignment]
    try:
        yield
    finally:
        webhook_module.asyncio = asyncio  # type: ignore[attr-defined]
