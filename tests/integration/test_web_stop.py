"""A stopping web server (the pages, the metrics) cuts the requests still in flight short within
``REQUESTS_AT_STOP_S``: aiohttp's own default waits 60 s, past SIGTERM's 30 s."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web

from bot.web import connections
from bot.web.connections import quiet_runner


async def test_a_request_in_flight_holds_the_servers_stop_no_longer_than_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connections, "REQUESTS_AT_STOP_S", 0.5)
    arrived = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        arrived.set()
        await asyncio.sleep(30)  # a submit waiting on Discord, say
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/", slow)
    runner = quiet_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as session:
        request = asyncio.create_task(session.get(f"http://127.0.0.1:{port}/"))
        await asyncio.wait_for(arrived.wait(), 5)
        started = time.monotonic()
        await runner.cleanup()
        took = time.monotonic() - started
        request.cancel()
        await asyncio.gather(request, return_exceptions=True)
    assert took < 5.0, f"the stop waited {took:.1f} s for a request in flight"
