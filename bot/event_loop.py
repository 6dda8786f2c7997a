"""The event loop `easel run` and `easel worker` run on: uvloop's where it is installed (a
dependency on Linux and macOS), else asyncio's own. Nothing else changes with it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from importlib.metadata import version
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop maker, or None for asyncio's default loop (uvloop has no Windows build)."""
    try:
        import uvloop
    except ImportError:
        return None
    new_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return new_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop ``loop_factory`` picks."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def describe(loop: asyncio.AbstractEventLoop) -> str:
    """Which event loop runs: "uvloop 0.23.0", or "asyncio" for the standard library's."""
    package = type(loop).__module__.partition(".")[0]
    if package == "uvloop":
        return f"uvloop {version('uvloop')}"
    return package
