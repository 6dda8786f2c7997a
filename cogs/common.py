"""Small helpers every cog shares: the bot's services and queue, who acts, submitting a job
and one-sentence ephemeral replies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, cast

import discord

from bot.jobs.accounting import Member
from bot.jobs.queue import JobQueue, QuotaExceeded, Submission
from bot.jobs.scheduler import PriorityClass
from bot.policy.guild import NsfwPolicy
from bot.services import Services
from bot.user_errors import UserError
from inference.types import RenderRequest

if TYPE_CHECKING:
    from cogs.results.posting import DiscordResults


class HasServices(Protocol):
    services: Services


def services_of(interaction: discord.Interaction[Any]) -> Services:
    """The services of the bot that received this interaction (see bot.app.EaselBot)."""
    return cast(HasServices, interaction.client).services


async def tell(interaction: discord.Interaction[Any], message: str) -> None:
    """An ephemeral message to the member, whether or not the interaction was answered yet."""
    if interaction.response.is_done():
        await interaction.followup.send(message, ephemeral=True)
    else:
        await interaction.response.send_message(message, ephemeral=True)


class EaselClient(Protocol):
    queue: JobQueue
    results: DiscordResults


def client_of(interaction: discord.Interaction[Any]) -> EaselClient:
    """The Easel bot that received this interaction (see bot.app.EaselBot)."""
    return cast(EaselClient, interaction.client)


def queue_of(interaction: discord.Interaction[Any]) -> JobQueue:
    return client_of(interaction).queue


def is_admin(interaction: discord.Interaction[Any]) -> bool:
    """Whether the member manages the server this interaction comes from (a DM has no admin);
    Discord computes the permissions in that server's channel."""
    permissions = interaction.permissions
    return interaction.guild_id is not None and (
        permissions.manage_guild or permissions.administrator
    )


def acting_member(interaction: discord.Interaction[Any]) -> Member:
    """Who acts, where, and with what power there: admin power never leaves its server."""
    return Member(
        interaction.user.id, interaction.guild_id, role_ids(interaction), is_admin(interaction)
    )


def role_ids(interaction: discord.Interaction[Any]) -> tuple[int, ...]:
    if isinstance(interaction.user, discord.Member):
        return tuple(role.id for role in interaction.user.roles)
    return ()


async def submit_from_interaction(
    interaction: discord.Interaction[Any],
    kind: str,
    request: RenderRequest,
    parent_job_id: str | None = None,
    *,
    private: bool = False,
) -> str | None:
    """Check the guild's rules, acknowledge (deferred, within 3 s), journal the job and show
    its place in the queue; the result later edits this interaction's response.

    Returns the job id, or None when the member's quota refused it (they are told why)."""
    services = services_of(interaction)
    channel = interaction.channel
    age_restricted = bool(channel is not None and getattr(channel, "nsfw", False))
    roles = role_ids(interaction)
    admission = await services.guild_policy.admit(
        interaction.guild_id, interaction.channel_id, age_restricted, request, roles
    )
    submission = Submission(
        kind=kind,
        request=admission.request,
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        parent_job_id=parent_job_id,
        application_id=interaction.application_id,
        interaction_token=interaction.token,
        interaction_created_at=interaction.created_at.timestamp(),
        role_ids=roles,
        is_admin=is_admin(interaction),
        priority=PriorityClass.PRIORITY if admission.priority else PriorityClass.STANDARD,
        filesize_limit=interaction.filesize_limit,
        spoiler=admission.nsfw_policy is NsfwPolicy.SPOILER,
        private=private,
    )
    limit = services.limits.refusal(admission.request)
    if limit is not None:
        raise UserError(f"Not rendered: {limit}.")
    queue = queue_of(interaction)
    # Asked before deferring so that a refusal is a private sentence, not a public reply.
    refusal = await queue.quota_refusal(submission)
    if refusal is not None:
        await interaction.response.send_message(f"⛔ {refusal}", ephemeral=True)
        return None
    await interaction.response.defer(thinking=True, ephemeral=private)
    try:
        job_id = await queue.submit(submission)
    except QuotaExceeded as refused:  # another job of the member's was admitted meanwhile
        await interaction.edit_original_response(content=f"⛔ {refused.message}")
        return None
    await client_of(interaction).results.show_queued(
        job_id, interaction, spoiler=submission.spoiler
    )
    return job_id
