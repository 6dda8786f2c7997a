"""A picture fitted to Discord's upload limit where it goes. An interaction's response takes
the interaction's limit (the larger of its member's Nitro and its server's boost); a bot's own
message in a channel, its server's (boosts only); a direct message, the smallest limit."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

import discord

from bot.images import DEFAULT_FILESIZE_LIMIT, fit_under

log = logging.getLogger(__name__)

T = TypeVar("T")

# Discord's "Request entity too large": a file over the destination's upload limit.
TOO_LARGE_STATUS = 413
# Every destination takes files this large: a direct message's limit, an unboosted server's.
SMALLEST_UPLOAD_LIMIT = DEFAULT_FILESIZE_LIMIT
DIRECT_MESSAGE_UPLOAD_LIMIT = SMALLEST_UPLOAD_LIMIT


def channel_upload_limit(client: discord.Client, guild_id: int | None) -> int:
    """A bot's own message's upload limit in the server's channels (the smallest when Easel
    does not see the server: not cached yet, or left)."""
    guild = None if guild_id is None else client.get_guild(guild_id)
    return SMALLEST_UPLOAD_LIMIT if guild is None else guild.filesize_limit


def preview_note(job_id: str) -> str:
    """What a post says when its picture is a preview: the stored original stays one /show
    away wherever Discord's limit lets it through."""
    return (
        f"\nThis is a smaller preview; `/show {job_id}` gives the original where Discord's "
        "upload limit allows it."
    )


# What a re-post (/show, U1-U4) says when a picture went as a preview.
SHOWN_AS_PREVIEW = "\nShown as a smaller preview: the original is over Discord's upload limit here."


def fitted_file(
    png: bytes, stem: str, limit: int, *, spoiler: bool, description: str
) -> tuple[discord.File, bool]:
    """The picture as a file named ``stem`` under ``limit`` (per file, as Discord checks it),
    and whether that made it a preview. ``description``: what a screen reader says of it
    (``bot.alt_text``)."""
    fitted = fit_under(png, limit)
    name = f"{stem}.{fitted.extension}"
    file = discord.File(io.BytesIO(fitted.data), name, spoiler=spoiler, description=description)
    return file, fitted.is_preview


@dataclass(frozen=True)
class ResultPost:
    """A result's text and picture (None: it failed or was cancelled), the picture fitted to
    the upload limit it is sent under, the text saying when that made it a preview;
    ``description``: what a screen reader says of the picture (``bot.alt_text``)."""

    job_id: str
    text: str
    png: bytes | None
    spoiler: bool
    description: str

    def noted(self, note: str) -> ResultPost:
        """The same post with ``note`` after its text."""
        return replace(self, text=self.text + note)

    async def send(self, limit: int, send: Callable[[str, list[discord.File]], Awaitable[T]]) -> T:
        """``send`` the text and picture fitted under ``limit``. Refused as too large (the
        limit fell since Easel read it: a boost or Nitro lapsed), once more under the
        smallest limit: a rendered picture is never lost to an upload limit."""
        try:
            return await send(*await self._fitted(limit))
        except discord.HTTPException as error:
            if error.status != TOO_LARGE_STATUS or self.png is None:
                raise
            if limit <= SMALLEST_UPLOAD_LIMIT:
                raise
            log.warning("job %s: too large under %d bytes; sent as a preview", self.job_id, limit)
            return await send(*await self._fitted(SMALLEST_UPLOAD_LIMIT))

    async def _fitted(self, limit: int) -> tuple[str, list[discord.File]]:
        if self.png is None:
            return self.text, []
        file, is_preview = await asyncio.to_thread(
            fitted_file,
            self.png,
            f"easel-{self.job_id}",
            limit,
            spoiler=self.spoiler,
            description=self.description,
        )
        return (self.text + preview_note(self.job_id) if is_preview else self.text), [file]
