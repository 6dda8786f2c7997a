"""Finding a result's post that an earlier try made, before posting it again.

A try of a post may land though its answer is lost (a timeout, a connection dropped), or
Easel may stop after posting and before recording it. Discord's enforced nonce folds a
second post into the first only within a few minutes, so a later try (the delivery sweep's,
a start's) looks first: at the job's own posts recorded in the channel (its interaction's
original response, which a try's edit may have made the result, and those since it finished
and since the latest try), fetched by id, then at the messages posted since it finished and,
past a page, since the latest try (a try may fail before it looks, so the latest try's time
alone would miss an older try's post); in the member's direct messages, when the result goes
there, at their history alike. A server channel's history is read only where the bot has
Read Message History: without it Discord refuses a single message (403, logged), but answers
a history read with no messages. A delivery may run before the gateway has described the
server (a start's replay, or an outage; its roles come with it): it waits for that, bounded.
Where the permission cannot be known, or is missing, Easel cannot tell, says so in the log,
and posts again. Posting twice is the lesser harm: most tries fail before anything lands, so
not posting would lose a charged result that nobody is told of, where a second post shows
once more what the server's rules let be shown, and its maker or a moderator can delete it.
"""

from __future__ import annotations

import contextlib
import datetime
import logging

import discord

from bot.jobs.queue import FinishedJob
from bot.snowflakes import CLOCK_SLACK_S
from cogs.results.job_files import carries_pictures_of
from cogs.withdrawals import UNKNOWN_MESSAGE

log = logging.getLogger(__name__)

# Messages read from each time a try may have posted: one request (Discord's largest page).
# A busier channel pushes the post past it: then it is posted again.
MESSAGES_READ = 100
# How long a delivery waits for the gateway to describe the job's server: a start's replay
# runs before it connects, and discord.py may be ready before every server's GUILD_CREATE
# came (it waits 0.1 s after the last); a server in an outage may stay unavailable.
SERVER_WAIT_S = 60.0


async def earlier_post(
    client: discord.Client,
    channel: discord.abc.Messageable,
    job: FinishedJob,
    read_without_it: set[int] | None = None,
    deleted: set[int] | None = None,
) -> int | None:
    """The id of the bot's own message in ``channel`` (the job's channel, or its maker's
    direct messages) that carries ``job``'s result or failure (``_carries``): one of its
    recorded posts in its channel (``FinishedJob.posted_ids``), else one of the first
    ``MESSAGES_READ`` posted since it finished, or since its latest try (not an interaction's
    response: a /show's); None: none there, never tried (``FinishedJob.post_attempted_at``),
    or the bot may not read the channel's history (logged). Raises as reading it does
    otherwise (a deleted channel: ``discord.NotFound``). ``read_without_it`` gets the
    recorded posts read that do not carry it (a progress message a try's edit left alone);
    ``deleted`` those Discord answered Unknown Message for (gone, though Easel may not have
    heard of it: deleted while it was offline)."""
    if job.post_attempted_at is None or client.user is None:
        return None
    bot_id = client.user.id
    in_its_channel = getattr(channel, "id", None) == job.channel_id
    try:
        for message_id in job.posted_ids if in_its_channel else ():
            try:
                message = await channel.fetch_message(message_id)
            except discord.NotFound as error:
                if error.code != UNKNOWN_MESSAGE:
                    raise
                if deleted is not None:
                    deleted.add(message_id)
                continue
            if message.author.id == bot_id and _carries(message, job):
                log.info("job %s: posted by an earlier try, as %d", job.job_id, message.id)
                return message.id
            if read_without_it is not None:
                read_without_it.add(message_id)
        if in_its_channel and (unreadable := await _why_history_unreadable(client, job)):
            _log_unchecked(job, unreadable)
            return None
        last_read: discord.Message | None = None
        for tried in _times_a_try_may_have_posted(job):
            since = datetime.datetime.fromtimestamp(tried - CLOCK_SLACK_S, datetime.UTC)
            # On from the messages read already (a full page, from an earlier time).
            after: discord.Message | datetime.datetime = since
            if last_read is not None and last_read.created_at > since:
                after = last_read
            read = 0
            async for message in channel.history(
                limit=MESSAGES_READ, after=after, oldest_first=True
            ):
                read, last_read = read + 1, message
                if (
                    message.author.id == bot_id
                    and message.type is discord.MessageType.default
                    and _carries(message, job)
                ):
                    log.info("job %s: posted by an earlier try, as %d", job.job_id, message.id)
                    return message.id
            if read < MESSAGES_READ:
                break  # read up to now
    except discord.Forbidden as error:
        _log_unchecked(job, str(error))
    return None


def _times_a_try_may_have_posted(job: FinishedJob) -> list[float]:
    """From when a post of ``job`` may be there, oldest first: its end (an older try's post,
    when a later one failed before it looked), and its latest try (hours and a busy
    channel's page later, perhaps)."""
    return sorted({at for at in (job.finished_at, job.post_attempted_at) if at is not None})


async def _why_history_unreadable(client: discord.Client, job: FinishedJob) -> str | None:
    """Why the bot may not read the history of ``job``'s server channel, or cannot know
    whether it may (None: it may, or the job is of direct messages). Until the gateway has
    described the job's server, it waits for that (``SERVER_WAIT_S``). A channel discord.py
    does not hold is fetched (raises
    ``discord.NotFound`` when deleted, ``discord.Forbidden`` when hidden from the bot): its
    permissions are then computed from the server's roles, as for a cached one."""
    channel_id = job.channel_id
    if job.guild_id is None or channel_id is None:
        return None
    if not await _server_described(client, job.guild_id):
        return "Easel is not in that server"
    channel = client.get_channel(channel_id) or await client.fetch_channel(channel_id)
    if not isinstance(channel, discord.abc.GuildChannel | discord.Thread):
        return None  # a direct message: the bot reads its own
    me = channel.guild.me
    if me is None:
        return (
            "Easel's roles in the server are not known: the gateway did not describe it "
            f"within {SERVER_WAIT_S:g} s (unavailable?)"
        )
    try:
        permissions = channel.permissions_for(me)
    except discord.ClientException:  # a thread whose channel discord.py does not hold
        return "the permissions of the thread's channel are not known"
    return None if permissions.read_message_history else "Easel lacks Read Message History there"


async def _server_described(client: discord.Client, guild_id: int) -> bool:
    """Return once discord.py holds the server ``guild_id`` available (with the bot's roles
    there), or after ``SERVER_WAIT_S``; False at once where Easel is not in it: once ready,
    discord.py holds every server Easel is in (those in an outage as unavailable), so no
    ``guild_available`` would come for a server it left."""
    guild = client.get_guild(guild_id)
    if guild is not None and not guild.unavailable:
        return True
    if guild is None and client.is_ready():
        return False
    # Listening from here on, with no await since the look: its arrival cannot slip between.
    with contextlib.suppress(TimeoutError):
        await client.wait_for(
            "guild_available", check=lambda arrived: arrived.id == guild_id, timeout=SERVER_WAIT_S
        )
    return True


def _log_unchecked(job: FinishedJob, why: str) -> None:
    log.warning(
        "job %s: a post of an earlier try cannot be looked for (%s); posted again, so it may "
        "be there twice",
        job.job_id,
        why,
    )


def _carries(message: discord.Message, job: FinishedJob) -> bool:
    """Whether ``message`` is ``job``'s post: its picture's file, named for the job (a
    /show's or a copy's are named otherwise), or its failure, which opens with its maker's
    mention and names the job. Never on words another member chose alone: a prompt quoted in
    their own failure that names this job opens with their mention, not its maker's."""
    if job.succeeded:
        return carries_pictures_of(message, job.job_id, result_only=True)
    content = message.content
    return content.startswith(f"<@{job.user_id}> ") and f"(job `{job.job_id}`)" in content
