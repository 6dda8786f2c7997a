"""A job whose result, public progress message (its previews) or /show or U1-U4 post is
deleted in Discord is withdrawn: members cannot delete Easel's messages, so in a server that
is a moderator's doing (its maker's own Delete button unlinks that post first:
``cogs.results.buttons.DeleteButton``). So is a job posted or queued in a channel or thread
that is deleted, or in a thread of a deleted channel (Discord announces none of its messages'
deletions); such a deletion withdraws no other job with the same pixels. Withdrawn jobs'
pictures are not shown or used again (``GuildPolicy.check_reuse``), and an unfinished one's
result is posted nowhere. A deletion Discord never announced (made while Easel was offline, or
in a gateway gap it did not resume) is found before the job's pictures are posted again
(``check_posts_there``), and withdraws the job the same way."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection

import discord
from discord.ext import commands

from bot.history import History, StoredJob
from bot.policy.moderation import WITHDRAWN_PICTURE
from bot.user_errors import Reason, UserError
from cogs.visibility import DISCORD_FAILED

log = logging.getLogger(__name__)


def thread_parent(client: discord.Client, channel_id: int) -> int | None:
    """The channel of a thread Easel sees (None: not a thread, or not seen): a post in the
    thread goes with that channel, whose deletion Discord announces for no archived thread."""
    channel = client.get_channel(channel_id)
    return channel.parent_id if isinstance(channel, discord.Thread) else None


class WithdrawalsCog(commands.Cog):
    """Listens for raw message deletions (the guild messages intent, not a privileged one) and
    channel and thread deletions (the guilds intent)."""

    def __init__(self, history: History, forget_channel: Callable[[int, int], None]) -> None:
        """``forget_channel(guild_id, channel_id)``: told of every deleted channel and thread,
        so that what Discord said of it before (``DiscordServerAdmins``) is not used again."""
        self._history = history
        self._forget_channel = forget_channel

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self._withdraw(payload.guild_id, payload.channel_id, [payload.message_id])

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        await self._withdraw(payload.guild_id, payload.channel_id, payload.message_ids)

    @commands.Cog.listener()
    async def on_guild_channel_delete(self, channel: discord.abc.GuildChannel) -> None:
        # Its threads go with it (``job_messages.parent_id``): Discord announces only those
        # discord.py still caches, never an archived one.
        await self._withdraw_channel(channel.guild.id, channel.id)

    @commands.Cog.listener()
    async def on_raw_thread_delete(self, payload: discord.RawThreadDeleteEvent) -> None:
        await self._withdraw_channel(payload.guild_id, payload.thread_id)

    async def _withdraw_channel(self, guild_id: int, channel_id: int) -> None:
        self._forget_channel(guild_id, channel_id)
        for job_id in await self._history.withdraw_deleted_channel(guild_id, channel_id):
            log.info("job %s withdrawn: the channel it was posted in was deleted", job_id)

    async def _withdraw(
        self, guild_id: int | None, channel_id: int, message_ids: Collection[int]
    ) -> None:
        if guild_id is None:  # a direct message: no moderator deletes there
            return
        await withdraw_deleted(self._history, guild_id, channel_id, message_ids)


async def withdraw_deleted(
    history: History, guild_id: int, channel_id: int, message_ids: Collection[int]
) -> None:
    """Messages deleted in a server's channel, heard (MESSAGE_DELETE) or found
    (``check_posts_there``): the jobs they were posts of are withdrawn.
    Only a job's post in the server and channel it was posted in matches; any other deletion (a
    member's message) changes nothing, unless Easel records it as a post in a moment
    (``History.withdraw_deleted`` remembers it a while)."""
    for job_id in await history.withdraw_deleted(guild_id, channel_id, message_ids):
        log.info("job %s withdrawn: its result was deleted in Discord", job_id)


# Discord's "Unknown Message": the message was deleted (the token's end is another code).
UNKNOWN_MESSAGE = 10008

# How long asking Discord whether a job's posts are still there may take, all together,
# before the re-post goes on without the answers.
POST_LOOKUP_S = 5.0


async def check_posts_there(client: discord.Client, history: History, job: StoredJob) -> None:
    """Before ``job``'s pictures are posted again (/show, U1-U4, DM me) or made into a new job
    (``cogs.common.submit_from_interaction``, once acknowledged): each of its posts in
    its server (``History.posts_of``: usually one to three) still there, asked of Discord (one
    GET each, at once). One deleted without Easel hearing it (offline, or in a gateway gap
    Discord did not resume: neither replays a MESSAGE_DELETE) withdraws the job as that
    deletion heard would (``withdraw_deleted``), and ``UserError`` in a
    withdrawn picture's words. Any other answer (403: Easel no longer reads the channel; a
    5xx, an outage, none in time) withdraws nothing and lets the re-post go on: only "Unknown
    Message" says a post was deleted, and refusing on an outage would refuse every re-post
    while Discord falters; a deletion heard later withdraws the job all the same."""
    if job.guild_id is None or not (posts := await history.posts_of(job.job_id)):
        return
    asked = {
        asyncio.ensure_future(client.http.get_message(post.channel_id, post.message_id)): post
        for post in posts
    }
    try:
        _, unanswered = await asyncio.wait(asked, timeout=POST_LOOKUP_S)
    finally:
        for lookup in asked:
            lookup.cancel()  # those unanswered in time (a no-op on the others)
    deleted: dict[int, list[int]] = {}  # by channel
    unclear: list[str] = []
    for lookup, post in asked.items():
        if lookup in unanswered:
            unclear.append(f"{post.message_id}: no answer")
        elif isinstance(failed := lookup.exception(), discord.NotFound) and (
            failed.code == UNKNOWN_MESSAGE
        ):
            deleted.setdefault(post.channel_id, []).append(post.message_id)
        elif isinstance(failed, DISCORD_FAILED):  # another 404 too: its channel gone, say
            unclear.append(f"{post.message_id}: {failed!r}")
        elif failed is not None:
            raise failed
    for channel_id, message_ids in deleted.items():
        await withdraw_deleted(history, job.guild_id, channel_id, message_ids)
    if deleted:
        raise UserError(WITHDRAWN_PICTURE, Reason.PERMISSION)
    if unclear:
        log.warning(
            "job %s: whether its posts are still there is not known (%s); posted again",
            job.job_id,
            ", ".join(unclear),
        )
