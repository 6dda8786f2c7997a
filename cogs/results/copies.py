"""Copies of results in a member's direct messages: the DM me button and the "results by DM"
setting. A copy carries the stored PNGs (with their infotext) and only a Delete button: its
other buttons would be clicked outside the job's server, where they are refused. No server
age-gates a direct message, so a picture kept in age-restricted channels never goes there
(``may_go_to_direct_messages``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import discord

from bot.policy.guild import GuildPolicy
from bot.policy.moderation import NsfwPolicy
from cogs.results.fitted import DIRECT_MESSAGE_UPLOAD_LIMIT, fitted_file
from cogs.visibility import CHANNEL_CHECK_FAILED, HiddenFromEasel, made_age_restricted

CANNOT_MESSAGE_USER = 50007
# Asking Discord about a job's channel before a copy goes to direct messages, each time at
# most: no interaction's 3 s waits on it (a button's was acknowledged before), so a slow
# answer costs a moment, not the copy.
COPY_CHANNEL_FETCH_TIMEOUT_S = 5.0
Sent = TypeVar("Sent")


# Kept by the job's journaled flag or the server's policy (its channel not looked at), or made
# in a server Easel is not in.
MADE_AGE_RESTRICTED = "made under the server's age restriction"
# Kept as its channel is now (looked at: Easel sees it, or it is gone): not hidden from Easel.
AGE_RESTRICTED_THERE = "made in a channel that is age-restricted now, or gone"
# Kept as the channel of the thread Discord hides from Easel is age-restricted now, hidden or
# gone (``made_age_restricted``'s ``HiddenFromEasel.age_restricted``).
HIDDEN_AGE_RESTRICTED = (
    "made in a thread Easel cannot see, whose channel is age-restricted now, hidden or gone"
)
CHANNEL_UNCHECKED = "could not check the channel it was made in"
# Not a reason to keep them: Discord hides their channel from Easel (a private thread it was
# not added to), so neither /show nor their buttons bring them back there; made outside an
# age-restricted channel, they may go to direct messages (``kept_in_the_server``).
EASEL_CANNOT_SEE = "Easel cannot see the thread or channel it was made in"


def kept_in_the_server(why: str | None) -> bool:
    """Whether ``why_kept_in_the_server``'s answer keeps the pictures out of direct messages."""
    return why is not None and why != EASEL_CANNOT_SEE


async def may_go_to_direct_messages(
    client: discord.Client,
    guild_policy: GuildPolicy,
    guild_id: int | None,
    channel_id: int | None,
    *,
    restricted_when_made: bool,
    thread_parent_id: int | None,
) -> bool:
    """Whether a job's pictures may be sent to a direct message (DM me asks this; posting asks
    ``why_kept_in_the_server`` for its log)."""
    kept = await why_kept_in_the_server(
        client,
        guild_policy,
        guild_id,
        channel_id,
        restricted_when_made=restricted_when_made,
        thread_parent_id=thread_parent_id,
    )
    return not kept_in_the_server(kept)


async def why_kept_in_the_server(
    client: discord.Client,
    guild_policy: GuildPolicy,
    guild_id: int | None,
    channel_id: int | None,
    *,
    restricted_when_made: bool,
    thread_parent_id: int | None = None,
) -> str | None:
    """Why a job's pictures stay out of direct messages (for the log), None when they may go
    there (``EASEL_CANNOT_SEE`` too: they may, said so that their maker learns that /show
    cannot bring them back, ``kept_in_the_server``). Kept when the server's rules keep them in
    age-restricted channels (``kept_in_age_restricted_channels``'s rule, the policy read first
    so that Discord need not be asked): the server renders only in those, or they were made in
    one (journaled with the job: ``restricted_when_made``), or their channel is one now or is
    gone (``made_age_restricted``: a hidden thread, its channel, ``thread_parent_id``, as
    journaled); and, to be safe, when Discord does not answer whether their
    channel is one. Said as ``MADE_AGE_RESTRICTED`` when the channel was not looked at (nor
    whether Easel sees it), else as what it is now (``AGE_RESTRICTED_THERE``,
    ``HIDDEN_AGE_RESTRICTED``): a notice need not ask Discord again. A job made in direct
    messages is there already."""
    if guild_id is None:
        return None
    settings = await guild_policy.settings(guild_id)
    if NsfwPolicy(settings.nsfw_policy) is NsfwPolicy.AGE_RESTRICTED_ONLY:
        return MADE_AGE_RESTRICTED  # whatever the channel: no need to ask Discord about it
    if restricted_when_made or channel_id is None:
        return MADE_AGE_RESTRICTED
    try:
        age_restricted = await made_age_restricted(
            client,
            guild_id,
            channel_id,
            restricted_when_made=False,
            timeout_s=COPY_CHANNEL_FETCH_TIMEOUT_S,
            hidden_is_restricted=False,
            thread_parent_id=thread_parent_id,
        )
    except HiddenFromEasel as hidden:
        # A server Easel is not in (or not yet, before Discord's READY) hides every channel:
        # what it is, unknown, counts as age-restricted.
        if client.get_guild(guild_id) is None:
            return MADE_AGE_RESTRICTED
        return HIDDEN_AGE_RESTRICTED if hidden.age_restricted else EASEL_CANNOT_SEE
    except CHANNEL_CHECK_FAILED:
        return CHANNEL_UNCHECKED
    return AGE_RESTRICTED_THERE if age_restricted else None


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


# A picture of a direct message: a stored PNG's path or the PNG itself, a filename without
# extension, and what a screen reader says of it (``bot.alt_text``).
CopiedPicture = tuple[Path | bytes, str, str]


def copy_files(pictures: list[CopiedPicture], spoiler: bool) -> list[discord.File]:
    """``pictures`` as the files of a direct message, each under its upload limit. Blocking:
    seconds of CPU for a large picture."""
    return [
        fitted_file(
            picture if isinstance(picture, bytes) else picture.read_bytes(),
            filename,
            DIRECT_MESSAGE_UPLOAD_LIMIT,
            spoiler=spoiler,
            description=description,
        )[0]
        for picture, filename, description in pictures
    ]


async def send_copy(
    client: discord.Client,
    user_id: int,
    content: str,
    files: list[discord.File],
    *,
    view: discord.ui.View,
    nonce: str,
) -> discord.Message | None:
    """Send ``files`` (``copy_files``) to the member's direct messages; None when those are
    closed to the bot. A send repeated with the same ``nonce`` shows once."""

    async def send(direct: discord.DMChannel) -> discord.Message:
        return await direct.send(
            content,
            files=files,
            view=view,
            allowed_mentions=discord.AllowedMentions.none(),
            nonce=nonce,
        )

    return await in_direct_messages(client, user_id, send)
