"""Finding a result's channel post that an earlier try made, before posting it again.

A try of a post may land though its answer is lost (a timeout, a connection dropped), or
Easel may stop after posting and before recording it. Discord's enforced nonce folds a
second post into the first only within a few minutes, so a later try (the delivery sweep's,
a start's) looks first: at the job's own posts recorded in the channel (its interaction's
original response, which a try's edit may have made the result), then at the messages
posted since the latest try. Both reads need Read Message History in a server's channel:
without it Discord refuses a single message (403) and answers a history read with no
messages, so Easel cannot tell, says so in the log, and posts again.
"""

from __future__ import annotations

import datetime
import logging

import discord

from bot.jobs.queue import FinishedJob
from cogs.results.buttons import UNKNOWN_MESSAGE
from cogs.results.job_files import carries_pictures_of

log = logging.getLogger(__name__)

# Messages read since the latest try: one request (Discord's largest page). A busier channel
# pushes the post past it: then it is posted again.
MESSAGES_READ = 100
# How far Easel's clock may run ahead of Discord's.
CLOCK_SLACK_S = 60.0


async def earlier_post(
    client: discord.Client, channel: discord.abc.Messageable, job: FinishedJob
) -> int | None:
    """The id of the bot's own message in ``channel`` that carries ``job``'s result or
    failure (``_carries``): one of its recorded posts (``FinishedJob.posted_ids``), else one
    of the first ``MESSAGES_READ`` posted since its latest try (not an interaction's
    response: a /show's); None: none there, never tried (``FinishedJob.post_attempted_at``),
    or the bot may not read the channel's history (logged). Raises as reading it does
    otherwise."""
    if job.post_attempted_at is None or client.user is None:
        return None
    bot_id = client.user.id
    if not _history_readable(client, job.channel_id):
        _log_unchecked(job, "Easel lacks Read Message History there")
        return None
    try:
        for message_id in job.posted_ids:
            try:
                message = await channel.fetch_message(message_id)
            except discord.NotFound as error:
                if error.code != UNKNOWN_MESSAGE:
                    raise
                continue  # deleted: its deletion withdrew the job
            if message.author.id == bot_id and _carries(message, job):
                log.info("job %s: posted by an earlier try, as %d", job.job_id, message.id)
                return message.id
        since = datetime.datetime.fromtimestamp(job.post_attempted_at - CLOCK_SLACK_S, datetime.UTC)
        async for message in channel.history(limit=MESSAGES_READ, after=since, oldest_first=True):
            if (
                message.author.id == bot_id
                and message.type is discord.MessageType.default
                and _carries(message, job)
            ):
                log.info("job %s: posted by an earlier try, as %d", job.job_id, message.id)
                return message.id
    except discord.Forbidden as error:
        _log_unchecked(job, str(error))
    return None


def _history_readable(client: discord.Client, channel_id: int | None) -> bool:
    """Whether the bot may read the history of the server channel ``channel_id``, as its
    cache says; True where that is not known (not cached, or a direct message)."""
    channel = None if channel_id is None else client.get_channel(channel_id)
    if not isinstance(channel, discord.abc.GuildChannel | discord.Thread):
        return True
    me = channel.guild.me
    return me is None or channel.permissions_for(me).read_message_history


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
