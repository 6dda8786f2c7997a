"""``/easel-mod ...``: a server's moderators (Manage Messages) find a member's Easel jobs and
withdraw one or all of them, as deleting their posts would; and the makers of a picture, for
the Info menu. Shown by default to members with Manage Messages (a server's admins may change
who sees it); every action is checked again against Manage Messages in each job's channel, so
that a moderator of one channel reaches that channel's jobs alone. Private jobs (seen by their
maker alone) are never listed, named, nor withdrawn by id or by member: they are counted.
A withdrawal by id takes along what deleting the job's posts would (the jobs made from its
pictures, private ones included, whoever made them), counted, never named; one by member
leaves the member's private jobs alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import discord
from discord import app_commands
from discord.ext import commands

from bot.history import (
    MemberJobsHere,
    ModeratorWithdrawal,
    PostedMessage,
    StoredJob,
    listed_ids,
)
from bot.user_errors import UserError
from cogs.common import (
    defer_thinking,
    page_turn_button,
    page_turns,
    quoted,
    services_of,
    turned_label,
    within_message_limit,
)
from cogs.contexts import command_contexts
from cogs.errors import report_error
from cogs.job_lines import history_line_text
from cogs.visibility import moderated_channels
from cogs.wording import counted

_NONE = discord.AllowedMentions.none()  # a moderator's answer names members, pinging none
_UNFINISHED = ("queued", "running")
# The Info menu's makers of a picture, at most this many (a seed rendered again and again).
MAKERS_LISTED = 5
# What becomes of a withdrawn job's posts (``History``: a moderator's withdrawal deletes them).
POSTS_GO = "Easel deletes the posts of what it withdrew, and the copies it sent by DM."
UNDO = "An admin undoes a withdrawal with `/easel-admin restore job:<id>`, job by job."


def post_link(guild_id: int, post: PostedMessage) -> str:
    return f"https://discord.com/channels/{guild_id}/{post.channel_id}/{post.message_id}"


def _posted(guild_id: int, posts: Sequence[PostedMessage]) -> str:
    """A link to a job's first post still linked, for a moderator to look at."""
    return post_link(guild_id, posts[0]) if posts else "no post of it is linked"


def _left_out(elsewhere: int, private: int) -> str:
    """How many of a member's jobs a moderator's list or withdrawal left out, never which."""
    parts = []
    if elsewhere:
        parts.append(f"{counted(elsewhere, 'job')} made in channels where you lack Manage Messages")
    if private:
        parts.append(f"{counted(private, 'private job')} (seen by the member alone)")
    return f"\nLeft out: {' and '.join(parts)}." if parts else ""


def _moderates_none(member_id: int) -> str:
    """The answer to a member who moderates none of ``member_id``'s channels: no count, so
    that it says nothing of their jobs."""
    return f"You have Manage Messages in no channel where <@{member_id}> made a public job here."


def _went_with(withdrawn: ModeratorWithdrawal) -> str:
    """The jobs a withdrawal took along with those asked for, counted, never named: another
    member's, a private one, or one made where the moderator may not look."""
    carried = len(withdrawn.job_ids) - len(withdrawn.asked)
    if not carried:
        return ""
    return (
        f" {counted(carried, 'more job')} made from those pictures or with their pixels went "
        "too (not named: another member's, private, or made in a channel you do not moderate)."
    )


async def _moderated_jobs_of(
    interaction: discord.Interaction[Any], member_id: int
) -> tuple[int, MemberJobsHere, set[int]]:
    """This server, the member's jobs here (``member_jobs_here``), and the channels they made
    public ones in that the clicker moderates."""
    guild_id = interaction.guild_id
    assert guild_id is not None  # a server's command (guild_only)
    here = await services_of(interaction).history.member_jobs_here(guild_id, member_id)
    return guild_id, here, await moderated_channels(interaction, here.public_by_channel)


async def _member_jobs(
    interaction: discord.Interaction[Any], member_id: int, page: int
) -> tuple[str, discord.ui.View | None]:
    """A page of the member's public jobs in this server made in channels the clicker
    moderates, with links to their posts, and ◀ ▶ when there are more."""
    guild_id, here, moderated = await _moderated_jobs_of(interaction, member_id)
    if not moderated:
        return _moderates_none(member_id), None
    history = services_of(interaction).history
    listed = await history.moderated_page(guild_id, member_id, here, moderated, page)
    jobs = listed.jobs
    if not jobs.lines:
        lines = [f"<@{member_id}> has no jobs here in channels where you have Manage Messages."]
    else:
        lines = [
            f"**Jobs of <@{member_id}>** in channels where you have Manage Messages — page "
            f"{jobs.page + 1}/{jobs.page_count} ({jobs.total} in all)"
        ]
        for line in jobs.lines:
            where = _posted(guild_id, listed.posts.get(line.job_id, ()))
            lines.append(f"{history_line_text(line)} — {where}")
        lines.append(
            "`/easel-mod withdraw job:<id>` withdraws one, `/easel-mod withdraw member:` all of "
            f"these. {UNDO}"
        )
    text = "\n".join(lines) + _left_out(listed.left_out_elsewhere, listed.left_out_private)
    return within_message_limit(text), page_turns(
        jobs.page,
        jobs.page_count,
        lambda to, label, disabled: MemberJobsPageButton(member_id, to, label, disabled=disabled),
    )


class MemberJobsPageButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=r"easel:mod-jobs:(?P<member>\d+):(?P<page>-?\d+)",
):
    """◀ / ▶ under a moderator's ``/easel-mod jobs`` answer (seen by them alone): the page
    read again for the clicker, by their Manage Messages of now."""

    def __init__(self, member_id: int, page: int, label: str, *, disabled: bool = False) -> None:
        super().__init__(page_turn_button(f"easel:mod-jobs:{member_id}:{page}", label, disabled))
        self.member_id, self.page = member_id, page

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: Any
    ) -> Self:
        return cls(int(match["member"]), int(match["page"]), turned_label(item))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            if interaction.guild_id is None:
                raise UserError("A member's jobs are listed in their server only.")
            # Answered first: each of the member's channels the cache lacks is asked of Discord.
            await interaction.response.defer()
            content, view = await _member_jobs(interaction, self.member_id, self.page)
            await interaction.edit_original_response(
                content=content, view=view, allowed_mentions=_NONE
            )
        except Exception as error:
            await report_error(interaction, error, "moderator's jobs pager")


async def moderated_job(interaction: discord.Interaction[Any], job_id: str) -> StoredJob:
    """``job_id``, a public job of this server made in a channel where the member has Manage
    Messages; else one refusal, whichever condition fails, so that it never tells whether a
    job of that id exists elsewhere (another server, a private one, another channel)."""
    job = await services_of(interaction).history.job(job_id)
    if (
        job is None
        or interaction.guild_id is None
        or job.guild_id != interaction.guild_id
        or job.private
        or job.channel_id not in await moderated_channels(interaction, [job.channel_id])
    ):
        raise UserError(
            f"No job `{quoted(job_id, 32)}` is yours to withdraw: a moderator withdraws a "
            "public job of this server made in a channel where they have Manage Messages "
            "(its id is in its result's caption, and in `/easel-mod jobs`)."
        )
    return job


async def withdraw_as_moderator(interaction: discord.Interaction[Any], job: StoredJob) -> str:
    """The moderator withdraws ``job`` (``moderated_job``), audited as theirs: what they are
    told."""
    history = services_of(interaction).history
    guild_id = job.guild_id
    assert guild_id is not None  # a server's job (``moderated_job``)
    withdrawn = await history.withdraw_by_moderator(job.job_id, interaction.user.id)
    if not withdrawn.asked:
        return f"Job `{job.job_id}` was withdrawn already. {UNDO}"
    # By what the withdrawal found, not ``job``'s status read before it (it may have ended).
    if job.job_id in withdrawn.stopped:
        stopped = (
            " It was queued or rendering: it is stopped, and its maker is not charged; the "
            "stop cannot be undone (a restore lifts only the withdrawal: its maker may submit "
            "it again)."
        )
    elif job.status in _UNFINISHED:
        stopped = " It finished meanwhile: it was not stopped."
    else:
        stopped = ""
    return (
        f"Withdrew job `{job.job_id}` of <@{job.user_id}>: /show, its buttons and menus, and "
        f"uploads of its pixels refuse it now.{stopped}{_went_with(withdrawn)} "
        f"{POSTS_GO} {UNDO}"
    )


async def _withdraw_member(interaction: discord.Interaction[Any], member_id: int) -> str:
    guild_id, here, moderated = await _moderated_jobs_of(interaction, member_id)
    if not moderated:
        return _moderates_none(member_id)
    withdrawn = await services_of(interaction).history.withdraw_member_jobs(
        guild_id, member_id, moderated, interaction.user.id
    )
    moderated_count = sum(here.public_by_channel[channel_id] for channel_id in moderated)
    left_out = _left_out(sum(here.public_by_channel.values()) - moderated_count, here.private)
    if not withdrawn.job_ids:
        return (
            f"Nothing to withdraw: <@{member_id}> has no job here not withdrawn yet in "
            f"channels where you have Manage Messages.{left_out}"
        )
    stopped = len(withdrawn.stopped)
    stops = f" Stopped while queued or rendering, not charged: {counted(stopped, 'job')}."
    return (
        f"Withdrew {counted(len(withdrawn.asked), 'job')} of <@{member_id}> made in channels "
        f"where you have Manage Messages: {listed_ids(withdrawn.asked)}."
        f"{_went_with(withdrawn)}{stops if stopped else ''} {POSTS_GO} {UNDO}{left_out}"
    )


async def picture_makers(
    interaction: discord.Interaction[Any], pixel_digests: Sequence[bytes]
) -> str:
    """For the Info menu of a member with Manage Messages where it is used: the Easel jobs of
    this server whose pictures have these pixels (a re-post traced to its maker), public ones
    made in channels they moderate only; "" for anyone else, or none found."""
    guild_id = interaction.guild_id
    if guild_id is None or not pixel_digests or not interaction.permissions.manage_messages:
        return ""
    history = services_of(interaction).history
    found = [
        job
        for job in await history.jobs_with_picture(guild_id, *pixel_digests)
        if job.job_id and not job.private  # a withdrawn, erased job has no id
    ]
    moderated = await moderated_channels(interaction, (job.channel_id for job in found))
    jobs = [job for job in found if job.channel_id in moderated]
    lines = []
    for job in jobs[:MAKERS_LISTED]:
        posts = await history.posts_of(job.job_id)
        withdrawn = " (withdrawn)" if job.withdrawn else ""
        lines.append(
            f"Easel job `{job.job_id}` by <@{job.user_id}>{withdrawn}, posted "
            f"{_posted(guild_id, posts[:1])}"
        )
    if len(jobs) > MAKERS_LISTED:
        lines.append(f"… and {counted(len(jobs) - MAKERS_LISTED, 'more job')}.")
    return "\n".join(lines)


class ModerationCog(commands.Cog):
    mod = app_commands.Group(
        name="easel-mod",
        description="A member's Easel jobs, for moderators (Manage Messages)",
        default_permissions=discord.Permissions(manage_messages=True),
        guild_only=True,
        # Explicit: the tree's contexts include DMs when the operator allows them.
        allowed_contexts=command_contexts(allow_dms=False),
    )

    @mod.command(name="jobs", description="A member's jobs here, in channels you moderate")
    @app_commands.describe(member="The member (also one who left or was banned)")
    async def jobs(self, interaction: discord.Interaction[Any], member: discord.User) -> None:
        await defer_thinking(interaction, private=True)
        content, view = await _member_jobs(interaction, member.id, 0)
        await interaction.edit_original_response(content=content, view=view, allowed_mentions=_NONE)

    @mod.command(
        name="withdraw", description="Withdraw a job, or a member's jobs in channels you moderate"
    )
    @app_commands.describe(
        job="A job id (in its result's caption)",
        member="Or a member: all their jobs here in channels you moderate",
    )
    async def withdraw(
        self,
        interaction: discord.Interaction[Any],
        job: app_commands.Range[str, 1, 32] | None = None,
        member: discord.User | None = None,
    ) -> None:
        if (job is None) == (member is None):
            raise UserError(
                "Give job (a job id, in its result's caption) or member (all their jobs here "
                "in channels you moderate), one of them."
            )
        await defer_thinking(interaction, private=True)
        if job is not None:
            said = await withdraw_as_moderator(
                interaction, await moderated_job(interaction, job.strip().lower())
            )
        else:
            assert member is not None
            said = await _withdraw_member(interaction, member.id)
        await interaction.edit_original_response(
            content=within_message_limit(said), allowed_mentions=_NONE
        )
