"""Results keep their story: Discord's media proxy may serve a result re-encoded (WebP) with
its PNG text gone. For pictures Easel itself posted, the job journal still has the infotext.

A picture Easel posted is named ``easel-<job>.png`` (a result, a grid) or
``easel-<job>-<picture>.png`` (U1-U4, /show, copies by DM); on a message the bot wrote, that
name is Easel's own, so it names the job. An uploaded file's name is the member's: it is
believed only for the member's own jobs. Its pixels are Easel's to recognise, whatever its name
(``checked_upload``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Sequence
from typing import Any

import discord

from bot.edits import Picture
from bot.history import StoredJob
from bot.images import DecodedUpload, decoded_upload
from bot.policy.moderation import check_age_restriction_kept
from bot.user_errors import Reason, UserError
from cogs.common import services_of
from cogs.results.buttons import check_still_shown
from cogs.visibility import (
    CHANNEL_CHECK_FAILED,
    is_age_restricted,
    log_discord_failed,
    made_age_restricted,
)

log = logging.getLogger(__name__)

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


def _posted_by_easel(interaction: discord.Interaction[Any], message: discord.Message) -> bool:
    client_user = interaction.client.user
    return client_user is not None and message.author.id == client_user.id


async def check_posted_picture(
    interaction: discord.Interaction[Any], message: discord.Message, filename: str
) -> tuple[StoredJob, int] | None:
    """The job and picture of attachment ``filename`` when ``message`` is Easel's own post
    of a job (None: anyone else's message, or a job no longer kept), refused unless the job's
    pictures may be used here (``check_named_picture``): every path that makes a new job of,
    or reads, a message's picture asks this (a re-post of a withdrawn job keeps its pixels)."""
    if not _posted_by_easel(interaction, message):
        return None
    return await check_named_picture(interaction, filename)


async def check_named_picture(
    interaction: discord.Interaction[Any], filename: str
) -> tuple[StoredJob, int] | None:
    """The job and picture an attachment's name gives (``easel-<job>-<picture>.png``, a job
    of this server), refused unless it may be used here (``check_stored_pictures_usable``): a
    copy of a withdrawn job uploaded or linked under its name is refused too. A name is
    anyone's to write, so it only ever refuses (None: no such job)."""
    named = await _named_job(interaction, filename)
    if named is not None:
        try:
            await check_stored_pictures_usable(interaction, [named[0]])
        except CHANNEL_CHECK_FAILED as failed:
            job = named[0]
            log_discord_failed(f"what channel {job.channel_id} is (job {job.job_id})", failed)
            raise UserError(
                "Discord did not say whether the channel that picture was made in is "
                "age-restricted; try again in a moment.",
                Reason.DISCORD,
            ) from None
    return named


async def check_stored_pictures_usable(
    interaction: discord.Interaction[Any], jobs: Sequence[StoredJob]
) -> None:
    """The one rule for stored pictures used again where the member is now, found by name,
    link or pixels: refused when one of ``jobs`` was withdrawn, or is age-restricted
    (``made_age_restricted``: journaled so, or its channel is now) and this channel is not,
    all read from flags first; then when what the first (the newest) was conditioned on renders
    a word banned since (``check_still_shown``). Pictures with the same pixels come of the same
    texts, so the newest speaks for them all. Raises one of ``CHANNEL_CHECK_FAILED`` when
    Discord does not say whether a job's channel is age-restricted."""
    services = services_of(interaction)
    for job in jobs:
        if job.withdrawn:  # refused at once, reading no text
            await check_still_shown(services, job, interaction.user.id)
    if not is_age_restricted(interaction.channel):  # anything may be used in one
        # Every journaled flag before asking Discord: its failure on one job's channel must
        # not let another job's flag go unread.
        check_age_restriction_kept(
            source_age_restricted=any(job.age_restricted for job in jobs),
            here_age_restricted=False,
        )
        for job in jobs:
            check_age_restriction_kept(
                source_age_restricted=await _made_age_restricted(interaction, job),
                here_age_restricted=False,
            )
    if jobs:
        await check_still_shown(services, jobs[0], interaction.user.id)


async def _made_age_restricted(interaction: discord.Interaction[Any], job: StoredJob) -> bool:
    if job.guild_id is None:  # direct messages: no channel flag to read
        return job.age_restricted
    return await made_age_restricted(
        interaction.client,
        job.guild_id,
        job.channel_id,
        restricted_when_made=job.age_restricted,
    )


# Refusals that are a verdict on a stored picture; any other (its texts not read in time:
# ``STORED_TOO_LONG``, ``STILL_PLANNING``) is none.
_VERDICTS = frozenset({Reason.PERMISSION, Reason.BANNED_WORD, Reason.NSFW})


@dataclasses.dataclass(frozen=True)
class CheckedUpload(DecodedUpload):
    # The job of this server whose picture it is, by its pixels (the newest such; None: no
    # Easel picture here): the parent of a job made of it, withdrawn with it.
    made_from: str | None


async def checked_upload(
    interaction: discord.Interaction[Any], filename: str, data: bytes, *, as_png: bool = False
) -> CheckedUpload:
    """A picture a member uploaded or linked, checked as an upload and decoded once on a
    picture thread, in the member's line (``decoded_upload``, ``bot.picture_work``; ``as_png``:
    with its PNG), refused when its pixels are those of
    a job of this server that may not be used here (``check_stored_pictures_usable``),
    whatever its name or PNG text: every upload a job is made of, or read from, passes here.
    A lossless copy is recognised (``bot.images.pixel_digest``), of a picture or of the grid a
    job of several was posted as, as stored or as its EXIF orientation shows it; a lossy
    re-encode, a crop, or a picture stored before its digest was recorded (migration 0014) is
    not. Another server's jobs never refuse (its
    moderators withdrew nothing here), and a job still shown refuses nothing but by the age
    rule, and tells nothing: a match whose channel or texts cannot be read within the stored
    check's budget counts as no match (a refusal then would say that such a picture exists; a
    withdrawn one, read from its flag, is always refused: a moderator's withdrawal no older job
    with those pixels outlives, ``History.jobs_with_picture``). A match is its ``made_from``,
    checked in time or not: a moderator's later deletion of it reaches the job made of it."""
    in_server = interaction.guild_id is not None  # direct messages: no moderator there
    services = services_of(interaction)
    upload = await services.picture_work.run(
        interaction.user.id, decoded_upload, filename, data, digest=in_server, as_png=as_png
    )
    if interaction.guild_id is None or not upload.pixel_digests:
        return _with_source(upload, None)
    matches = await services.history.jobs_with_picture(interaction.guild_id, *upload.pixel_digests)
    checked = _with_source(upload, matches[0].job_id if matches else None)
    if not matches:
        return checked
    try:
        async with asyncio.timeout(services.prompts.stored_budget_s):
            await check_stored_pictures_usable(interaction, matches)
    except CHANNEL_CHECK_FAILED as undecided:
        log.info("an upload's match was not checked in time: %s", type(undecided).__name__)
    except UserError as refused:
        if refused.reason not in _VERDICTS:
            log.info("an upload's match was not checked: %s", refused.reason)
        else:
            raise
    return checked


def _with_source(upload: DecodedUpload, made_from: str | None) -> CheckedUpload:
    return CheckedUpload(
        upload.image, upload.infotext, upload.pixel_digests, upload.png, made_from=made_from
    )


async def journaled_infotext(
    interaction: discord.Interaction[Any], message: discord.Message, filename: str
) -> str | None:
    """The infotext of a picture on one of Easel's own messages, from the job journal; None
    for anyone else's message or a job no longer kept, refused unless it may be used here
    (``check_posted_picture``). The member may read ``message`` (checked by the caller); a
    private job was never posted where others could read it."""
    named = await check_posted_picture(interaction, message, filename)
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
) -> tuple[Picture, str | None]:
    """``picture`` (saved from ``message``'s attachment ``filename``) with the journal's
    infotext when its own text was lost on the way, and the job Easel posted it as (None:
    not Easel's post), the parent of the job made of it. A picture of a job that Easel posted
    is made into a new job only while the job's pictures may be (``check_still_shown``)."""
    named = None if message is None else await check_posted_picture(interaction, message, filename)
    if named is None:
        return picture, None
    job, idx = named
    if picture.infotext is not None:
        return picture, job.job_id
    return dataclasses.replace(picture, infotext=job.infotexts[idx]), job.job_id
