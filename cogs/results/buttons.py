"""The buttons under a job's messages: U1-U4, V1-V4, 🔄, Vary, Upscale, Zoom Out and the pans
under a result, Cancel under its progress.

Every button is a ``DynamicItem`` whose custom_id holds the job id (and image index), so it
works after a restart: the callback resolves everything through the database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
from typing import Any, ClassVar, Self

import discord

from bot.edits import Picture, expand_request, upscale_request, vary_request
from bot.history import StoredJob
from bot.images import picture_size
from bot.jobs.queue import CancelOutcome
from bot.policy.guild import NsfwPolicy
from bot.requests import reroll
from bot.user_errors import UserError
from cogs.common import acting_member, queue_of, services_of, submit_from_interaction
from cogs.errors import report_error
from inference.types import RenderRequest

_JOB = r"(?P<job_id>[0-9a-f]{16})"
_IDX = r"(?P<idx>[0-3])"
# V1-V4 vary a grid's picture as much as "Vary (Strong)" does, as Midjourney's do.
VARY_PRESETS = {"v": "strong", "subtle": "subtle", "strong": "strong"}


async def clicked_job(interaction: discord.Interaction[Any], job_id: str) -> StoredJob:
    """The job a button names, with its pictures. A job of another server (or of direct
    messages, clicked in a server) is answered as if it did not exist: results belong to
    the server they were made in."""
    job = await services_of(interaction).history.job(job_id)
    if job is None or job.guild_id != interaction.guild_id or not job.image_paths:
        raise UserError(
            f"Job `{job_id}` is no longer in the history; make a new picture with /imagine."
        )
    return job


async def keeps_private(interaction: discord.Interaction[Any], job: StoredJob) -> bool:
    """Whether what the member makes from or shows of ``job`` is for their eyes only: a
    private job stays private on every path, and so does anything the member asked to keep
    to themselves."""
    personal = await services_of(interaction).member_settings.get(interaction.user.id)
    return job.private or personal.private_results


async def spoilered(interaction: discord.Interaction[Any], job: StoredJob) -> bool:
    """Whether ``job``'s pictures go behind a spoiler: they did when it was made, or the
    server's NSFW policy says so now."""
    if job.spoiler or interaction.guild_id is None:
        return job.spoiler
    settings = await services_of(interaction).guild_policy.settings(interaction.guild_id)
    return NsfwPolicy(settings.nsfw_policy) is NsfwPolicy.SPOILER


async def _original_request(interaction: discord.Interaction[Any], job_id: str) -> RenderRequest:
    request = await queue_of(interaction).request_of(job_id)
    if request is None:
        raise UserError(
            f"Job `{job_id}` is no longer in the history; make a new picture with /imagine."
        )
    return request


async def _stored_picture(
    interaction: discord.Interaction[Any], job: StoredJob, idx: int
) -> tuple[RenderRequest, Picture]:
    """Picture ``idx`` of a stored result, and its job's request with that picture's seed."""
    job_id = job.job_id
    if idx >= len(job.image_paths):
        raise UserError(f"Job `{job_id}` has only {len(job.image_paths)} picture(s).")
    path = job.image_paths[idx]
    try:
        width, height = await asyncio.to_thread(picture_size, path)
    except FileNotFoundError:
        raise UserError(
            f"Picture {idx + 1} of job `{job_id}` was deleted; make a new one with /imagine."
        ) from None
    original = await _original_request(interaction, job_id)
    request = dataclasses.replace(original, seed=job.seeds[idx], notes=[])
    return request, Picture(path, width, height, job.infotexts[idx])


class _ReportsErrors:
    """Mixed into the buttons: discord.py only logs a failing dynamic item, so a member's
    mistake is answered here and an internal failure gets a reference id."""

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            await self.run(interaction)
        except Exception as error:
            await report_error(interaction, error, f"button {type(self).__name__}")

    async def run(self, interaction: discord.Interaction[Any]) -> None:
        raise NotImplementedError


class RerollButton(
    _ReportsErrors,
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=rf"easel:reroll:{_JOB}",
):
    """🔄: the same request with a new seed."""

    def __init__(self, job_id: str, row: int | None = None) -> None:
        super().__init__(
            discord.ui.Button(
                emoji="🔄",
                style=discord.ButtonStyle.secondary,
                custom_id=f"easel:reroll:{job_id}",
                row=row,
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: Any
    ) -> RerollButton:
        return cls(match["job_id"])

    async def run(self, interaction: discord.Interaction[Any]) -> None:
        job = await clicked_job(interaction, self.job_id)
        original = await _original_request(interaction, self.job_id)
        await submit_from_interaction(
            interaction,
            "reroll",
            reroll(original),
            self.job_id,
            private=await keeps_private(interaction, job),
        )


class PickButton(
    _ReportsErrors,
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=rf"easel:pick:{_JOB}:{_IDX}",
):
    """U1-U4: post that picture alone, with the single-picture buttons."""

    def __init__(self, job_id: str, idx: int, row: int | None = None) -> None:
        super().__init__(
            discord.ui.Button(
                label=f"U{idx + 1}",
                style=discord.ButtonStyle.secondary,
                custom_id=f"easel:pick:{job_id}:{idx}",
                row=row,
            )
        )
        self.job_id = job_id
        self.idx = idx

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: Any
    ) -> PickButton:
        return cls(match["job_id"], int(match["idx"]))

    async def run(self, interaction: discord.Interaction[Any]) -> None:
        job = await clicked_job(interaction, self.job_id)
        if self.idx >= len(job.image_paths):
            raise UserError(f"Job `{self.job_id}` has only {len(job.image_paths)} picture(s).")
        private, spoiler = await keeps_private(interaction, job), await spoilered(interaction, job)
        png = await asyncio.to_thread(job.image_paths[self.idx].read_bytes)
        filename = f"easel-{self.job_id}-{self.idx}.png"
        await interaction.response.send_message(
            f"Picture {self.idx + 1} of `{self.job_id}` (seed {job.seeds[self.idx]}) "
            f"— <@{interaction.user.id}>",
            file=discord.File(io.BytesIO(png), filename=filename, spoiler=spoiler),
            view=single_view(self.job_id, self.idx),
            allowed_mentions=discord.AllowedMentions.none(),
            ephemeral=private,
        )


class _PictureEditButton(_ReportsErrors):
    """A button that submits a new job made from one stored picture of a job: the custom_id
    is ``easel:<action>:<job>:<picture index>:<variant>``, the job's kind is ``action``."""

    action: ClassVar[str]

    def __init__(self, job_id: str, idx: int, variant: str, row: int | None = None) -> None:
        label, emoji = self.looks(idx, variant)
        # The next class in the MRO is discord.ui.DynamicItem, which takes the button.
        super().__init__(  # type: ignore[call-arg]
            discord.ui.Button(
                label=label,
                emoji=emoji,
                style=discord.ButtonStyle.secondary,
                custom_id=f"easel:{self.action}:{job_id}:{idx}:{variant}",
                row=row,
            )
        )
        self.job_id = job_id
        self.idx = idx
        self.variant = variant

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: Any
    ) -> Self:
        return cls(match["job_id"], int(match["idx"]), match["variant"])

    @staticmethod
    def looks(idx: int, variant: str) -> tuple[str | None, str | None]:
        """The button's label and emoji."""
        raise NotImplementedError

    def edit(self, base: RenderRequest, picture: Picture) -> RenderRequest:
        """The new job's request, from the picture and its job's request."""
        raise NotImplementedError

    async def run(self, interaction: discord.Interaction[Any]) -> None:
        job = await clicked_job(interaction, self.job_id)
        base, picture = await _stored_picture(interaction, job, self.idx)
        request = self.edit(base, picture)
        await submit_from_interaction(
            interaction,
            self.action,
            request,
            self.job_id,
            private=await keeps_private(interaction, job),
        )


class VaryButton(
    _PictureEditButton,
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=rf"easel:vary:{_JOB}:{_IDX}:(?P<variant>v|subtle|strong)",
):
    """V1-V4, Vary (Subtle), Vary (Strong): an img2img pass over that picture."""

    action = "vary"

    @staticmethod
    def looks(idx: int, variant: str) -> tuple[str | None, str | None]:
        return (f"V{idx + 1}" if variant == "v" else f"Vary ({variant.title()})"), None

    def edit(self, base: RenderRequest, picture: Picture) -> RenderRequest:
        return vary_request(base, picture, VARY_PRESETS[self.variant])


class UpscaleButton(
    _PictureEditButton,
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=rf"easel:upscale:{_JOB}:{_IDX}:(?P<variant>[24])",
):
    """Upscale (2x/4x): a fast upscale job for that picture; the PNG keeps its infotext."""

    action = "upscale"

    @staticmethod
    def looks(idx: int, variant: str) -> tuple[str | None, str | None]:
        return f"Upscale ({variant}x)", None

    def edit(self, base: RenderRequest, picture: Picture) -> RenderRequest:
        return upscale_request(base, picture, int(self.variant))


class ExpandButton(
    _PictureEditButton,
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=rf"easel:expand:{_JOB}:{_IDX}:(?P<variant>zoom2|left|right|up|down)",
):
    """Zoom Out (2x) and the pans ⬅️ ➡️ ⬆️ ⬇️: outpaint that picture, keeping its pixels."""

    action = "expand"
    _PAN_ARROWS: ClassVar[dict[str, str]] = {"left": "⬅️", "right": "➡️", "up": "⬆️", "down": "⬇️"}

    @staticmethod
    def looks(idx: int, variant: str) -> tuple[str | None, str | None]:
        if variant == "zoom2":
            return "Zoom Out (2x)", None
        return None, ExpandButton._PAN_ARROWS[variant]

    def edit(self, base: RenderRequest, picture: Picture) -> RenderRequest:
        if self.variant == "zoom2":
            return expand_request(base, picture, zoom_out=2.0)
        return expand_request(base, picture, pan=self.variant)


class CancelButton(
    _ReportsErrors,
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=rf"easel:cancel:{_JOB}",
):
    """Cancel under a job's progress message; only its owner (or an admin) may use it."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            discord.ui.Button(
                label="Cancel", style=discord.ButtonStyle.danger, custom_id=f"easel:cancel:{job_id}"
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: Any
    ) -> CancelButton:
        return cls(match["job_id"])

    async def run(self, interaction: discord.Interaction[Any]) -> None:
        outcome = await queue_of(interaction).cancel(self.job_id, acting_member(interaction))
        messages = {
            CancelOutcome.CANCELLED: "Cancelled; nothing was charged.",
            CancelOutcome.STOPPING: "Stopping at the next step; nothing will be charged.",
            CancelOutcome.NOT_YOURS: "Only the member who started this job can cancel it.",
            CancelOutcome.FINISHED: "Too late: that job has already finished.",
            CancelOutcome.UNKNOWN: "That job is no longer in the history.",
        }
        await interaction.response.send_message(messages[outcome], ephemeral=True)


RESULT_BUTTONS = (
    RerollButton,
    PickButton,
    VaryButton,
    UpscaleButton,
    ExpandButton,
    CancelButton,
)


def single_view(job_id: str, idx: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(VaryButton(job_id, idx, "subtle", row=0))
    view.add_item(VaryButton(job_id, idx, "strong", row=0))
    view.add_item(UpscaleButton(job_id, idx, "2", row=0))
    view.add_item(UpscaleButton(job_id, idx, "4", row=0))
    view.add_item(RerollButton(job_id, row=0))
    for how in ("zoom2", "left", "right", "up", "down"):
        view.add_item(ExpandButton(job_id, idx, how, row=1))
    return view


def job_view(job_id: str, image_count: int) -> discord.ui.View:
    """Single picture: Vary/Upscale/🔄, then Zoom Out and pans; several: U1-U4, V1-V4 and 🔄."""
    if image_count == 1:
        return single_view(job_id, 0)
    view = discord.ui.View(timeout=None)
    for idx in range(image_count):
        view.add_item(PickButton(job_id, idx, row=0))
        view.add_item(VaryButton(job_id, idx, "v", row=1))
    view.add_item(RerollButton(job_id, row=2))
    return view
