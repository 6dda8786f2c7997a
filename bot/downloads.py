"""Fetching a picture a member named by URL (``--sref`` with a Discord CDN address), with a
cap: never more than an upload's limit is read, whatever the server announces or sends, and a
redirect is followed only to one of the allowed origins (aiohttp only; no discord).

discord.py's ``get_from_cdn`` reads a whole response into memory, and a Discord attachment may
be hundreds of MiB: a few such references at once would fill the bot's memory before the
upload check saw their size.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp
from yarl import URL

from bot.images import MAX_UPLOAD_BYTES
from bot.user_errors import UserError

FETCH_TIMEOUT_S = 30.0
MAX_REDIRECTS = 3
_CHUNK_BYTES = 64 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)


class DownloadFailed(Exception):
    """The picture could not be fetched (gone, refused, not found, a redirect elsewhere)."""


def _origin(url: URL) -> str:
    return f"{url.scheme}://{url.raw_authority}".lower()


async def fetch_picture(
    url: str,
    name: str,
    allowed_origins: Sequence[str],
    *,
    limit: int = MAX_UPLOAD_BYTES,
    proxy: str | None = None,
    proxy_auth: aiohttp.BasicAuth | None = None,
) -> bytes:
    """The bytes at ``url`` (on one of ``allowed_origins``), at most ``limit`` of them: a larger
    picture is refused with a UserError naming ``name`` as soon as its size is announced or
    read past the limit. DownloadFailed for anything else that goes wrong."""
    target = URL(url)
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for _ in range(MAX_REDIRECTS + 1):
                if _origin(target) not in allowed_origins:
                    raise DownloadFailed(f"{_origin(target)} is not an allowed origin")
                async with session.get(
                    target, allow_redirects=False, proxy=proxy, proxy_auth=proxy_auth
                ) as response:
                    location = response.headers.get("Location")
                    if response.status in _REDIRECTS and location:
                        target = response.url.join(URL(location))
                        continue
                    if response.status != 200:
                        raise DownloadFailed(f"HTTP {response.status}")
                    return await _read_capped(response, name, limit)
            raise DownloadFailed(f"more than {MAX_REDIRECTS} redirects")
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        raise DownloadFailed(repr(error)) from None


async def _read_capped(response: aiohttp.ClientResponse, name: str, limit: int) -> bytes:
    too_large = UserError(
        f"{name!r} is larger than {limit / 2**20:g} MiB; attach an image of at most "
        f"{limit / 2**20:g} MiB."
    )
    if response.content_length is not None and response.content_length > limit:
        raise too_large  # announced: nothing of it is read
    data = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
        data += chunk
        if len(data) > limit:
            raise too_large
    return bytes(data)
