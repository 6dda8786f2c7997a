"""The pages' scripts and style sheets (``bot/web/static``), served by the web server itself so
its CSP can forbid inline code and anything from elsewhere. Each URL carries a digest of its
file: a browser may keep it for a year, and a changed file gets a new URL."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

_FOLDER = Path(__file__).parent / "static"
_CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css"}
ASSET_HEADERS = {
    "Cache-Control": "public, max-age=31536000, immutable",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    digest: str


def _load() -> dict[str, Asset]:
    assets = {}
    for path in sorted(_FOLDER.iterdir()):
        body = path.read_bytes()
        digest = hashlib.sha256(body).hexdigest()[:16]
        assets[path.name] = Asset(body, _CONTENT_TYPES[path.suffix], digest)
    return assets


ASSETS = _load()


def asset_url(name: str) -> str:
    return f"/static/{ASSETS[name].digest}/{name}"


async def serve_asset(request: web.Request) -> web.Response:
    """A file of ``bot/web/static`` by its name and digest; anything else is 404."""
    asset = ASSETS.get(request.match_info["name"])
    if asset is None or request.match_info["digest"] != asset.digest:
        raise web.HTTPNotFound(text="No such file.", headers={"X-Content-Type-Options": "nosniff"})
    return web.Response(
        body=asset.body, content_type=asset.content_type, charset="utf-8", headers=ASSET_HEADERS
    )


ROUTE = web.get("/static/{digest:[0-9a-f]{16}}/{name}", serve_asset)
