"""The bot's small web server (aiohttp): the Vary (Region) mask editor behind signed links,
and the routes of the admin dashboard (``bot.web.dashboard``).

It serves three routes under ``/region/<token>``: the page, its picture and the submit. Every
one checks the token first (signature, expiry, not used); a refused link gets a page saying
why and HTTP 403, and nothing is queued. What a submit does (the member still in the server
and allowed to act, the inpaint job charged to them) is the ``RegionEditor``'s business.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from aiohttp import web

from bot import metrics
from bot.images import MAX_UPLOAD_BYTES
from bot.lenient_json import holds_lone_surrogate
from bot.requests import RequestError
from bot.user_errors import UserError, as_sentence
from bot.web import assets
from bot.web.connections import CappedSite, ConnectionCounter, quiet_runner
from bot.web.limits import WEB_CONNECTION_CAPS, ProxyNetworks
from bot.web.links import DiscordDidNotAnswer, LinkRefused, LinkSigner, RegionLink
from bot.web.pages import editor_page, message_page

log = logging.getLogger(__name__)
# The multipart body: the mask PNG (an upload's limit) and a prompt.
_MAX_BODY_BYTES = MAX_UPLOAD_BYTES + 64 * 1024
_FORM_EXPECTED = "Send the mask as a PNG file and the prompt as UTF-8 text."
# How long a mask page's body may take to arrive once its token is checked (aiohttp has no
# deadline of its own): a trickled body would hold its connection, one of the capped ones.
BODY_READ_TIMEOUT_S = 60.0
# And for each piece of the picture to be taken: a reader that stops taking it is cut off, a
# slow one that keeps taking it (a large picture on a phone's link) gets all of it...
PICTURE_WRITE_TIMEOUT_S = 60.0
# ...unless it is slower than this in all (3 MB: about 4 minutes), so that a reader trickling
# just under the piece's deadline cannot hold its connection for hours.
PICTURE_MIN_RATE_BYTES_S = 16 * 1024
_PICTURE_PIECE_BYTES = 64 * 1024
# What aiohttp's form reader raises on a body it cannot read: text that is not UTF-8
# (UnicodeDecodeError, a ValueError) or names an unknown charset (LookupError), a malformed or
# cut-short multipart (ValueError), an unknown transfer encoding (RuntimeError), a body whose
# compression is broken (RequestPayloadError). Uncaught, each was a 500 with a logged traceback.
_UNREADABLE_FORM = (ValueError, LookupError, RuntimeError, web.RequestPayloadError)
SECURITY_HEADERS = {
    "Referrer-Policy": "no-referrer",  # the token is in the URL: never pass it on
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    # Scripts and style sheets only from this server's own files (bot.web.assets): an
    # injected tag or handler would not run.
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; "
        "frame-ancestors 'none'"
    ),
}


class RegionEditor(Protocol):
    """What the pages act on (``cogs.region`` implements it with the bot's services)."""

    async def picture(self, link: RegionLink) -> Path:
        """The picture the link names, after checking the member may still act on it
        (LinkRefused otherwise)."""
        ...

    async def submit(self, link: RegionLink, mask_png: bytes, prompt: str, claim: Claim) -> str:
        """Queue the inpaint; ``claim()`` marks the link used just before the job is
        journaled. Returns the sentence for the member; raises LinkRefused or UserError."""
        ...


class Claim(Protocol):
    def __call__(self) -> None: ...


class MorePages(Protocol):
    """Other pages on the same server (the dashboard): their routes, and what they hold that
    stops with the server."""

    def routes(self) -> list[web.RouteDef]: ...

    async def close(self) -> None: ...


def html_page(text: str, status: int = 200) -> web.Response:
    return web.Response(
        text=text, status=status, content_type="text/html", headers=SECURITY_HEADERS
    )


def refused_page(reason: LinkRefused) -> web.Response:
    if isinstance(reason, DiscordDidNotAnswer):
        return html_page(message_page("Try again", str(reason)), status=503)
    return html_page(message_page("Link refused", str(reason)), status=403)


class RegionWebServer:
    """Serves the mask editor at ``public_url`` (what members open), listening on ``host:port``."""

    def __init__(
        self,
        signer: LinkSigner,
        editor: RegionEditor,
        public_url: str,
        host: str,
        port: int,
        more_pages: Sequence[MorePages] = (),
        trusted_proxies: ProxyNetworks = (),
    ) -> None:
        self.signer = signer
        self._editor = editor
        self._more_pages = more_pages
        self._public_url = public_url.rstrip("/")
        self._host, self._port = host, port
        self._trusted_proxies = trusted_proxies  # EASEL_WEB_TRUSTED_PROXIES
        self._runner: web.AppRunner | None = None

    def url_for(self, token: str) -> str:
        return f"{self._public_url}/region/{token}"

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        app.on_response_prepare.append(_secure_headers)
        app.add_routes(
            [
                web.get("/region/{token}", self._show),
                web.get("/region/{token}/picture", self._picture),
                web.post("/region/{token}", self._submit),
                assets.ROUTE,
                *(route for pages in self._more_pages for route in pages.routes()),
            ]
        )
        app.on_cleanup.append(self._close_pages)  # on stop(): the runner's cleanup
        return app

    async def _close_pages(self, _app: web.Application) -> None:
        for pages in self._more_pages:
            await pages.close()

    async def start(self) -> None:
        self._runner = quiet_runner(self._app())  # tokens stay out of logs
        await self._runner.setup()
        caps = dataclasses.replace(WEB_CONNECTION_CAPS, trusted_proxies=self._trusted_proxies)
        counter = ConnectionCounter("web", caps, metrics.http_connection_refused)
        await CappedSite(
            self._runner, self._host, self._port, counter, error_headers=SECURITY_HEADERS
        ).start()
        log.info("mask editor listening on %s:%s", self._host, self._port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _show(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        try:
            link = self.signer.check(token)
            await self._editor.picture(link)
        except LinkRefused as refused:
            return refused_page(refused)
        return html_page(editor_page(f"/region/{token}/picture"))

    async def _picture(self, request: web.Request) -> web.StreamResponse:
        try:
            path = await self._editor.picture(self.signer.check(request.match_info["token"]))
        except LinkRefused as refused:
            return refused_page(refused)
        # HEAD: the headers alone, the length from the file's size (a StreamResponse would
        # send what is written, and the next answer on the connection would be read from the
        # picture's bytes).
        if request.method == "HEAD":
            data, size = b"", (await asyncio.to_thread(path.stat)).st_size
        else:
            data = await asyncio.to_thread(path.read_bytes)
            size = len(data)
        response = web.StreamResponse(headers=SECURITY_HEADERS)
        response.content_type, response.content_length = "image/png", size
        await response.prepare(request)
        pieces = memoryview(data)
        whole_s = PICTURE_WRITE_TIMEOUT_S + len(pieces) / PICTURE_MIN_RATE_BYTES_S
        try:
            async with asyncio.timeout(whole_s):
                for start in range(0, len(pieces), _PICTURE_PIECE_BYTES):
                    async with asyncio.timeout(PICTURE_WRITE_TIMEOUT_S):
                        await response.write(pieces[start : start + _PICTURE_PIECE_BYTES])
                async with asyncio.timeout(PICTURE_WRITE_TIMEOUT_S):
                    await response.write_eof()
        except TimeoutError:
            if request.transport is not None:  # what is left unsent is dropped
                request.transport.abort()
        return response

    async def _submit(self, request: web.Request) -> web.Response:
        try:
            link = self.signer.check(request.match_info["token"])
        except LinkRefused as refused:
            return plain_text(str(refused), 403)  # the page's script shows it as text
        try:
            async with asyncio.timeout(BODY_READ_TIMEOUT_S):
                form = await request.post()
        except TimeoutError:
            answer = plain_text("The mask took too long to arrive; send it again.", 408)
            answer.force_close()  # the rest of the body is not waited for
            return answer
        except web.HTTPRequestEntityTooLarge:
            return plain_text("The mask is too large; paint on the page Easel gave you.", 413)
        except _UNREADABLE_FORM as unreadable:
            log.info("a mask page's form was unreadable: %s", type(unreadable).__name__)
            answer = plain_text(_FORM_EXPECTED, 400)
            if request.content.exception() is not None:
                # The body failed (its compression is broken): none of the rest can be read.
                # Ended here, with its connection, aiohttp does not try to read the rest
                # after this answer and log that failure as an unhandled exception.
                request.content.feed_eof()
                answer.force_close()
            return answer
        mask, prompt = form.get("mask"), form.get("prompt", "")
        if not isinstance(mask, web.FileField) or not isinstance(prompt, str):
            return plain_text(_FORM_EXPECTED, 400)
        if holds_lone_surrogate(prompt):
            # A client naming another charset (utf-7, unicode_escape) can spell one, which the
            # tokenizer and SQLite fail on; refused, its sender is told (a Discord payload's is
            # replaced: ``bot.lenient_json``).
            return plain_text(f"The prompt holds half a surrogate pair. {_FORM_EXPECTED}", 400)
        try:
            sentence = await self._editor.submit(
                link, mask.file.read(), prompt, lambda: self.signer.use(link)
            )
        except DiscordDidNotAnswer as failed:
            return plain_text(str(failed), 503)
        except LinkRefused as refused:
            return plain_text(str(refused), 403)
        except (UserError, RequestError) as error:
            return plain_text(as_sentence(str(error)), 400)
        return plain_text(sentence, 200)


def plain_text(text: str, status: int) -> web.Response:
    return web.Response(text=text, status=status, headers=SECURITY_HEADERS)


async def _secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer, aiohttp's own (404, 405, 500...) included: no version banner, and the
    security headers where the route set none (a /static file keeps its caching)."""
    response.headers.popall("Server", None)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
