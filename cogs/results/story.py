"""Results keep their story: Discord's media proxy may serve a result re-encoded (WebP) with
its PNG text gone. For pictures Easel itself posted, the job journal still has the infotext.

A picture Easel posted is named ``easel-<job>.png`` (a result, a grid) or
``easel-<job>-<picture>.png`` (U1-U4, /show, copies by DM); on a message the bot wrote, that
name is Easel's own, so it names the job. An uploaded file's name is the member's: it is
believed only for the member's own jobs.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import discord

from bot.edits import Picture
from bot.history import StoredJob
from cogs.common import services_of
from cogs.results.buttons import check_still_shown

_RESULT_NAME = re.compile(
    r"^(?:SPOILER_)?easel-(?P<job_id>[0-9a-f]{16})(?:-(?P<idx>[0-3]))?\.(?:png|jpe?g|webp)$"
)


async def _named_job(
    interaction: discord.Interaction[Any], filename: str
) -> tuple[StoredJob, int] | None:
    """The job (of the server the interaction comes from) and picture a result's name gives."""
    match = _RESULT_NAME.match(filename)
    if match is None:
        return None
    job = await services_of(interaction).history.job(match["job_id"])
    idx = int(match["idx"] or 0)
    # Results belong to the server they were made in (as for their buttons).
    if job is None or job.guild_id != interaction.guild_id or idx >= len(job.infotexts):
        return None
    return job, idx


async def _posted_job(
    interaction: discord.Interaction[Any], message: discord.Message, filename: str
) -> tuple[StoredJob, int] | None:
    """The job and picture of an attachment on one of Easel's own messages (None: anyone
    else's message, or a job no longer kept)."""
    if not _posted_by_easel(interaction, message):
        return None
    return await _named_job(interaction, filename)


def _posted_by_easel(interaction: discord.Interaction[Any], message: discord.Message) -> bool:
    client_user = interaction.client.user
    return client_user is not None and message.author.id == client_user.id


async def check_posted_picture(
    interaction: discord.Interaction[Any], message: discord.Message, filename: str
) -> tuple[StoredJob, int] | None:
    """The job and picture of attachment ``filename`` when ``message`` is Easel's own post
    of a job (None: anyone else's message, or a job no longer kept), refused unless the job's
    pictures may still be shown or used (``check_still_shown``): every path that makes a new
    job of a message's picture asks this (a re-post of a withdrawn job keeps its pixels)."""
    if not _posted_by_easel(interaction, message):
        return None
    return await check_named_picture(interaction, filename)


async def check_named_picture(
    interaction: discord.Interaction[Any], filename: str
) -> tuple[StoredJob, int] | None:
    """The job and picture an attachment's name gives (``easel-<job>-<picture>.png``, a job
    of this server), refused unless the job's pictures may still be shown or used
    (``check_still_shown``): a copy of a withdrawn job uploaded or linked under its name is
    refused too. A name is anyone's to write, so it only ever refuses (None: no such job)."""
    named = await _named_job(interaction, filename)
    if named is not None:
        await check_still_shown(services_of(interaction), named[0], interaction.user.id)
    return named


async def journaled_infotext(
    interaction: discord.Interaction[Any], message: discord.Message, filename: str
) -> str | None:
    """The infotext of a picture on one of Easel's own messages, from the job journal; None
    for anyone else's message or a job no longer kept. The member may read ``message``
    (checked by the caller); a private job was never posted where others could read it."""
    named = await _posted_job(interaction, message, filename)
    return None if named is None else named[0].infotexts[named[1]]


async def own_upload_infotext(interaction: discord.Interaction[Any], filename: str) -> str | None:
    """The infotext of an uploaded copy of one of the member's own results, by its name (a
    job whose pictures are no longer shown is refused: ``check_named_picture``)."""
    named = await check_named_picture(interaction, filename)
    if named is None or named[0].user_id != interaction.user.id:
        return None
    return named[0].infotexts[named[1]]


async def picture_with_story(
    interaction: discord.Interaction[Any],
    picture: Picture,
    message: discord.Message | None,
    filename: str,
) -> Picture:
    """``picture`` (saved from ``message``'s attachment ``filename``) with the journal's
    infotext when its own text was lost on the way. A picture of a job that Easel posted is
    made into a new job only while the job's pictures may be (``check_still_shown``)."""
    named = None if message is None else await check_posted_picture(interaction, message, filename)
    if named is None:
        return picture
    job, idx = named
    if picture.infotext is not None:
        return picture
    return dataclasses.replace(picture, infotext=job.infotexts[idx])
