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
from bot.services import Services
from bot.unheard_deletions import UnheardDeletions
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
    channel and thread deletions (the guilds intent); and for the gateway's sessions, which
    say what a deletion may have gone unheard in (``UnheardDeletions``)."""

    def __init__(
        self,
        history: History,
        forget_channel: Callable[[int, int], None],
        unheard: UnheardDeletions,
    ) -> None:
        """``forget_channel(guild_id, channel_id)``: told of every deleted channel and thread,
        so that what Discord said of it before (``DiscordServerAdmins``) is not used again."""
        self._history = history
        self._forget_channel = forget_channel
        self._unheard = unheard

    # discord.py dispatches "connect" on each READY as it parses it, before any later event
    # (``on_ready`` comes once the servers' GUILD_CREATEs stopped, interactions answered
    # meanwhile): each READY, the first included, begins a session. A RESUMED continues one,
    # the dropped connection's missed events replayed before it.
    @commands.Cog.listener()
    async def on_connect(self) -> None:
        self._unheard.session_began()

    @commands.Cog.listener()
    async def on_resumed(self) -> None:
        self._unheard.resumed()

    @commands.Cog.listener()
    async def on_disconnect(self) -> None:
        self._unheard.disconnected()

    # Where Easel begins to hear deletions it did not (a MESSAGE_DELETE goes only to a bot in
    # the server with View Channel), those made meanwhile were never announced: each is asked
    # about, as after a READY. Added to a server again (it was removed in this session) ...
    @commands.Cog.listener()
    async def on_guild_join(self, _guild: discord.Guild) -> None:
        self._unheard.began_hearing_more()

    # ... or View Channel got: by a channel's overwrites, ...
    @commands.Cog.listener()
    async def on_guild_channel_update(
        self, before: discord.abc.GuildChannel, after: discord.abc.GuildChannel
    ) -> None:
        me = after.guild.me
        if me is None or (
            not before.permissions_for(me).view_channel and after.permissions_for(me).view_channel
        ):
            self._unheard.began_hearing_more()

    # ... by a permission one of Easel's roles got, ...
    @commands.Cog.listener()
    async def on_guild_role_update(self, before: discord.Role, after: discord.Role) -> None:
        me = after.guild.me
        if (me is None or after.is_default() or after in me.roles) and not (
            after.permissions.is_subset(before.permissions)
        ):
            self._unheard.began_hearing_more()

    # ... by a role deleted with its overwrites (one may have denied Easel View Channel), ...
    @commands.Cog.listener()
    async def on_guild_role_delete(self, _role: discord.Role) -> None:
        self._unheard.began_hearing_more()

    # ... or by Easel's roles changed (Discord sends its own member's updates without the
    # members intent).
    @commands.Cog.listener()
    async def on_member_update(self, before: discord.Member, after: discord.Member) -> None:
        me = after.guild.me
        if me is not None and after.id == me.id and before.roles != after.roles:
            self._unheard.began_hearing_more()

    # A server back from an outage (GUILD_DELETE unavailable, then GUILD_CREATE: discord.py
    # says "guild_available", as for each server after a READY), or a thread Easel is in again
    # (added back to a private one it was removed from, or one it sees again: "thread_join"),
    # heard none of its deletions meanwhile: its posts there are asked about, no others.
    @commands.Cog.listener()
    async def on_guild_available(self, guild: discord.Guild) -> None:
        self._unheard.began_hearing_in(guild.id)

    @commands.Cog.listener()
    async def on_thread_join(self, thread: discord.Thread) -> None:
        self._unheard.began_hearing_in(thread.id)

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


async def check_posts_there(client: discord.Client, services: Services, job: StoredJob) -> None:
    """Before ``job``'s pictures are posted again (/show, U1-U4, DM me) or made into a new job
    (``cogs.common.submit_from_interaction``, once acknowledged): each of its posts in its
    server (``History.posts_of``: usually one to three) whose deletion Easel may not have
    heard (``UnheardDeletions``: made before this gateway session, and not found there since)
    still there, asked of Discord (one GET each, at once); with no gap since they were made,
    none is asked. One deleted without Easel hearing it (offline, or in a gateway gap Discord
    did not resume: neither replays a MESSAGE_DELETE) withdraws the job as that deletion
    heard would (``withdraw_deleted``), and ``UserError`` in a withdrawn picture's words. Any
    other answer (403: Easel no longer reads the channel; a 5xx, an outage, none in time)
    withdraws nothing and lets the re-post go on: only "Unknown Message" says a post was
    deleted, and refusing on an outage would refuse every re-post while Discord falters; a
    deletion heard later withdraws the job all the same."""
    history, unheard = services.history, services.unheard_deletions
    if job.guild_id is None or not (posts := await history.posts_of(job.job_id)):
        return
    session = unheard.session  # an answer counts if no session began there since
    asked = {
        asyncio.ensure_future(client.http.get_message(post.channel_id, post.message_id)): post
        for post in posts
        if unheard.may_be_gone_unheard(post.message_id, job.guild_id, post.channel_id)
    }
    if not asked:
        return
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
        elif (failed := lookup.exception()) is None:
            unheard.seen_there(post.message_id, job.guild_id, post.channel_id, session)
        elif isinstance(failed, discord.NotFound) and failed.code == UNKNOWN_MESSAGE:
            deleted.setdefault(post.channel_id, []).append(post.message_id)
        elif isinstance(failed, DISCORD_FAILED):  # another 404 too: its channel gone, say
            unclear.append(f"{post.message_id}: {failed!r}")
        else:
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
