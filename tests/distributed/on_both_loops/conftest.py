"""The tests here run on asyncio's event loop and on the one `easel run` and `easel worker`
serve on (``bot.event_loop``: uvloop's where installed), which fail differently where a
socket the broker closed is written to."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest

from bot.event_loop import loop_factory


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    served_on = loop_factory()
    if served_on is None:  # asyncio's own, as where uvloop has no build
        return {"asyncio": asyncio.new_event_loop}
    return {"asyncio": asyncio.new_event_loop, "served-on": served_on}
