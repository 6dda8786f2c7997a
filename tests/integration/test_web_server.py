"""The bot's web server (``bot.web.server``) on a real loopback socket, against what a hostile
client does rather than a browser: a request that never finishes (slowloris) is cut off (on
the metrics server too), a mask over the size limit gets 413 without reaching the editor, and
refusals carry the security headers."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot import metrics
from bot.images import MAX_UPLOAD_BYTES
from bot.web import server
from bot.web.links import LinkSigner, RegionLink
from bot.web.server import Claim, RegionWebServer

# The server's own time for a request head, shortened so the test is quick.
HEAD_TIMEOUT_S = 1.0


class Editor:
    """A RegionEditor that serves one picture and records submits."""

    def __init__(self, picture: Path) -> None:
        self._picture = picture
        self.submitted: list[int] = []

    async def picture(self, link: RegionLink) -> Path:
        return self._picture

    async def submit(self, link: RegionLink, mask_png: bytes, prompt: str, claim: Claim) -> str:
        self.submitted.append(len(mask_png))
        return "queued"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[RegionWebServer, Editor, int]]:
    monkeypatch.setattr(server, "REQUEST_HEAD_TIMEOUT_S", HEAD_TIMEOUT_S)
    picture = tmp_path / "picture.png"
    picture.write_bytes(b"\x89PNG not really")
    editor = Editor(picture)
    port = free_port()
    web = RegionWebServer(
        LinkSigner(b"s" * 32, tmp_path / "used"),
        editor,
        f"http://127.0.0.1:{port}",
        "127.0.0.1",
        port,
    )
    await web.start()
    try:
        yield web, editor, port
    finally:
        await web.stop()


async def closed_within(port: int, sent: bytes, seconds: float) -> bool:
    """Whether the server hangs up on a connection that sent only ``sent``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(sent)
        await writer.drain()
        async with asyncio.timeout(seconds):
            while await reader.read(1024):
                pass
        return True
    except TimeoutError:
        return False
    finally:
        writer.close()


async def test_a_request_that_never_finishes_is_cut_off(
    site: tuple[RegionWebServer, Editor, int],
) -> None:
    web, _, port = site
    started = time.monotonic()
    assert await closed_within(port, b"", 5 * HEAD_TIMEOUT_S)
    assert await closed_within(port, b"GET /region/x HTTP/1.1\r\nHost: x\r\nX-Slow: a", 5)
    assert time.monotonic() - started < 10 * HEAD_TIMEOUT_S
    # Meanwhile and afterwards, ordinary requests are answered.
    link = web.url_for(web.signer.issue("0123456789abcdef", 0, 7, 5, 9, private=False))
    async with aiohttp.ClientSession() as http, http.get(link) as page:
        assert page.status == 200 and "<canvas id=mask>" in await page.text()


async def test_a_mask_over_the_size_limit_never_reaches_the_editor(
    site: tuple[RegionWebServer, Editor, int],
) -> None:
    web, editor, _ = site
    link = web.url_for(web.signer.issue("0123456789abcdef", 0, 7, 5, 9, private=False))
    form = aiohttp.FormData()
    form.add_field("mask", b"\0" * (MAX_UPLOAD_BYTES + 2**20), filename="mask.png")
    form.add_field("prompt", "")
    async with aiohttp.ClientSession() as http:
        async with http.post(link, data=form) as posted:
            assert posted.status == 413 and "too large" in await posted.text()
        async with http.get(link + "x") as refused:  # forged
            assert refused.status == 403
            for header, value in server.SECURITY_HEADERS.items():
                assert refused.headers[header] == value
    assert editor.submitted == []


async def test_the_metrics_server_cuts_off_a_request_that_never_finishes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "REQUEST_HEAD_TIMEOUT_S", HEAD_TIMEOUT_S)
    served = await metrics.serve("127.0.0.1", 0, lambda: True)
    try:
        started = time.monotonic()
        assert await closed_within(served.port, b"", 5 * HEAD_TIMEOUT_S)
        assert await closed_within(served.port, b"GET /metrics HTTP/1.1\r\nX-Slow: a", 5)
        assert time.monotonic() - started < 10 * HEAD_TIMEOUT_S
        url = f"http://127.0.0.1:{served.port}/healthz"
        async with aiohttp.ClientSession() as http, http.get(url) as health:
            assert health.status == 200
    finally:
        await served.close()


async def test_the_pages_code_is_served_from_their_own_origin_with_strict_headers(
    site: tuple[RegionWebServer, Editor, int],
) -> None:
    web, _, port = site
    link = web.url_for(web.signer.issue("0123456789abcdef", 0, 7, 5, 9, private=False))
    async with aiohttp.ClientSession() as http:
        async with http.get(link) as page:
            html = await page.text()
        # No inline code: no script or style element with a body, no on* handler or style=.
        assert not re.search(r"<script>|<style|\son[a-z]+=|\sstyle=", html), html
        files = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
        assert {path.rsplit(".", 1)[1] for path in files} == {"js", "css"}
        for path in files:
            async with http.get(f"http://127.0.0.1:{port}{path}") as answer:
                assert answer.status == 200
                kind = "text/javascript" if path.endswith(".js") else "text/css"
                assert answer.content_type == kind and answer.charset == "utf-8"
                assert answer.headers["X-Content-Type-Options"] == "nosniff"
                assert "max-age=31536000" in answer.headers["Cache-Control"]
            digest, name = path.removeprefix("/static/").split("/")
            for wrong in (f"/static/{'0' * 16}/{name}", f"/static/{digest}/server.py"):
                async with http.get(f"http://127.0.0.1:{port}{wrong}") as missing:
                    assert missing.status == 404
