"""A cap on the connections an HTTP server holds at once: per client and in total.

aiohttp accepts every connection; each one holds a socket and a protocol object until the
request-head cut-off (``REQUEST_HEAD_TIMEOUT_S``) or its end. ``CappedSite`` listens like
``web.TCPSite`` but puts a ``_Gate`` before aiohttp's protocol on every connection: one over
a cap gets a fixed 503 (``Retry-After``) and is closed before any request is read; one
under the caps is handed to aiohttp unchanged and counted until it is lost. A reverse proxy
(loopback in the documented set-up, ``ConnectionCaps.cap_loopback_clients``; or a peer in
``ConnectionCaps.trusted_proxies``) may be exempt from the per-client cap, never from the total.
The peer's address decides, never a header: the cap applies before any request is read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Literal, cast

from aiohttp import web, web_response
from aiohttp.http_exceptions import BadHttpMessage

from bot.web.limits import REQUEST_HEAD_TIMEOUT_S, ConnectionCaps

log = logging.getLogger(__name__)

Cap = Literal["client", "total"]

# At most one log line per server and interval, however many connections are refused.
REFUSAL_LOG_INTERVAL_S = 60.0
# How long a stopping server lets the requests in flight finish (``quiet_runner``).
REQUESTS_AT_STOP_S = 3.0
_RETRY_AFTER_S = 10
_REFUSAL_TEXT = b"Too many connections; try again in a few seconds.\n"
# Written before any request is read: a client that already sent one may see a reset instead.
# It is far smaller than a fresh socket's send buffer, so the close never waits on the client.
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Retry-After: %d\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Cache-Control: no-store\r\n"
    b"Connection: close\r\n\r\n%s"
) % (_RETRY_AFTER_S, len(_REFUSAL_TEXT), _REFUSAL_TEXT)
# What aiohttp's own error answers carry on a server that names nothing else (the metrics).
PLAIN_ANSWER_HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def _peer_address(peername: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | str:
    """A peer's IP address (an IPv4-mapped one as IPv4), else its text, else "unknown"."""
    if not isinstance(peername, tuple) or not peername or not isinstance(peername[0], str):
        return "unknown"
    try:
        address = ipaddress.ip_address(peername[0])
    except ValueError:
        return peername[0]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_of(peername: object) -> str:
    """Whom a connection counts against: its IPv4 address, or the /64 of its IPv6 address
    (one home or host is handed a whole /64, so one address each would be no cap)."""
    address = _peer_address(peername)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class ConnectionCounter:
    """The open connections of one server, by client: admits one more while both caps allow.
    A refusal is counted with ``count_refusal(server, cap)`` and logged at most once per
    ``REFUSAL_LOG_INTERVAL_S``, with how many were refused since the last line."""

    def __init__(
        self, server: str, caps: ConnectionCaps, count_refusal: Callable[[str, Cap], None]
    ) -> None:
        self._server = server
        self._caps = caps
        self._count_refusal = count_refusal
        self._open: Counter[str] = Counter()
        self._total = 0
        self._unlogged_refusals = 0
        self._last_log: float | None = None

    def admit(self, client: str, from_proxy: bool = False) -> bool:
        """``from_proxy``: the peer is a reverse proxy (``is_proxy``), exempt from the
        per-client cap."""
        cap: Cap | None = None
        if not from_proxy and self._open[client] >= self._caps.per_client:
            cap = "client"
        elif self._total >= self._caps.total:
            cap = "total"
        if cap is None:
            self._open[client] += 1
            self._total += 1
            return True
        self._count_refusal(self._server, cap)
        self._note_refusal(client, cap)
        return False

    def is_proxy(self, peername: object) -> bool:
        """Whether a connection comes from a reverse proxy held to the total cap alone:
        loopback (127.0.0.0/8, ::1) unless the caps hold it to the per-client cap, or an
        address in the caps' ``trusted_proxies``."""
        address = _peer_address(peername)
        if isinstance(address, str):
            return False
        if address.is_loopback and not self._caps.cap_loopback_clients:
            return True
        return any(address in network for network in self._caps.trusted_proxies)

    def release(self, client: str) -> None:
        self._open[client] -= 1
        if self._open[client] <= 0:
            del self._open[client]
        self._total -= 1

    def _note_refusal(self, client: str, cap: Cap) -> None:
        self._unlogged_refusals += 1
        now = time.monotonic()
        if self._last_log is not None and now - self._last_log < REFUSAL_LOG_INTERVAL_S:
            return
        log.warning(
            "%s server: %d connection(s) refused over its caps (%d per client, %d in all) "
            "since the last such line; the latest from %s, over the %s cap",
            self._server,
            self._unlogged_refusals,
            self._caps.per_client,
            self._caps.total,
            client,
            "per-client" if cap == "client" else "total",
        )
        self._unlogged_refusals = 0
        self._last_log = now


class _FixedErrorAnswers(web.RequestHandler):
    """aiohttp's protocol for one connection, whose own error answers (a request it cannot
    parse: 400, before any route, middleware or ``on_response_prepare``; a handler's
    failure: 500; a timeout: 504) carry the server's ``error_headers`` and the status alone
    as text: never the bytes it could not parse, which aiohttp's 400 quotes."""

    __slots__ = ("_error_headers",)

    def __init__(
        self, manager: web.Server, *, error_headers: Mapping[str, str], **options: Any
    ) -> None:
        super().__init__(manager, **options)
        self._error_headers = error_headers

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own logs the error (``_UnreadableRequestsInOneLine``) and refuses an
        # answer once one was begun; the answer it makes is not sent.
        super().handle_error(request, status, exc, message)
        answer = web.Response(status=status, headers=self._error_headers)
        answer.text = f"{status} {answer.reason}\n"
        answer.force_close()
        return answer


class _Gate(asyncio.Protocol):
    """One connection's protocol: admitted, it passes every event to aiohttp's handler (with
    ``error_headers`` on aiohttp's own error answers); over a cap, it answers 503 and closes,
    and aiohttp never sees the connection."""

    def __init__(
        self, server: web.Server, counter: ConnectionCounter, error_headers: Mapping[str, str]
    ) -> None:
        self._server = server
        self._counter = counter
        self._error_headers = error_headers
        self._client = ""
        self._handler: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peername = transport.get_extra_info("peername")
        client = client_of(peername)
        if not self._counter.admit(client, self._counter.is_proxy(peername)):
            # A stream server's transport writes; uvloop's does not derive from asyncio's
            # classes, so an isinstance check would refuse nobody there.
            writer = cast(asyncio.WriteTransport, transport)
            writer.write(REFUSAL)
            writer.close()
            return
        self._client = client
        # The options the runner gave its server, as aiohttp's own ``Server.__call__`` passes
        # them (private, read not copied: what the runner or the app adds stays in).
        self._handler = _FixedErrorAnswers(
            self._server,
            loop=asyncio.get_running_loop(),
            error_headers=self._error_headers,
            **self._server._kwargs,
        )
        self._handler.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handler is not None:
            self._counter.release(self._client)
            self._handler.connection_lost(exc)
            self._handler = None

    def data_received(self, data: bytes) -> None:
        if self._handler is not None:
            self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received() if self._handler is not None else None

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()


class CappedSite(web.BaseSite):
    """``web.TCPSite`` with ``counter``'s caps on the connections it accepts, and
    ``error_headers`` on aiohttp's own error answers (``_FixedErrorAnswers``)."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        counter: ConnectionCounter,
        error_headers: Mapping[str, str] = PLAIN_ANSWER_HEADERS,
    ) -> None:
        super().__init__(runner)
        self._host, self._port = host, port
        self._counter = counter
        self._error_headers = error_headers

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None  # BaseSite refuses a runner not set up
        counter, error_headers = self._counter, self._error_headers
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Gate(server, counter, error_headers), self._host, self._port
        )


class _UnreadableRequestsInOneLine(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger (``AppRunner(logger=...)``). A request it cannot parse is the
    client's doing, at will: aiohttp answers 400 and logs it with a traceback; here it is one
    debug line (as aiohttp logs a first request's unknown method). Any other failure keeps its
    traceback."""

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        error = kwargs.get("exc_info")
        if isinstance(error, BadHttpMessage):  # a request line, header or body not HTTP
            self.debug(f"{msg} (%s)", *args, type(error).__name__)
        else:
            super().exception(msg, *args, **kwargs)


_AIOHTTP_ERRORS = _UnreadableRequestsInOneLine(logging.getLogger("aiohttp.server"))


def quiet_runner(app: web.Application) -> web.AppRunner:
    """The runner of each of Easel's HTTP servers (the web pages, the metrics), served by a
    ``CappedSite``: no access log, a request aiohttp cannot parse logged in one line, the
    request-head cut-off, and no aiohttp version in the Server header. aiohttp's own answer
    to an unparseable request reaches no on_response_prepare (aio-libs/aiohttp#6463, open):
    its headers and text are the site's (``_FixedErrorAnswers``), but aiohttp adds the
    Server header as it sends it, so the banner is emptied at the source, aiohttp's default
    for every server of the process: that answer still carries a Server header, with an
    empty value."""
    web_response.SERVER_SOFTWARE = ""  # type: ignore[attr-defined]  # not re-exported
    return web.AppRunner(
        app,
        access_log=None,
        logger=_AIOHTTP_ERRORS,
        keepalive_timeout=REQUEST_HEAD_TIMEOUT_S,
        # aiohttp waits 60 s for requests in flight at cleanup: inside SIGTERM's 30 s, a page's
        # request (a submit asking Discord for its member) is cut short instead. A submit
        # journals its job whole or not at all.
        shutdown_timeout=REQUESTS_AT_STOP_S,
    )
