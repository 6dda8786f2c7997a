"""Posting results: files, caption and persistent buttons of a finished job, plus the progress
edits (queue position, percent, Cancel) that come before it.

Every button is a ``DynamicItem`` whose custom_id holds the job id (and image index), so it
works after a restart: the callback resolves everything through the database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, Self, cast

import discord

from bot.accounting import Member
from bot.edits import Picture, expand_request, upscale_request, vary_request
from bot.guild_policy import NsfwPolicy
from bot.history import StoredJob
from bot.images import fit_under, grid_png, picture_size
from bot.queue import (
    CancelOutcome,
    FinishedJob,
    JobQueue,
    QuotaExceeded,
    Submission,
)
from bot.requests import reroll
from bot.scheduler import PriorityClass
from bot.user_errors import UserError
from cogs.common import services_of
from cogs.errors import report_error
from inference.infotext import format_value
from inference.types import RenderRequest, StepProgress

log = logging.getLogger(__name__)

# Discord accepts edits through an interaction token for 15 minutes; leave a safety margin.
INTERACTION_TOKEN_LIFETIME_S = 14 * 60
# Discord's smallest upload limit, used when the interaction's own limit is unknown (restart).
DEFAULT_FILESIZE_LIMIT = 10 * 1024 * 1024
PROGRESS_EDIT_INTERVAL_S = 2.0
_MAX_CAPTION_PROMPT = 1500
# Discord's alias for an interaction's first response; discord.py types message ids as int.
ORIGINAL_RESPONSE: Any = "@original"
_UNFINISHED = frozenset({"queued", "running"})
# Invalid Webhook Token, Unknown Webhook, Unknown Message.
_GONE_TOKEN_CODES = frozenset({50027, 10015, 10008})
_CANNOT_MESSAGE_USER = 50007
_JOB = r"(?P<job_id>[0-9a-f]{16})"
_IDX = r"(?P<idx>[0-3])"
# V1-V4 vary a grid's picture as much as "Vary (Strong)" does, as Midjourney's do.
VARY_PRESETS = {"v": "strong", "subtle": "subtle", "strong": "strong"}


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


# --- buttons --------------------------------------------------------------------------------


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


# --- delivery -------------------------------------------------------------------------------


def caption(job: FinishedJob) -> str:
    prompt = job.request.prompt or f"({job.kind}, no prompt)"
    if len(prompt) > _MAX_CAPTION_PROMPT:
        prompt = prompt[:_MAX_CAPTION_PROMPT] + "…"
    seeds = ", ".join(str(image.seed) for image in job.images)
    text = (
        f"**{discord.utils.escape_markdown(prompt)}** — <@{job.user_id}> "
        f"(seed {seeds}, job `{job.job_id}`)"
    )
    notes = "".join(f"\nNote: {discord.utils.escape_markdown(n)}" for n in job.request.notes)
    return text + notes


def grid_note(job: FinishedJob) -> str:
    seeds = format_value(" ".join(str(image.seed) for image in job.images))
    return f"Grid: {len(job.images)} images, Grid seeds: {seeds}"


def result_png(job: FinishedJob) -> bytes:
    """The one picture, or a grid of all of them with the first one's infotext."""
    pictures = [image.path.read_bytes() for image in job.images]
    if len(pictures) == 1:
        return pictures[0]
    return grid_png(pictures, f"{job.images[0].infotext}, {grid_note(job)}")


class DiscordResults:
    """The queue's result sink and progress listener: edits the original response while its
    token lives, else posts in the channel mentioning the member (a private result: in the
    member's direct messages, never the channel)."""

    def __init__(
        self,
        client: discord.Client,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        # Token lifetimes are judged on the wall clock (a test may move it with Discord's).
        self.wall_clock = wall_clock
        self._monotonic = monotonic
        self._watched: dict[str, _Watched] = {}

    async def show_queued(
        self, job_id: str, interaction: discord.Interaction[Any], *, spoiler: bool
    ) -> None:
        """Replace "thinking…" with the queue position and a Cancel button, then follow progress
        (previews spoilered like the result; a private job's response is ephemeral, so are they)."""
        state = await queue_of(interaction).state(job_id)
        # No await between this check and the registration: deliver() either already ran
        # (the job has ended, nothing to follow) or will find the entry and wait for our edit.
        if state is None or state.status not in _UNFINISHED:
            return
        created_at = interaction.created_at.timestamp()
        watched = _Watched(interaction.followup, lambda: self._alive(created_at), spoiler)
        self._watched[job_id] = watched
        if state.position is None:  # already rendering: progress edits take over
            return
        eta = f", about {state.eta_s:.0f} s" if state.eta_s is not None else ""
        watched.schedule(f"⏳ Queued — position {state.position + 1}{eta}.", _cancel_view(job_id))
        watched.last_edit = self._monotonic()

    def progress(self, job_id: str, step: StepProgress) -> None:
        """The queue's progress listener: at most one edit per interval per job."""
        watched = self._watched.get(job_id)
        if watched is None or not watched.token_alive():
            return
        if step.preview is not None:
            watched.preview = step.preview  # shown with the next edit
        now = self._monotonic()
        if now - watched.last_edit < PROGRESS_EDIT_INTERVAL_S:
            return
        watched.last_edit = now
        watched.schedule(
            f"🎨 Rendering — {step.fraction:.0%} (step {step.step}/{step.total_steps}).",
            _cancel_view(job_id),
        )

    async def deliver(self, job: FinishedJob) -> int | None:
        watched = self._watched.pop(job.job_id, None)
        if watched is not None:
            await watched.settle()  # never let a late progress edit overwrite the result
        filesize_limit = job.filesize_limit or DEFAULT_FILESIZE_LIMIT
        mentions = discord.AllowedMentions(users=[discord.Object(job.user_id)])
        files: list[discord.File] = []
        view: discord.ui.View | None = None
        if job.succeeded:
            content = caption(job)
            png = await asyncio.to_thread(result_png, job)
            fitted = await asyncio.to_thread(fit_under, png, filesize_limit)
            if fitted.is_preview:
                content += f"\nThis is a smaller preview; `/show {job.job_id}` gives the original."
            files = [
                discord.File(
                    io.BytesIO(fitted.data),
                    filename=f"easel-{job.job_id}.{fitted.extension}",
                    spoiler=job.spoiler,
                )
            ]
            view = job_view(job.job_id, len(job.images))
        elif job.error == "cancelled":
            content = f"<@{job.user_id}> Cancelled (job `{job.job_id}`); nothing was charged."
        else:
            content = f"<@{job.user_id}> ❌ {job.error} (job `{job.job_id}`)"
        if (
            job.application_id is not None
            and job.interaction_token is not None
            and job.interaction_created_at is not None
            and self._alive(job.interaction_created_at)
        ):
            webhook = discord.Webhook.partial(
                job.application_id, job.interaction_token, client=self._client
            )
            try:
                edited = await webhook.edit_message(
                    ORIGINAL_RESPONSE,
                    content=content,
                    attachments=files,
                    allowed_mentions=mentions,
                    view=view,
                )
                return edited.id
            except discord.HTTPException as error:
                # Clocks disagree, or the response was deleted: post it as a message instead.
                if error.code not in _GONE_TOKEN_CODES:
                    raise
                log.warning("job %s: the interaction token is gone (%s)", job.job_id, error)
                for file in files:
                    file.reset()
        if job.private:  # never the channel: the member asked to see it alone
            return await self._post_directly(job, content, files, mentions, view)
        if job.channel_id is None:
            return None
        channel: discord.abc.Messageable = self._client.get_partial_messageable(job.channel_id)
        try:
            return await self._post(channel, job, content, files, mentions, view)
        except discord.Forbidden as error:
            # The bot may not post there (any more): the member gets it in a direct message.
            log.warning("job %s: cannot post in the channel (%s); sending a DM", job.job_id, error)
            return await self._post_directly(job, content, files, mentions, view)

    async def _post_directly(
        self,
        job: FinishedJob,
        content: str,
        files: list[discord.File],
        mentions: discord.AllowedMentions,
        view: discord.ui.View | None,
    ) -> int | None:
        """Post in the member's direct messages; when those are closed to the bot, nowhere
        (logged: `/show` still brings the result back). A server's job gets no buttons
        there, since a click outside its server is refused."""
        for file in files:
            file.reset()
        if job.guild_id is not None and view is not None:
            view = None
            content += f"\nIts buttons work in its server: `/show {job.job_id}` there."
        try:
            direct = await self._client.create_dm(discord.Object(job.user_id))
            return await self._post(direct, job, content, files, mentions, view)
        except discord.HTTPException as error:
            if not isinstance(error, discord.Forbidden) and error.code != _CANNOT_MESSAGE_USER:
                raise
            log.warning(
                "job %s: the member's direct messages are closed to the bot (%s); "
                "the result was not posted",
                job.job_id,
                error,
            )
            return None

    @staticmethod
    async def _post(
        channel: discord.abc.Messageable,
        job: FinishedJob,
        content: str,
        files: list[discord.File],
        mentions: discord.AllowedMentions,
        view: discord.ui.View | None,
    ) -> int:
        # The job id as an enforced nonce: Discord returns the first message instead of
        # posting a second one when a restart delivers the same job again.
        sent = await channel.send(
            content=content,
            files=files,
            allowed_mentions=mentions,
            view=view or discord.utils.MISSING,
            nonce=job.job_id,
        )
        return sent.id

    def _alive(self, interaction_created_at: float) -> bool:
        return self.wall_clock() - interaction_created_at < INTERACTION_TOKEN_LIFETIME_S


def _cancel_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


class _Watched:
    """One job's progress message: edits run one at a time, the newest text wins."""

    def __init__(
        self, followup: discord.Webhook, token_alive: Callable[[], bool], spoiler: bool
    ) -> None:
        self._followup = followup
        self.token_alive = token_alive
        self._spoiler = spoiler
        self._edit: asyncio.Task[None] | None = None
        self.last_edit = float("-inf")
        # The newest preview JPEG not shown yet (the engine makes them as often as we edit).
        self.preview: bytes | None = None

    def schedule(self, content: str, view: discord.ui.View) -> None:
        """Edit the message to ``content``, with the newest preview if one came since."""
        previous, preview, self.preview = self._edit, self.preview, None
        self._edit = asyncio.ensure_future(self._run(previous, content, view, preview))

    async def _run(
        self,
        previous: asyncio.Task[None] | None,
        content: str,
        view: discord.ui.View,
        preview: bytes | None,
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        if not self.token_alive():  # judged again now: the edit may have waited a while
            return
        # Without a new preview the message keeps the one it shows.
        attachments = (
            discord.utils.MISSING
            if preview is None
            else [discord.File(io.BytesIO(preview), filename="preview.jpg", spoiler=self._spoiler)]
        )
        try:
            await self._followup.edit_message(
                ORIGINAL_RESPONSE, content=content, view=view, attachments=attachments
            )
        except discord.HTTPException as error:
            log.warning("progress edit failed (%s); the result will still be posted", error)

    async def settle(self) -> None:
        if self._edit is not None:
            await asyncio.wait([self._edit])
