"""``bot.downloads.fetch_picture`` against a real aiohttp server: a picture larger than the
cap is refused after reading about the cap (announced or not), a redirect is followed only to
an allowed origin, and an ordinary picture comes back whole."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from bot.downloads import DownloadFailed, fetch_picture
from bot.user_errors import UserError

LIMIT = 1 * 2**20
SENT_AT_MOST = 64 * 2**20  # what a server would send to a reader without a cap
CHUNK = b"\0" * (64 * 1024)
SMALL = b"\x89PNG a small picture"


@dataclass
class Served:
    bytes_sent: dict[str, int] = field(default_factory=dict)
    finished: dict[str, asyncio.Event] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)


@dataclass
class Site:
    origin: str  # http://127.0.0.1:PORT
    other_origin: str  # the same server as http://localhost:PORT: another origin
    served: Served


async def _stream(request: web.Request, served: Served, announce: bool) -> web.StreamResponse:
    name = request.path
    served.finished[name] = asyncio.Event()
    response = web.StreamResponse()
    if announce:
        response.content_length = SENT_AT_MOST
    sent = 0
    try:
        await response.prepare(request)
        while sent < SENT_AT_MOST:
            await response.write(CHUNK)
            sent += len(CHUNK)
    except (ConnectionError, RuntimeError):  # the reader hung up
        pass
    finally:
        served.bytes_sent[name] = sent
        served.finished[name].set()
    return response


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    served = Served()

    async def big(request: web.Request) -> web.StreamResponse:
        return await _stream(request, served, announce=False)

    async def announced(request: web.Request) -> web.StreamResponse:
        return await _stream(request, served, announce=True)

    async def small(request: web.Request) -> web.Response:
        served.hits.append(request.path)
        return web.Response(body=SMALL, content_type="image/png")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    app = web.Application()
    app.add_routes(
        [
            web.get("/big.png", big),
            web.get("/announced.png", announced),
            web.get("/small.png", small),
            web.get("/redirect", redirect),
        ]
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = runner.addresses[0][1]
    yield Site(f"http://127.0.0.1:{port}", f"http://localhost:{port}", served)
    await runner.cleanup()


@pytest.mark.parametrize("path", ["/big.png", "/announced.png"])
async def test_a_picture_over_the_cap_is_refused_without_reading_it_all(
    site: Site, path: str
) -> None:
    with pytest.raises(UserError, match=r"'p\.png' is larger than 1 MiB"):
        await fetch_picture(site.origin + path, "p.png", [site.origin], limit=LIMIT)
    await asyncio.wait_for(site.served.finished[path].wait(), 10)
    # Socket buffers hold a few MiB more than the reader took; never the whole 64 MiB.
    assert site.served.bytes_sent[path] < 16 * 2**20


async def test_redirects_are_followed_only_to_allowed_origins(site: Site) -> None:
    home = f"{site.origin}/redirect?to=/small.png"
    assert await fetch_picture(home, "p.png", [site.origin]) == SMALL

    away = f"{site.origin}/redirect?to={site.other_origin}/small.png"
    with pytest.raises(DownloadFailed, match="not an allowed origin"):
        await fetch_picture(away, "p.png", [site.origin])
    assert site.served.hits == ["/small.png"]  # the other origin was never asked

    with pytest.raises(DownloadFailed, match="not an allowed origin"):
        await fetch_picture(f"{site.other_origin}/small.png", "p.png", [site.origin])
    assert site.served.hits == ["/small.png"]


async def test_a_missing_picture_is_a_failed_download(site: Site) -> None:
    with pytest.raises(DownloadFailed, match="HTTP 404"):
        await fetch_picture(f"{site.origin}/gone.png", "p.png", [site.origin])
