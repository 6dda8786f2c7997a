"""The Remix modal: a result's prompt, negative prompt and main settings to edit, then the
edited job is submitted for whoever submits it (bot.remix reads the fields). The form may stay
open for 15 minutes: submitting checks again that the member may still see the job."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bot.history import StoredJob
from bot.remix import RemixFields, remix_fields, remix_request
from bot.requests import MAX_PROMPT_CHARS
from cogs.common import submit_from_interaction
from cogs.forms import ReportingModal
from inference.types import RenderRequest

# The buttons' check (``cogs.results.buttons.visible_job``): the job, if the member may see it.
VisibleJob = Callable[[discord.Interaction[Any], str], Awaitable[StoredJob]]


def _label(label: str, short: str, default: str) -> str:
    """``label``, or, when the job's text is longer than the field takes (Discord refuses a
    form whose text passes it: the member only saw "interaction failed"), a label that says
    its end was cut off (Discord's labels take 45 characters)."""
    if len(default) <= MAX_PROMPT_CHARS:
        return label
    return f"{short} (cut to {MAX_PROMPT_CHARS:,} characters)"


class RemixModal(ReportingModal):
    def __init__(
        self, job_id: str, original: RenderRequest, *, private: bool, visible_job: VisibleJob
    ) -> None:
        super().__init__("remix", title=f"Remix {job_id}")
        self.job_id = job_id
        self.original = original
        self.private = private
        self._visible_job = visible_job
        filled = remix_fields(original)
        self.prompt = discord.ui.TextInput[RemixModal](
            label=_label("Prompt (inline flags such as --ar work)", "Prompt", filled.prompt),
            style=discord.TextStyle.paragraph,
            default=filled.prompt[:MAX_PROMPT_CHARS],
            max_length=MAX_PROMPT_CHARS,
        )
        self.negative = discord.ui.TextInput[RemixModal](
            label=_label("Negative prompt", "Negative prompt", filled.negative),
            style=discord.TextStyle.paragraph,
            default=filled.negative[:MAX_PROMPT_CHARS],
            required=False,
            max_length=MAX_PROMPT_CHARS,
        )
        self.seed = discord.ui.TextInput[RemixModal](
            label="Seed (keep it, or clear it for a new one)",
            default=filled.seed,
            required=False,
            max_length=20,
        )
        self.steps_cfg = discord.ui.TextInput[RemixModal](
            label="Steps, CFG scale", default=filled.steps_cfg, max_length=20
        )
        self.size_sampler = discord.ui.TextInput[RemixModal](
            label="Size (WxH, W:H or auto), sampler", default=filled.size_sampler, max_length=64
        )
        for field in (self.prompt, self.negative, self.seed, self.steps_cfg, self.size_sampler):
            self.add_item(field)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        # The form may have been open for 15 minutes: meanwhile the job may have been erased,
        # or the member may have lost the channel it was made in (when the form came from a
        # copy of its buttons elsewhere), so the click's check is made again.
        job = await self._visible_job(interaction, self.job_id)
        fields = RemixFields(
            prompt=self.prompt.value,
            negative=self.negative.value,
            seed=self.seed.value,
            steps_cfg=self.steps_cfg.value,
            size_sampler=self.size_sampler.value,
        )
        await submit_from_interaction(
            interaction,
            "remix",
            remix_request(self.original, fields),
            job,
            private=self.private or job.private,
        )
