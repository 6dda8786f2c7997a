"""Copies of results in a member's direct messages: the DM me button and the "results by DM"
setting. A copy carries the stored PNGs (with their infotext) and only a Delete button: its
other buttons would be clicked outside the job's server, where they are refused."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import discord

from bot.images import fit_under

# Discord's smallest upload limit, used when the interaction's own limit is unknown (restart).
DEFAULT_FILESIZE_LIMIT = 10 * 1024 * 1024
CANNOT_MESSAGE_USER = 50007
Sent = TypeVar("Sent")


def dms_closed(error: discord.HTTPException) -> bool:
    """Whether Discord refused because the member does not accept the bot's messages."""
    return isinstance(error, discord.Forbidden) or error.code == CANNOT_MESSAGE_USER


async def in_direct_messages(
    client: discord.Client,
    user_id: int,
    send: Callable[[discord.DMChannel], Awaitable[Sent]],
) -> Sent | None:
    """``send`` in the member's direct messages; None when those are closed to the bot."""
    try:
        return await send(await client.create_dm(discord.Object(user_id)))
    except discord.HTTPException as error:
        if not dms_closed(error):
            raise
        return None


def _fitted_file(picture: Path | bytes, filename: str, spoiler: bool) -> discord.File:
    data = picture if isinstance(picture, bytes) else picture.read_bytes()
    fitted = fit_under(data, DEFAULT_FILESIZE_LIMIT)
    name = f"{filename}.{fitted.extension}"
    return discord.File(io.BytesIO(fitted.data), filename=name, spoiler=spoiler)


async def send_copy(
    client: discord.Client,
    user_id: int,
    content: str,
    pictures: list[tuple[Path | bytes, str]],
    *,
    spoiler: bool,
    view: discord.ui.View,
    nonce: str,
) -> bool:
    """Send ``pictures`` (a stored PNG's path or the PNG itself, and a filename without
    extension) to the member's direct messages; False when those are closed to the bot. A
    send repeated with the same ``nonce`` shows once."""
    files = [
        await asyncio.to_thread(_fitted_file, path, filename, spoiler)
        for path, filename in pictures
    ]

    async def send(direct: discord.DMChannel) -> discord.Message:
        return await direct.send(
            content,
            files=files,
            view=view,
            allowed_mentions=discord.AllowedMentions.none(),
            nonce=nonce,
        )

    return await in_direct_messages(client, user_id, send) is not None
