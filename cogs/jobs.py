"""/cancel, /queue and /quota: a member's own jobs and limits where they are (a server's admins
may cancel that server's jobs)."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.jobs.queue import KeptEnd
from bot.policy.quota_status import PeriodUsage, QuotaReport
from bot.user_errors import UserError
from cogs.common import acting_member, defer_thinking, queue_of, services_of, shown_prompt, tell
from cogs.wording import NO_PROMPT, cancel_answer, counted, stopping_line

_MAX_QUEUE_LINES = 10
_PROMPT_PREVIEW = 60


def _limit_text(used: float, limit: float | None, unit: str) -> str:
    shown = f"{used:,.0f}" if float(used).is_integer() else f"{used:,.1f}"
    if limit is None:
        return f"{shown} {unit} (no limit)"
    return f"{shown} of {limit:,.0f} {unit}"


def _period_line(usage: PeriodUsage) -> str:
    return (
        f"**{usage.period.value.title()}:** "
        f"{_limit_text(usage.images, usage.image_limit, 'images')}, "
        f"{_limit_text(usage.gpu_seconds, usage.gpu_seconds_limit, 'GPU-seconds')}; "
        f"resets <t:{int(usage.resets_at)}:R>"
    )


def render_quota(report: QuotaReport) -> str:
    header = (
        "**Your quota here** — no limits apply to you."
        if report.unlimited
        else "**Your quota here**"
    )
    return "\n".join([header, *(_period_line(usage) for usage in report.periods)])


class JobsCog(commands.Cog):
    @app_commands.command(name="cancel", description="Cancel your latest job, or one by its id")
    @app_commands.describe(job_id="The job's id (from its message); by default your latest")
    async def cancel(
        self,
        interaction: discord.Interaction[Any],
        job_id: app_commands.Range[str, 16, 16] | None = None,
    ) -> None:
        if job_id is None:
            history = services_of(interaction).history
            member, guild_id = interaction.user.id, interaction.guild_id
            if mine := await history.unfinished(member, guild_id=guild_id):
                job_id = mine[-1].job_id
            else:
                # Finished, its post still to come: "Too late", as /cancel job_id: tells it.
                job_id = await history.unposted_result(member, guild_id=guild_id)
                if job_id is None:
                    raise UserError("You have no queued or running job here to cancel.")
        # Answered first: a cancel the database holds up takes minutes to say so.
        await defer_thinking(interaction, private=True)
        outcome = await queue_of(interaction).cancel(job_id, acting_member(interaction))
        await tell(interaction, cancel_answer(outcome, job_id))

    @app_commands.command(name="queue", description="Where your jobs are in the queue")
    async def queue(self, interaction: discord.Interaction[Any]) -> None:
        queue = queue_of(interaction)
        # Only this server's jobs: a job's prompt never shows outside the server it was made in.
        mine = await services_of(interaction).history.unfinished(
            interaction.user.id, guild_id=interaction.guild_id
        )
        lines = [f"**Queue** — {counted(queue.queued_count(), 'job')} waiting in all."]
        for line in mine[:_MAX_QUEUE_LINES]:
            state = await queue.state(line.job_id)
            if state is None:
                continue
            if state.awaiting_check:  # restored at start-up: Easel asks Discord about them
                where = "waiting for Easel's start-up check"
            elif state.end_unrecorded is KeptEnd.RENDERED:
                where = "rendered, posted once Easel's storage (full or busy now) takes it"
            elif state.end_unrecorded is KeptEnd.FAILED:
                where = "failed, you are told why once Easel's storage (full or busy now) takes it"
            elif state.stopping:
                where = stopping_line(state.stopped_by)
            else:
                where = "rendering" if state.position is None else state.place()
            eta = f", {done_in}" if (done_in := state.done_in()) is not None else ""
            # A job made from an upload alone (an /upscale) has no prompt to quote.
            prompt = shown_prompt(line.prompt, _PROMPT_PREVIEW) or NO_PROMPT
            lines.append(f"`{line.job_id}` {where}{eta} — {prompt}")
        if not mine:
            lines.append("You have no queued or running jobs here.")
        elif len(mine) > _MAX_QUEUE_LINES:
            lines.append(f"… and {len(mine) - _MAX_QUEUE_LINES} more.")
        await interaction.response.send_message("\n".join(lines), ephemeral=True)

    @app_commands.command(name="quota", description="Your limits, what you used and when it resets")
    async def quota(self, interaction: discord.Interaction[Any]) -> None:
        report = await services_of(interaction).quota_status.report(acting_member(interaction))
        await interaction.response.send_message(render_quota(report), ephemeral=True)
