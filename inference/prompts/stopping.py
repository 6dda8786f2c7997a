"""Prompt work that stops when its caller stops waiting for it.

A thread cannot be interrupted, so the prompt language checks, between units of bounded
work (each scheduled text it weights and tokenizes, each wildcard it expands), whether the
caller that runs it under ``stopping_when`` has given up; if so it raises ``PlanStopped``
and the thread is free soon after, instead of reading on for seconds that nobody waits for.
Outside ``stopping_when`` (the engine's own planning) a checkpoint costs one lookup.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")

_STOP: ContextVar[threading.Event | None] = ContextVar("easel_prompt_stop", default=None)


class PlanStopped(Exception):
    """The caller stopped waiting for this plan (its budget ran out, or the bot closes)."""


def checkpoint() -> None:
    """Raise ``PlanStopped`` when the work running here was asked to stop."""
    stop = _STOP.get()
    if stop is not None and stop.is_set():
        raise PlanStopped


def stopping_when(stop: threading.Event, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)``, its checkpoints raising ``PlanStopped`` once ``stop`` is set (the
    thread that runs it, for its duration)."""
    token = _STOP.set(stop)
    try:
        return function(*args)
    finally:
        _STOP.reset(token)
