"""The bot's web server (``bot.web.server``) on a real loopback socket, against what a hostile
client does rather than a browser: a request that never finishes (slowloris) is cut off (on
the metrics server too), a mask over the size limit gets 413 without reaching the editor, and
refusals carry the security headers; connections over a server's caps (per client, in
total) get a 503 and are closed, while those held go on being served; the reverse proxy on
loopback, or at an address of EASEL_WEB_TRUSTED_PROXIES, is held to the total alone."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import re
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web, web_response

from bot import event_loop, metrics
from bot.images import MAX_UPLOAD_BYTES
from bot.metrics import METRICS_REGISTRY as REGISTRY
from bot.requests import RequestError
from bot.web import assets, connections, server
from bot.web.limits import WEB_CONNECTION_CAPS, ConnectionCaps, ProxyNetworks
from bot.web.links import LinkSigner, RegionLink
from bot.web.server import Claim, RegionWebServer
from tests.conftest import ErrorLogs

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


def web_server(
    tmp_path: Path, editor: Editor, port: int, trusted_proxies: ProxyNetworks = ()
) -> RegionWebServer:
    return RegionWebServer(
        LinkSigner(b"s" * 32, tmp_path / "used"),
        editor,
        f"http://127.0.0.1:{port}",
        "127.0.0.1",
        port,
        trusted_proxies=trusted_proxies,
    )


@pytest.fixture
async def site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[RegionWebServer, Editor, int]]:
    monkeypatch.setattr(connections, "REQUEST_HEAD_TIMEOUT_S", HEAD_TIMEOUT_S)
    picture = tmp_path / "picture.png"
    picture.write_bytes(b"\x89PNG not really")
    editor = Editor(picture)
    port = free_port()
    web = web_server(tmp_path, editor, port)
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
        assert page.status == 200 and "<canvas id=mask " in await page.text()


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


async def test_a_refused_region_is_told_as_a_sentence(
    site: tuple[RegionWebServer, Editor, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The editor's refusals come from parsers written to be quoted inside other texts
    (lower case, no end mark): the page shows the member a sentence, as Discord does."""
    web, editor, _ = site

    async def refused(link: RegionLink, mask_png: bytes, prompt: str, claim: Claim) -> str:
        raise RequestError("the mask covers nothing; paint the region to change")

    monkeypatch.setattr(editor, "submit", refused)
    link = web.url_for(web.signer.issue("0123456789abcdef", 0, 7, 5, 9, private=False))
    form = aiohttp.FormData()
    form.add_field("mask", b"\x89PNG", filename="mask.png")
    form.add_field("prompt", "a cat")
    async with aiohttp.ClientSession() as http, http.post(link, data=form) as posted:
        assert posted.status == 400
        assert await posted.text() == "The mask covers nothing; paint the region to change."


_MULTIPART = {"Content-Type": "multipart/form-data; boundary=XX"}


def form_part(name: str, body: bytes, *headers: bytes) -> bytes:
    disposition = f'Content-Disposition: form-data; name="{name}"'.encode()
    return b"\r\n".join([b"--XX", disposition, *headers, b"", body, b"--XX--", b""])


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        pytest.param(form_part("prompt", b"a \xff cat"), _MULTIPART, id="not-utf-8"),
        pytest.param(form_part("prompt", b"a \xed\xa0\x80"), _MULTIPART, id="surrogate"),
        pytest.param(form_part("mask", b"\x89PNG\xff"), _MULTIPART, id="mask-as-text"),
        pytest.param(  # a mask, and a charset that spells half a surrogate pair: a \ud800 cat
            b'--XX\r\nContent-Disposition: form-data; name="mask"; filename="m.png"\r\n\r\n'
            b"\x89PNG\r\n"
            + form_part("prompt", b"a +2AA- cat", b"Content-Type: text/plain; charset=utf-7"),
            _MULTIPART,
            id="half-a-surrogate-pair",
        ),
        pytest.param(
            form_part("prompt", b"a cat", b"Content-Type: text/plain; charset=nope"),
            _MULTIPART,
            id="unknown-charset",
        ),
        pytest.param(
            form_part("prompt", b"a cat", b"Content-Transfer-Encoding: nope"),
            _MULTIPART,
            id="unknown-transfer-encoding",
        ),
        pytest.param(b"--XX\r\n\r\na cat\r\n--XX--\r\n", _MULTIPART, id="nameless-part"),
        pytest.param(form_part("prompt", b"a cat")[:-12], _MULTIPART, id="cut-short"),
        pytest.param(
            b"prompt=a+cat",
            {"Content-Type": "application/x-www-form-urlencoded; charset=nope"},
            id="urlencoded-unknown-charset",
        ),
        pytest.param(
            b"not gzip", {**_MULTIPART, "Content-Encoding": "gzip"}, id="broken-compression"
        ),
    ],
)
async def test_a_form_that_cannot_be_read_gets_a_sentence_not_a_500(
    site: tuple[RegionWebServer, Editor, int],
    body: bytes,
    headers: dict[str, str],
    error_logs: ErrorLogs,  # no traceback logged, by Easel or by aiohttp after the answer
) -> None:
    web, editor, _ = site
    link = web.url_for(web.signer.issue("0123456789abcdef", 0, 7, 5, 9, private=False))
    async with (
        aiohttp.ClientSession() as http,
        http.post(link, data=body, headers=headers) as posted,
    ):
        assert posted.status == 400
        assert "prompt as UTF-8 text" in await posted.text()
        for header, value in server.SECURITY_HEADERS.items():
            assert posted.headers[header] == value
    assert editor.submitted == []


async def test_the_metrics_server_cuts_off_a_request_that_never_finishes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connections, "REQUEST_HEAD_TIMEOUT_S", HEAD_TIMEOUT_S)
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


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(port: int, client: str = "127.0.0.1") -> Connection:
    """A connection to the server on loopback from ``client`` (any 127.x address is this
    machine's, so one test plays several clients)."""
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(client, 0))


async def answer(connection: Connection, request: bytes = b"") -> bytes:
    """All the server sends on ``connection`` after ``request``, up to its hang-up."""
    reader, writer = connection
    try:
        writer.write(request)
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


async def is_served(connection: Connection, path: str = "/nowhere") -> bool:
    """Whether aiohttp answers a request on ``connection`` (404 for /nowhere); the server
    closes it afterwards, which releases its place before the client sees the end."""
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    status = (await answer(connection, request)).split(b"\r\n", 1)[0]
    return status in (b"HTTP/1.1 404 Not Found", b"HTTP/1.1 200 OK")


async def is_refused(connection: Connection) -> bool:
    """Whether the server answered 503 before any request and hung up."""
    return (await answer(connection)).startswith(b"HTTP/1.1 503 Service Unavailable\r\n")


def refusals(server_name: str, cap: str) -> float:
    labels = {"server": server_name, "cap": cap}
    return REGISTRY.get_sample_value("easel_http_connections_refused_total", labels) or 0.0


@pytest.fixture
def small_caps(monkeypatch: pytest.MonkeyPatch) -> ConnectionCaps:
    # Loopback held to the per-client cap too, so that 127.x addresses play outside clients.
    caps = ConnectionCaps(per_client=3, total=5, cap_loopback_clients=True)
    monkeypatch.setattr(server, "WEB_CONNECTION_CAPS", caps)
    return caps


@pytest.fixture
def shipped_caps_made_small(monkeypatch: pytest.MonkeyPatch) -> ConnectionCaps:
    caps = dataclasses.replace(WEB_CONNECTION_CAPS, per_client=3, total=5)
    monkeypatch.setattr(server, "WEB_CONNECTION_CAPS", caps)
    return caps


async def test_the_reverse_proxy_on_loopback_is_held_to_the_total_alone(
    shipped_caps_made_small: ConnectionCaps, site: tuple[RegionWebServer, Editor, int]
) -> None:
    # An HTTP/2 proxy opens a connection per request in flight (a dashboard page asks for 24
    # thumbnails at once), all from loopback.
    _, _, port = site
    held = [await connect(port) for _ in range(shipped_caps_made_small.total)]
    refused_before = refusals("web", "total")
    assert await is_refused(await connect(port))
    assert refusals("web", "total") == refused_before + 1
    assert all([await is_served(connection) for connection in held])


def test_an_outside_client_is_held_to_its_cap_beside_an_exempt_proxy() -> None:
    counter = connections.ConnectionCounter(
        "web", ConnectionCaps(per_client=1, total=4, cap_loopback_clients=False), lambda *_: None
    )
    assert counter.admit("192.0.2.7") and not counter.admit("192.0.2.7")
    assert all(counter.admit("127.0.0.1", from_proxy=True) for _ in range(3))
    assert not counter.admit("127.0.0.1", from_proxy=True)  # the total still holds


async def test_a_trusted_proxy_on_another_host_is_held_to_the_total_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A proxy in another container reaches the bot from the compose network's gateway; here
    # 127.0.0.2 plays it, inside EASEL_WEB_TRUSTED_PROXIES, and 127.0.0.1 a client outside.
    caps = ConnectionCaps(per_client=2, total=6, cap_loopback_clients=True)
    monkeypatch.setattr(server, "WEB_CONNECTION_CAPS", caps)
    port = free_port()
    trusted = (ipaddress.ip_network("127.0.0.2/32"), ipaddress.ip_network("10.0.0.0/8"))
    web = web_server(tmp_path, Editor(tmp_path / "none.png"), port, trusted)
    await web.start()
    try:
        held = [await connect(port, "127.0.0.1") for _ in range(2)]
        by_client, in_all = refusals("web", "client"), refusals("web", "total")
        assert await is_refused(await connect(port, "127.0.0.1"))
        held += [await connect(port, "127.0.0.2") for _ in range(4)]  # twice its 2 per client
        assert await is_refused(await connect(port, "127.0.0.2"))
        assert (refusals("web", "client"), refusals("web", "total")) == (by_client + 1, in_all + 1)
        assert all([await is_served(connection) for connection in held])
    finally:
        await web.stop()


@pytest.mark.parametrize(
    ("peer", "proxy"),
    [
        (("172.18.0.1", 5000), True),  # the compose network's gateway, trusted by address
        (("10.1.2.3", 5000), True),
        (("::ffff:10.1.2.3", 5000, 0, 0), True),
        (("fd00::7", 5000, 0, 0), True),
        (("172.18.0.2", 5000), False),
        (("11.0.0.1", 5000), False),
        (("2001:db8::1", 5000, 0, 0), False),
        (("127.0.0.1", 5000), False),  # these caps hold loopback to the per-client cap
        (None, False),
    ],
)
def test_a_peer_in_the_trusted_proxies_is_exempt_and_one_outside_is_not(
    peer: object, proxy: bool
) -> None:
    trusted = tuple(ipaddress.ip_network(n) for n in ("172.18.0.1", "10.0.0.0/8", "fd00::/8"))
    caps = ConnectionCaps(per_client=1, total=4, trusted_proxies=trusted)
    counter = connections.ConnectionCounter("web", caps, lambda *_: None)
    assert counter.is_proxy(peer) is proxy
    client = connections.client_of(peer)
    assert counter.admit(client, counter.is_proxy(peer))
    assert counter.admit(client, counter.is_proxy(peer)) is proxy  # over 1 per client


async def test_a_client_over_its_connection_cap_is_refused_while_others_are_served(
    small_caps: ConnectionCaps,
    site: tuple[RegionWebServer, Editor, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, _, port = site
    held = [await connect(port) for _ in range(small_caps.per_client)]
    refused_before = refusals("web", "client")
    assert await is_refused(await connect(port))
    assert await is_refused(await connect(port))
    assert refusals("web", "client") == refused_before + 2
    logged = [r for r in caplog.records if r.name == connections.__name__]
    assert len(logged) == 1 and "1 connection(s) refused" in logged[0].getMessage()

    assert await is_served(await connect(port, "127.0.0.2"))  # another client is not capped
    assert await is_served(held.pop())  # the connections held are served...
    assert await is_served(await connect(port))  # ...and a closed one's place is free again
    for _, writer in held:
        writer.close()


async def test_connections_over_the_servers_total_are_refused(
    small_caps: ConnectionCaps, site: tuple[RegionWebServer, Editor, int]
) -> None:
    _, _, port = site
    clients = ["127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.2", "127.0.0.3"]
    held = [await connect(port, client) for client in clients[: small_caps.total]]
    refused_before = refusals("web", "total")
    assert await is_refused(await connect(port, "127.0.0.4"))
    assert refusals("web", "total") == refused_before + 1
    assert await is_served(held.pop(0))
    assert await is_served(await connect(port, "127.0.0.4"))
    for _, writer in held:
        writer.close()


async def test_the_metrics_server_caps_a_clients_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "METRICS_CONNECTION_CAPS", ConnectionCaps(per_client=2, total=8))
    served = await metrics.serve("127.0.0.1", 0, lambda: True)
    try:
        held = [await connect(served.port) for _ in range(2)]
        assert await is_refused(await connect(served.port))
        assert await is_served(held.pop(), "/healthz")
        assert await is_served(await connect(served.port), "/healthz")
        held[0][1].close()
    finally:
        await served.close()


def test_a_connection_over_the_cap_is_refused_on_the_loop_easel_run_serves_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``easel run`` serves on uvloop's loop (``bot.event_loop``), whose transports derive from
    none of asyncio's transport classes: the refusal must not depend on them."""
    monkeypatch.setattr(metrics, "METRICS_CONNECTION_CAPS", ConnectionCaps(per_client=1, total=8))

    async def one_over_the_cap() -> tuple[str, bool]:
        served = await metrics.serve("127.0.0.1", 0, lambda: True)
        try:
            held = await connect(served.port)
            refused = await is_refused(await connect(served.port))
            held[1].close()
            return event_loop.describe(asyncio.get_running_loop()), refused
        finally:
            await served.close()

    loop, refused = event_loop.run(one_over_the_cap())
    assert loop.startswith("uvloop") and refused


@pytest.mark.parametrize(
    ("peer", "client"),
    [
        (("192.0.2.7", 5000), "192.0.2.7"),
        (("::ffff:192.0.2.7", 5000, 0, 0), "192.0.2.7"),
        (("2001:db8:1:2:aaaa::1", 5000, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:bbbb::9", 5001, 0, 0), "2001:db8:1:2::/64"),
        (None, "unknown"),
    ],
)
def test_an_ipv6_client_is_its_slash_64(peer: object, client: str) -> None:
    assert connections.client_of(peer) == client


@pytest.mark.parametrize(
    ("peer", "loopback"),
    [
        (("127.0.0.1", 5000), True),
        (("127.3.2.1", 5000), True),
        (("::1", 5000, 0, 0), True),
        (("::ffff:127.0.0.1", 5000, 0, 0), True),
        (("192.0.2.7", 5000), False),
        (("::ffff:192.0.2.7", 5000, 0, 0), False),
        (("2001:db8::1", 5000, 0, 0), False),
        (None, False),
    ],
)
def test_loopback_is_this_machine_s_addresses(peer: object, loopback: bool) -> None:
    exempt_loopback = ConnectionCaps(per_client=1, total=4, cap_loopback_clients=False)
    counter = connections.ConnectionCounter("web", exempt_loopback, lambda *_: None)
    assert counter.is_proxy(peer) is loopback


async def test_a_body_trickled_on_a_valid_link_is_cut_off(
    site: tuple[RegionWebServer, Editor, int],
    monkeypatch: pytest.MonkeyPatch,
    error_logs: ErrorLogs,  # nothing logged by aiohttp for the body left unread
) -> None:
    body_timeout_s = 1.0
    monkeypatch.setattr(server, "BODY_READ_TIMEOUT_S", body_timeout_s)
    web, editor, port = site
    token = web.signer.issue("0123456789abcdef", 0, 7, 5, 9, private=False)
    body = form_part("prompt", b"a cat " * 1000)
    head = (
        f"POST /region/{token} HTTP/1.1\r\nHost: x\r\nContent-Type: {_MULTIPART['Content-Type']}"
        f"\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    reader, writer = await connect(port)

    async def trickle() -> None:  # a byte every 50 ms: the whole body would take 5 minutes
        with contextlib.suppress(ConnectionError):
            for byte in body:
                writer.write(bytes([byte]))
                await asyncio.sleep(0.05)

    writer.write(head)
    trickling = asyncio.create_task(trickle())
    try:
        # The answer's end (aiohttp then reads what comes for its lingering 10 s, and hangs up).
        async with asyncio.timeout(10 * body_timeout_s):
            answered = await reader.readuntil(b"send it again.")
    finally:
        trickling.cancel()
        writer.close()
    assert answered.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in answered
    assert editor.submitted == []


async def test_every_answer_has_the_security_headers_and_no_version_banner(
    site: tuple[RegionWebServer, Editor, int],
) -> None:
    """aiohttp's own answers (an unknown path, a wrong method) too; a /static file keeps
    its own caching."""
    web, _, port = site
    origin = f"http://127.0.0.1:{port}"
    link = web.url_for(web.signer.issue("0123456789abcdef", 0, 7, 5, 9, private=False))
    async with aiohttp.ClientSession() as http:
        async with http.get(link) as page:
            [script] = re.findall(r'src="(/static/[^"]+)"', await page.text())
        for method, url, status in (
            ("GET", f"{origin}/nowhere", 404),
            ("PUT", link, 405),
            ("GET", link, 200),
        ):
            async with http.request(method, url) as answered:
                assert answered.status == status and "Server" not in answered.headers
                for header, value in server.SECURITY_HEADERS.items():
                    assert answered.headers[header] == value, (method, url, header)
        async with http.get(origin + script) as asset:
            assert asset.status == 200 and "Server" not in asset.headers
            assert asset.headers["Cache-Control"] == assets.ASSET_HEADERS["Cache-Control"]


async def test_a_request_aiohttp_cannot_parse_gets_an_empty_server_header_and_one_log_line_at_most(
    site: tuple[RegionWebServer, Editor, int], caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp answers 400 itself, past every route and signal; a client can send such a
    request at will, so no traceback is logged for it."""
    _, _, port = site
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    for malformed in (
        b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    ):
        sent = await answer(await connect(port), malformed)
        lines = sent.split(b"\r\n\r\n", 1)[0].lower().split(b"\r\n")
        assert lines[0].split(b" ", 2)[1] == b"400", lines
        # Its Server header is sent, emptied of aiohttp's and Python's versions.
        assert [line for line in lines if line.startswith(b"server:")] == [b"server: "], lines
    logged = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(logged) == 2 and not any(r.exc_info or r.levelno > logging.DEBUG for r in logged)


async def test_a_request_aiohttp_cannot_parse_gets_the_security_headers_and_a_fixed_text(
    site: tuple[RegionWebServer, Editor, int],
) -> None:
    """aiohttp's own 400 went out without the pages' headers, quoting the bytes it could not
    parse (a page that reflects a tag, were it read as HTML)."""
    _, _, port = site
    for malformed in (
        b"GET / HTTP/1.1\r\nHost: x\r\n<script>alert(1)</script>\r\n\r\n",
        b"\x16\x03\x01<b>TLS on the HTTP port</b>\r\n\r\n",
    ):
        head, body = (await answer(await connect(port), malformed)).split(b"\r\n\r\n", 1)
        status, *lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines)
        assert status.split(" ")[1] == "400", status
        for header, value in server.SECURITY_HEADERS.items():
            assert headers.get(header) == value, (malformed, header)
        assert body == b"400 Bad Request\n"


async def test_the_metrics_server_alone_answers_an_unparseable_request_as_quietly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without the web pages: aiohttp's default banner as at import, set back for this test
    (the emptied default is process-wide once any server started)."""
    monkeypatch.setattr(web_response, "SERVER_SOFTWARE", "Python/3 aiohttp/3")
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    served = await metrics.serve("127.0.0.1", 0, lambda: True)
    try:
        malformed = b"GET /metrics HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n"
        sent = await answer(await connect(served.port), malformed)
    finally:
        await served.close()
    lines = sent.split(b"\r\n\r\n", 1)[0].lower().split(b"\r\n")
    assert [line for line in lines if line.startswith(b"server:")] == [b"server: "], lines
    logged = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(logged) == 1 and not logged[0].exc_info and logged[0].levelno == logging.DEBUG


async def test_a_capped_sites_connections_take_the_options_the_app_gives_its_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The site makes each connection's handler itself: with the runner's and the app's
    options (here a smaller header cap), not a list of its own."""
    # Set back after the test: quiet_runner empties it for the process.
    banner = web_response.SERVER_SOFTWARE  # type: ignore[attr-defined]  # not re-exported
    monkeypatch.setattr(web_response, "SERVER_SOFTWARE", banner)

    async def served(_: web.Request) -> web.Response:
        return web.Response(text="served")

    app = web.Application(handler_args={"max_field_size": 64})
    app.router.add_get("/", served)
    runner = connections.quiet_runner(app)
    await runner.setup()
    try:
        counter = connections.ConnectionCounter("test", WEB_CONNECTION_CAPS, lambda *_: None)
        port = free_port()
        await connections.CappedSite(runner, "127.0.0.1", port, counter).start()
        request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Long: %s\r\n\r\n" % (
            b"a" * 100
        )
        sent = await answer(await connect(port), request)
    finally:
        await runner.cleanup()
    assert sent.split(b" ", 2)[1] == b"400", sent
    assert sent.endswith(b"\r\n\r\n400 Bad Request\n")  # the site's own error answer


async def test_a_refused_submit_is_told_in_plain_text(
    site: tuple[RegionWebServer, Editor, int],
) -> None:
    """The page's script shows the answer as text: no markup to read."""
    web, editor, _ = site
    link = web.url_for(web.signer.issue("0123456789abcdef", 0, 7, 5, 9, private=False))
    form = aiohttp.FormData()
    form.add_field("mask", b"\x89PNG", filename="mask.png")
    async with aiohttp.ClientSession() as http, http.post(link + "x", data=form) as refused:
        assert refused.status == 403 and refused.content_type == "text/plain"
        assert await refused.text() == "This link is not one Easel made."
    assert editor.submitted == []


LARGE_PICTURE_BYTES = 2**25


async def test_a_picture_read_too_slowly_is_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error_logs: ErrorLogs
) -> None:
    """The connection is released (the client's one place under a cap of 1 is free again)."""
    write_timeout_s = 1.0
    monkeypatch.setattr(server, "PICTURE_WRITE_TIMEOUT_S", write_timeout_s)
    one_each = ConnectionCaps(per_client=1, total=4, cap_loopback_clients=True)
    monkeypatch.setattr(server, "WEB_CONNECTION_CAPS", one_each)
    async with serving_a_large_picture(tmp_path) as (port, get):
        reader, writer = await connect(port, "127.0.0.3")
        writer.write(get)
        assert (await reader.readexactly(12)) == b"HTTP/1.1 200"  # then it reads no more
        assert await is_refused(await connect(port, "127.0.0.3"))
        async with asyncio.timeout(10 * write_timeout_s):
            while not await is_served(await connect(port, "127.0.0.3")):  # noqa: ASYNC110 (polled)
                await asyncio.sleep(write_timeout_s / 10)
        writer.close()


@contextlib.asynccontextmanager
async def serving_a_large_picture(tmp_path: Path) -> AsyncIterator[tuple[int, bytes]]:
    """A server whose mask page's picture is past what the sockets' buffers hold: its port,
    and the request for that picture."""
    picture = tmp_path / "large.png"
    picture.write_bytes(b"\0" * LARGE_PICTURE_BYTES)
    port = free_port()
    web = web_server(tmp_path, Editor(picture), port)
    await web.start()
    try:
        token = web.signer.issue("0123456789abcdef", 0, 7, 5, 9, private=False)
        yield port, f"GET /region/{token}/picture HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    finally:
        await web.stop()


async def test_head_on_the_picture_sends_its_headers_alone(
    site: tuple[RegionWebServer, Editor, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next answer on the connection is not read from the picture's bytes, and the
    picture is not read at all: its length is the file's size."""
    web, _, port = site
    read: list[Path] = []
    read_bytes = Path.read_bytes

    def recorded(path: Path) -> bytes:
        read.append(path)
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", recorded)
    token = web.signer.issue("0123456789abcdef", 0, 7, 5, 9, private=False)
    sent = await answer(
        await connect(port),
        f"HEAD /region/{token}/picture HTTP/1.1\r\nHost: x\r\n\r\n"
        "GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
    )
    head, after = sent.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nContent-Length: 15\r\n" in head  # the picture's, as GET sends it
    assert after.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert read == []


async def test_a_picture_read_slowly_but_steadily_is_sent_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline is on each piece: a reader taking far longer than it in all, but never
    pausing near it, gets the whole picture."""
    write_timeout_s = 1.0
    monkeypatch.setattr(server, "PICTURE_WRITE_TIMEOUT_S", write_timeout_s)
    async with serving_a_large_picture(tmp_path) as (port, get):
        reader, writer = await connect(port)
        writer.write(get)
        await reader.readuntil(b"\r\n\r\n")
        received = 0
        started = time.monotonic()
        while received < LARGE_PICTURE_BYTES:
            piece = await reader.read(256 * 1024)
            assert piece, f"cut off after {received:,} bytes"
            received += len(piece)
            await asyncio.sleep(write_timeout_s / 50)
        assert time.monotonic() - started > write_timeout_s  # slower than the deadline in all
        writer.close()


async def test_a_picture_read_steadily_but_too_slowly_in_all_is_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error_logs: ErrorLogs
) -> None:
    """Each piece is taken well within its deadline, yet the whole is slower than the least
    rate: cut off at the overall deadline, not held for as long as the reader likes."""
    piece_timeout_s = 1.0
    monkeypatch.setattr(server, "PICTURE_WRITE_TIMEOUT_S", piece_timeout_s)
    # The whole picture's deadline: the piece's, and as long again.
    monkeypatch.setattr(server, "PICTURE_MIN_RATE_BYTES_S", LARGE_PICTURE_BYTES / piece_timeout_s)
    async with serving_a_large_picture(tmp_path) as (port, get):
        reader, writer = await connect(port)
        writer.write(get)
        await reader.readuntil(b"\r\n\r\n")
        received = 0
        with contextlib.suppress(ConnectionError):
            # At least 128 pauses of a 20th of the deadline: 3.2 times the overall one.
            while piece := await reader.read(256 * 1024):
                received += len(piece)
                await asyncio.sleep(piece_timeout_s / 20)
        assert received < LARGE_PICTURE_BYTES
        writer.close()
