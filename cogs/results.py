"""Posting results: the files, the caption and the persistent buttons of a finished job."""

from __future__ import annotations

import time
from typing import Any, Protocol, cast

import discord

from bot.queue import FinishedJob, JobQueue, Submission
from bot.requests import reroll
from inference.types import RenderRequest

# Discord accepts edits through an interaction token for 15 minutes; leave a safety margin.
INTERACTION_TOKEN_LIFETIME_S = 14 * 60
_MAX_CAPTION_PROMPT = 1500
# Discord's alias for an interaction's first response; discord.py types message ids as int.
ORIGINAL_RESPONSE: Any = "@original"


class HasQueue(Protocol):
    queue: JobQueue


def queue_of(interaction: discord.Interaction[Any]) -> JobQueue:
    """The job queue of the bot that received this interaction (see bot.app.EaselBot)."""
    return cast(HasQueue, interaction.client).queue


async def submit_from_interaction(
    interaction: discord.Interaction[Any],
    kind: str,
    request: RenderRequest,
    parent_job_id: str | None = None,
) -> str:
    """Journal a job whose result edits this (already deferred) interaction's response."""
    return await queue_of(interaction).submit(
        Submission(
            kind=kind,
            request=request,
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            parent_job_id=parent_job_id,
            application_id=interaction.application_id,
            interaction_token=interaction.token,
            interaction_created_at=interaction.created_at.timestamp(),
        )
    )


class RerollButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=r"easel:reroll:(?P<job_id>[0-9a-f]{16})",
):
    """🔄: the same request with a new seed. The job id in the custom_id outlives restarts."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            discord.ui.Button(
                emoji="🔄",
                style=discord.ButtonStyle.secondary,
                custom_id=f"easel:reroll:{job_id}",
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: Any,
    ) -> RerollButton:
        return cls(match["job_id"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        queue = queue_of(interaction)
        original = await queue.request_of(self.job_id)
        if original is None:
            await interaction.response.send_message(
                "That result is no longer in the history, so it cannot be re-rolled; "
                "use /imagine again.",
                ephemeral=True,
            )
            return
        await interaction.response.defer(thinking=True)
        await submit_from_interaction(interaction, "reroll", reroll(original), self.job_id)


def result_view(job: FinishedJob) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(RerollButton(job.job_id))
    return view


def caption(job: FinishedJob) -> str:
    prompt = job.request.prompt
    if len(prompt) > _MAX_CAPTION_PROMPT:
        prompt = prompt[:_MAX_CAPTION_PROMPT] + "…"
    seeds = ", ".join(str(image.seed) for image in job.images)
    return f"**{discord.utils.escape_markdown(prompt)}** — <@{job.user_id}> (seed {seeds})"


class DiscordResults:
    """The queue's result sink: edits the original response, or posts in the channel when the
    interaction token has expired (or the job came from somewhere without one)."""

    def __init__(self, client: discord.Client) -> None:
        self._client = client

    async def deliver(self, job: FinishedJob) -> int | None:
        mentions = discord.AllowedMentions(users=[discord.Object(job.user_id)])
        if job.succeeded:
            content = caption(job)
            files = [
                discord.File(image.path, filename=f"easel-{job.job_id}-{index}.png")
                for index, image in enumerate(job.images)
            ]
            view: discord.ui.View | None = result_view(job)
        else:
            content = f"<@{job.user_id}> ❌ {job.error} (job `{job.job_id}`)"
            files = []
            view = None
        if self._token_alive(job):
            assert job.application_id is not None and job.interaction_token is not None
            webhook = discord.Webhook.partial(
                job.application_id, job.interaction_token, client=self._client
            )
            edited = await webhook.edit_message(
                ORIGINAL_RESPONSE,
                content=content,
                attachments=files,
                allowed_mentions=mentions,
                view=view,
            )
            return edited.id
        if job.channel_id is None:
            return None
        channel = self._client.get_partial_messageable(job.channel_id)
        sent = await channel.send(
            content=content,
            files=files,
            allowed_mentions=mentions,
            view=view or discord.utils.MISSING,
        )
        return sent.id

    @staticmethod
    def _token_alive(job: FinishedJob) -> bool:
        return (
            job.interaction_token is not None
            and job.application_id is not None
            and job.interaction_created_at is not None
            and time.time() - job.interaction_created_at < INTERACTION_TOKEN_LIFETIME_S
        )
