"""The buttons under a job's messages: U1-U4, V1-V4, 🔄, Vary, Upscale, Zoom Out and the pans
under a result, Remix, DM me and Delete under every result, Cancel under its progress.

Every button is a ``DynamicItem`` whose custom_id holds the job id (and image index), so it
works after a restart: the callback resolves everything through the database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, cast

import discord

from bot.alt_text import picture_description
from bot.edits import (
    Picture,
    expand_request,
    fix_faces_request,
    is_fast_upscale,
    picture_settings,
    upscale_request,
    vary_request,
)
from bot.history import History, PostedMessage, StoredJob
from bot.images import picture_size
from bot.jobs.queue import CancelOutcome, JobQueue, job_gone
from bot.policy.guild import NsfwPolicy
from bot.policy.moderation import (
    AGE_RESTRICTED_STAYS_IN_THE_SERVER,
    as_the_stored_pictures_refusal,
)
from bot.requests import picture_alone, reroll
from bot.services import Services
from bot.user_errors import Reason, UserError
from cogs.common import (
    MAX_QUOTED_PROMPT,
    acting_member,
    defer_thinking,
    picture_renderers_in,
    queue_of,
    quoted,
    services_of,
    shown_prompt,
    submit_from_interaction,
    tell,
)
from cogs.errors import report_error
from cogs.moderation import moderated_job, post_link, withdraw_as_moderator
from cogs.results.copies import CopiedPicture, copy_files, may_go_to_direct_messages, send_copy
from cogs.results.fitted import SHOWN_AS_PREVIEW, fitted_file
from cogs.results.job_files import carries_pictures_of
from cogs.results.remix import RemixModal
from cogs.results.repeated_clicks import answered_once
from cogs.visibility import (
    DISCORD_FAILED,
    GuildChannelLike,
    check_enabled_here,
    check_member_may_act_here,
    check_member_may_read_channel,
    moderated_channels,
)
from cogs.withdrawals import UNKNOWN_MESSAGE, check_posts_there
from cogs.wording import NO_PROMPT, cancel_answer, counted
from inference.types import RenderRequest

log = logging.getLogger(__name__)

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
        raise job_gone(job_id)
    return job


async def check_clicker_may_see(
    interaction: discord.Interaction[Any], job: StoredJob
) -> GuildChannelLike | None:
    """A private job is its maker's alone (answered as if it did not exist), and a job's
    pictures are for members who can read the channel it was made in, clicked there or
    anywhere else: a copy of its buttons elsewhere widens neither, and neither does a form
    submitted after the member lost the channel (their own job clicked in its channel: see
    ``check_member_may_read_channel``, whose channel it returns, for later checks)."""
    made_by_clicker = job.user_id == interaction.user.id
    if job.private and not made_by_clicker:
        raise job_gone(job.job_id)
    if job.channel_id is None:
        return None
    return await check_member_may_read_channel(
        interaction,
        job.channel_id,
        made_by_clicker=made_by_clicker,
        restricted_when_made=job.age_restricted,
    )


async def check_still_shown(
    services: Services, job: StoredJob, member_id: int, *, resubmitted: bool = False
) -> None:
    """Refuse ``job``'s stored pictures to every path that posts them again or makes a new
    job of them when a moderator deleted its result, or when what they were conditioned on
    renders a word the server has banned since (``GuildPolicy.check_reuse``). A button that
    submits the job's request again (``resubmitted``) leaves its prompts to the admission's
    plan, which reads them anyway (``StoredJob.texts_to_recheck``). ``member_id``: who asks
    (their stored checks take turns)."""
    await services.guild_policy.check_reuse(
        job.guild_id,
        job.job_id,
        job.texts_to_recheck(resubmitted=resubmitted),
        withdrawn=job.withdrawn,
        withheld=job.withheld,
        prompts_planned=resubmitted,
        member_id=member_id,
    )


async def visible_job(
    interaction: discord.Interaction[Any], job_id: str, *, resubmitted: bool = False
) -> StoredJob:
    """The job a button names, if the clicker may use it here (``visible_job_where_made``)."""
    job, _ = await visible_job_where_made(interaction, job_id, resubmitted=resubmitted)
    return job


async def visible_job_where_made(
    interaction: discord.Interaction[Any], job_id: str, *, resubmitted: bool = False
) -> tuple[StoredJob, GuildChannelLike | None]:
    """The job a button names (``clicked_job``), if Easel is enabled where it is clicked
    (the channel's rules of now, as /show and a job's admission read them), the clicker may
    see it (``check_clicker_may_see``) and it may still be used (``check_still_shown``):
    every button that reads a job's prompt or pictures asks this, so none of them (U1 posting
    a picture again, DM me, Remix's form) works in a channel the server has closed since.
    With the job, its channel where the cache may lack it (``check_clicker_may_see``): asked
    of Discord once, not again by a later check of the same click."""
    services = services_of(interaction)
    await check_enabled_here(interaction)
    job = await clicked_job(interaction, job_id)
    made_in = await check_clicker_may_see(interaction, job)
    await check_still_shown(services, job, interaction.user.id, resubmitted=resubmitted)
    return job, made_in


async def submit_again(
    interaction: discord.Interaction[Any],
    kind: str,
    request: RenderRequest,
    job: StoredJob,
    picture: Picture | None = None,
) -> None:
    """``submit_from_interaction`` for a button that submits ``job``'s stored prompt again (🔄
    and the picture edits): its admission reads the prompt under the server's words of now,
    and a refusal of it is the stored picture's (``BANNED_SINCE``, ``STORED_TOO_LONG``),
    naming no word: the clicker may not have typed that prompt. ``picture``: the one of
    ``job``'s that ``request`` edits (its size reckons the cost)."""
    with as_the_stored_pictures_refusal():
        await submit_from_interaction(
            interaction,
            kind,
            request,
            job,
            private=await keeps_private(interaction, job),
            input_size=None if picture is None else picture.size,
        )


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
    return await original_request(queue_of(interaction), job_id)


async def original_request(queue: JobQueue, job_id: str) -> RenderRequest:
    request = await queue.request_of(job_id)
    if request is None:
        raise job_gone(job_id)
    return request


async def _stored_picture(
    interaction: discord.Interaction[Any], job: StoredJob, idx: int
) -> tuple[RenderRequest, Picture]:
    return await stored_picture(queue_of(interaction), services_of(interaction), job, idx)


def only_pictures(job_id: str, count: int) -> UserError:
    """The refusal of a button or link naming a picture past the job's last."""
    return UserError(f"Job `{job_id}` has only {counted(count, 'picture')}.")


def picture_deleted(job_id: str, index: int) -> UserError:
    """The answer when picture ``index`` of a stored result is gone: pruned, erased, or named
    outside the data folder (``stored_file`` reads such a name as a missing file)."""
    return UserError(
        f"Picture {index + 1} of job `{job_id}` was deleted; make a new one with /imagine."
    )


def deleted_picture_read(
    job: StoredJob, read: Iterable[int], missing: FileNotFoundError
) -> UserError:
    """``picture_deleted`` for a read of ``job``'s pictures ``read`` (indexes, in that order)
    that found ``missing``: the first of them by that name is the one whose read failed."""
    name = Path(missing.filename)
    return picture_deleted(job.job_id, next(i for i in read if job.image_paths[i] == name))


async def stored_picture(
    queue: JobQueue, services: Services, job: StoredJob, idx: int
) -> tuple[RenderRequest, Picture]:
    """Picture ``idx`` of a stored result, and its job's request with that picture's seed. A
    fast upscale's request keeps only the words and seed (``is_fast_upscale``): its picture's
    settings are read from the text it carries over, as ``/vary`` of its post reads them
    (with a note for a model or VAE not usable here)."""
    job_id = job.job_id
    if idx >= len(job.image_paths):
        raise only_pictures(job_id, len(job.image_paths))
    path = job.image_paths[idx]
    try:
        width, height = await asyncio.to_thread(picture_size, path)
    except FileNotFoundError:
        raise picture_deleted(job_id, idx) from None
    picture = Picture(path, width, height, job.infotexts[idx])
    original = await original_request(queue, job_id)
    if is_fast_upscale(original) and picture.infotext:
        renderers = await picture_renderers_in(services, job.guild_id)
        read = picture_settings(picture.infotext, renderers)
        return dataclasses.replace(read, seed=job.seeds[idx]), picture
    request = dataclasses.replace(picture_alone(original, idx, job.seeds[idx]), notes=[])
    return request, picture


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


class JobButton(_ReportsErrors):
    """A button about a whole job or one picture of it: the custom_id is
    ``easel:<action>:<job>`` or ``easel:<action>:<job>:<picture index>``."""

    action: ClassVar[str]
    label: ClassVar[str | None] = None
    emoji: ClassVar[str | None] = None
    style: ClassVar[discord.ButtonStyle] = discord.ButtonStyle.secondary

    def __init__(self, job_id: str, idx: int | None = None, row: int | None = None) -> None:
        suffix = "" if idx is None else f":{idx}"
        label, emoji = self.looks(idx)
        # The next class in the MRO is discord.ui.DynamicItem, which takes the button.
        super().__init__(  # type: ignore[call-arg]
            discord.ui.Button(
                label=label,
                emoji=emoji,
                style=self.style,
                custom_id=f"easel:{self.action}:{job_id}{suffix}",
                row=row,
            )
        )
        self.job_id = job_id
        self.idx = idx

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: Any
    ) -> Self:
        idx = match.groupdict().get("idx")
        return cls(match["job_id"], None if idx is None else int(idx))

    @classmethod
    def looks(cls, idx: int | None) -> tuple[str | None, str | None]:
        """The button's label and emoji."""
        return cls.label, cls.emoji


class RerollButton(
    JobButton,
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=rf"easel:reroll:{_JOB}(?::{_IDX})?",
):
    """🔄 Reroll: the same request with a new seed. Under one picture of a grid (``idx``;
    posted since session 27, an older button names none), that picture alone, as Remix there.
    Its word beside the emoji is what a screen reader says (the emoji's name is not it)."""

    action, label, emoji = "reroll", "Reroll", "🔄"

    async def run(self, interaction: discord.Interaction[Any]) -> None:
        job = await visible_job(interaction, self.job_id, resubmitted=True)
        original = await _remade_request(interaction, job, self.idx, "Reroll (🔄)")
        await submit_again(interaction, "reroll", reroll(original), job)


async def _remade_request(
    interaction: discord.Interaction[Any], job: StoredJob, idx: int | None, button: str
) -> RenderRequest:
    """The request 🔄 and Remix make ``job`` again from: its own, or picture ``idx``'s alone.
    A fast upscale is refused (a button posted before they were left out under one): it
    renders nothing, so it would post the same pixels again and charge for them."""
    original = await _original_request(interaction, job.job_id)
    if is_fast_upscale(original):
        raise UserError(
            f"{button} does nothing new under an upscale: it would enlarge the same picture "
            "again. Use it under the picture that was upscaled, or Vary this one."
        )
    if idx is not None:
        if idx >= len(job.seeds):
            raise only_pictures(job.job_id, len(job.seeds))
        original = dataclasses.replace(picture_alone(original, idx, job.seeds[idx]), count=1)
    return original


class PickButton(
    JobButton,
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=rf"easel:pick:{_JOB}:{_IDX}",
):
    """U1-U4: post that picture alone, with the single-picture buttons."""

    action = "pick"

    @classmethod
    def looks(cls, idx: int | None) -> tuple[str | None, str | None]:
        return f"U{(idx or 0) + 1}", None

    @answered_once
    async def run(self, interaction: discord.Interaction[Any]) -> bool:
        idx = self.idx
        assert idx is not None  # the template always holds a picture index
        job = await visible_job(interaction, self.job_id)
        if idx >= len(job.image_paths):
            raise only_pictures(self.job_id, len(job.image_paths))
        private, spoiler = await keeps_private(interaction, job), await spoilered(interaction, job)
        check_member_may_act_here(interaction, private=private)  # posted for them, as a result is
        # Acknowledged before the upload, which may take past Discord's 3 s.
        await defer_thinking(interaction, private=private)
        await check_posts_there(interaction.client, services_of(interaction), job)
        path, stem = job.image_paths[idx], f"easel-{self.job_id}-{idx}"
        try:
            # In the member's line of picture work: a burst of clicks never fills the default pool.
            file, is_preview = await services_of(interaction).picture_work.run(
                interaction.user.id,
                lambda: fitted_file(
                    path.read_bytes(),
                    stem,
                    interaction.filesize_limit,
                    spoiler=spoiler,
                    description=picture_description(self.job_id, idx, len(job.image_paths)),
                ),
            )
        except FileNotFoundError:
            raise picture_deleted(self.job_id, idx) from None
        # Its "thinking…" becomes the post: an edit, sent again after a 5xx without a copy.
        # It names no clicker: it is the maker's job's post, which the clicker's /forget-me
        # does not reach.
        sent = await interaction.edit_original_response(
            content=picture_caption(job, idx) + (SHOWN_AS_PREVIEW if is_preview else ""),
            attachments=[file],
            view=single_view(self.job_id, idx, picked=True),
            allowed_mentions=discord.AllowedMentions.none(),
        )
        if not private:
            history = services_of(interaction).history
            await link_post_again(history, job, interaction.channel_id, sent)
        return True


async def link_post_again(
    history: History, job: StoredJob, channel_id: int | None, sent: discord.Message
) -> None:
    """Link ``sent``, a public post of ``job``'s pictures again (/show, U1-U4), to its job. If
    its maker's /forget-me erased the job meanwhile, nothing else would delete it: deleted
    here, and settled; refused or failed, left to /forget-me's sweep, which its record asked
    to delete it (``History.posted_again``)."""
    if await history.posted_again(job, channel_id, sent.id) or channel_id is None:
        return
    await delete_erased_post(history, job.job_id, PostedMessage(channel_id, sent.id), sent.delete)


async def link_copy(
    history: History | None,
    job_id: str,
    guild_id: int | None,
    post: PostedMessage,
    delete: Callable[[], Awaitable[None]],
) -> None:
    """Link ``post``, a copy of the pictures of ``job_id`` (of ``guild_id``; None: made in
    direct messages, nothing to link) in a member's direct messages, to its job: no moderator
    reaches it there, so a moderator's withdrawal of the job deletes it. One withdrawn or
    erased meanwhile is deleted now (``delete_erased_post``)."""
    if history is None or guild_id is None:
        return
    if not await history.copy_sent(job_id, post):
        await delete_erased_post(history, job_id, post, delete)


async def delete_erased_post(
    history: History | None,
    job_id: str,
    post: PostedMessage,
    delete: Callable[[], Awaitable[None]],
) -> None:
    """Delete ``post`` of the erased job ``job_id`` (``delete``: through whichever route can),
    whose delete waits in the database since its record found the job gone: done or found
    gone, it is settled; refused or failed, /forget-me's sweep tries it again under that
    sweep's rules (``History.post_delete_failed``)."""
    try:
        await delete()
    except discord.NotFound:
        pass  # deleted already
    except DISCORD_FAILED as error:
        log.warning("job %s: the erased job's post stays for now (%s)", job_id, error)
        if history is not None:
            await history.post_delete_failed(post)
        return
    if history is not None:
        await history.post_delete_settled(post)


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

    async def edit_here(
        self, interaction: discord.Interaction[Any], base: RenderRequest, picture: Picture
    ) -> RenderRequest:
        """``edit``, for a button whose request also depends on what is installed here."""
        return self.edit(base, picture)

    async def run(self, interaction: discord.Interaction[Any]) -> None:
        # Its request keeps the job's prompt and negative prompt (``_stored_picture``).
        job = await visible_job(interaction, self.job_id, resubmitted=True)
        base, picture = await _stored_picture(interaction, job, self.idx)
        request = await self.edit_here(interaction, base, picture)
        await submit_again(interaction, self.action, request, job, picture)


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
    """Zoom Out (2x) and the pans (⬅️ Pan left...): outpaint that picture, keeping its
    pixels."""

    action = "expand"
    _PAN_ARROWS: ClassVar[dict[str, str]] = {"left": "⬅️", "right": "➡️", "up": "⬆️", "down": "⬇️"}

    @staticmethod
    def looks(idx: int, variant: str) -> tuple[str | None, str | None]:
        if variant == "zoom2":
            return "Zoom Out (2x)", None
        # Words beside the arrow: a screen reader says "Pan left", not the arrow's name.
        return f"Pan {variant}", ExpandButton._PAN_ARROWS[variant]

    def edit(self, base: RenderRequest, picture: Picture) -> RenderRequest:
        if self.variant == "zoom2":
            return expand_request(base, picture, zoom_out=2.0)
        return expand_request(base, picture, pan=self.variant)


class FixFacesButton(
    _PictureEditButton,
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=rf"easel:faces:{_JOB}:{_IDX}:(?P<variant>fix)",
):
    """Fix faces: each face of that picture re-rendered (ADetailer-style), then restored
    where the server has a face restorer installed; a job charged to whoever presses it."""

    action = "faces"

    @staticmethod
    def looks(idx: int, variant: str) -> tuple[str | None, str | None]:
        return "Fix faces", "🙂"

    async def edit_here(
        self, interaction: discord.Interaction[Any], base: RenderRequest, picture: Picture
    ) -> RenderRequest:
        # Off the loop: the restorer folders are walked for it.
        installed = await asyncio.to_thread(services_of(interaction).registry.face_restorer_files)
        return fix_faces_request(base, picture, restore=bool(installed))


class CancelButton(
    JobButton,
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=rf"easel:cancel:{_JOB}",
):
    """Cancel under a job's progress message; its owner (or an admin) cancels it, and a
    member with Manage Messages in its channel stops it as a moderator (``_moderators_stop``)."""

    action, label = "cancel", "Cancel"
    style = discord.ButtonStyle.danger

    async def run(self, interaction: discord.Interaction[Any]) -> None:
        # Answered first: a cancel the database holds up takes minutes to say so.
        await defer_thinking(interaction, private=True)
        outcome = await queue_of(interaction).cancel(self.job_id, acting_member(interaction))
        if outcome is CancelOutcome.NOT_YOURS:
            await tell(interaction, await _moderators_stop(interaction, self.job_id))
            return
        await tell(interaction, cancel_answer(outcome, self.job_id))


async def _moderators_stop(interaction: discord.Interaction[Any], job_id: str) -> str:
    """Cancel clicked by a member who did not start the job: one with Manage Messages in its
    channel stops a public one there as a moderator, withdrawing it as deleting its progress
    message would (refunded to its maker, audited as theirs); what they are told."""
    try:
        job = await moderated_job(interaction, job_id)
    except UserError:
        return (
            "Only the member who started this job, or a member with Manage Messages in its "
            "channel, can cancel it."
        )
    if job.status not in ("queued", "running"):
        return cancel_answer(CancelOutcome.FINISHED, job_id)
    return await withdraw_as_moderator(interaction, job)


class RemixButton(
    JobButton,
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=rf"easel:remix:{_JOB}(?::{_IDX})?",
):
    """Remix: a modal with the job's prompt and main settings filled in; submitted, the edited
    job renders for whoever submits it. Under one picture of a grid (``idx``), that picture."""

    action, label, emoji = "remix", "Remix", "🎛️"

    async def run(self, interaction: discord.Interaction[Any]) -> None:
        job = await visible_job(interaction, self.job_id)
        original = await _remade_request(interaction, job, self.idx, "Remix")
        original = dataclasses.replace(original, notes=[])
        modal = RemixModal(
            self.job_id,
            original,
            private=await keeps_private(interaction, job),
            visible_job=visible_job,
        )
        await interaction.response.send_modal(modal)


class DirectCopyButton(
    JobButton,
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=rf"easel:dm:{_JOB}(?::{_IDX})?",
):
    """DM me: a copy of the result (or of one picture) in the clicker's direct messages."""

    action, label, emoji = "dm", "DM me", "📩"

    @answered_once
    async def run(self, interaction: discord.Interaction[Any]) -> bool:
        job = await visible_job(interaction, self.job_id)
        indexes = range(len(job.image_paths)) if self.idx is None else [self.idx]
        if max(indexes) >= len(job.image_paths):
            raise only_pictures(self.job_id, len(job.image_paths))
        policy = services_of(interaction).guild_policy
        if not await may_go_to_direct_messages(
            interaction.client,
            policy,
            job.guild_id,
            job.channel_id,
            restricted_when_made=job.age_restricted,
            thread_parent_id=job.thread_parent_id,
        ):
            raise UserError(AGE_RESTRICTED_STAYS_IN_THE_SERVER, Reason.NSFW)
        await defer_thinking(interaction, private=True)
        await check_posts_there(interaction.client, services_of(interaction), job)
        count = len(job.image_paths)
        pictures: list[CopiedPicture] = [
            (
                job.image_paths[i],
                f"easel-{job.job_id}-{i}",
                picture_description(job.job_id, i, count),
            )
            for i in indexes
        ]
        spoiler = await spoilered(interaction, job)
        try:
            # In the member's line of picture work: a burst of clicks never fills the default pool.
            files = await services_of(interaction).picture_work.run(
                interaction.user.id, copy_files, pictures, spoiler
            )
            sent = await send_copy(
                interaction.client,
                interaction.user.id,
                copy_caption(job, indexes),
                files,
                view=copy_view(job.job_id),
                nonce=secrets.token_hex(8),  # every click is a copy of its own
            )
        except FileNotFoundError as missing:
            raise deleted_picture_read(job, indexes, missing) from None
        if sent is not None:
            copied = PostedMessage(sent.channel.id, sent.id)
            history = services_of(interaction).history
            await link_copy(history, job.job_id, job.guild_id, copied, sent.delete)
        await interaction.followup.send(
            "Sent to your direct messages."
            if sent is not None
            else "I cannot send you direct messages: allow them from this server's members "
            "(Privacy Settings), then click again.",
            ephemeral=True,
        )
        return sent is not None  # not sent: the click again it asks for is no repeat


# Discord's "Unknown Channel": the channel or thread was deleted, its messages with it.
UNKNOWN_CHANNEL = 10003
# Discord's "Thread is archived": nothing in it may change until someone unarchives it.
THREAD_ARCHIVED = 50083


class DeleteButton(
    JobButton,
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=rf"easel:delete:{_JOB}",
):
    """Delete the message it is on. In a server: a message the clicker alone sees (a private
    result) for anyone who has it; else, for a member with Manage Messages in that channel,
    a post of the job there (``job_messages``: never another message its button may be put
    on), whose deletion withdraws the job as one made in Discord does; for the job's maker,
    that or a message Easel wrote carrying the job's pictures (``carries_pictures_of``: a
    post not recorded, from before the records or a crash), which withdraws nothing. In
    direct messages, the member's own copy."""

    action, label, emoji = "delete", "Delete", "🗑️"
    style = discord.ButtonStyle.danger

    async def run(self, interaction: discord.Interaction[Any]) -> None:
        # A moderator's post to withdraw once Discord deleted it: (guild, channel, message).
        moderated: tuple[int, int, int] | None = None
        message = interaction.message
        # Seen by the clicker alone (a private result): deleting it withdraws nothing.
        seen_alone = message is not None and message.flags.ephemeral
        if interaction.guild_id is not None and not seen_alone:
            job = await clicked_job(interaction, self.job_id)
            history = services_of(interaction).history
            made_by_clicker = job.user_id == interaction.user.id
            # Discord computes Manage Messages for the channel the message is in.
            if not made_by_clicker and not interaction.permissions.manage_messages:
                raise UserError(
                    "Only the member who made this picture, or a member with Manage Messages "
                    "in this channel, can delete it."
                )
            channel_id = interaction.channel_id
            not_its_post = UserError(
                f"This message is already deleted, or is not a post of job `{job.job_id}` in "
                "this channel, so its Delete button does not delete it."
            )
            if message is None or channel_id is None:
                raise not_its_post
            post = interaction.guild_id, channel_id, message.id
            if made_by_clicker:
                if history.deleting_now(post):
                    # A moderator's click deleting it withdraws the job: an unlink would undo
                    # it. This click goes on only once theirs failed (the post stays).
                    await interaction.response.defer()
                    if await history.deleted_by_moderators(post):
                        return
                if message.id in _MAKERS_DELETING or history.deleting_now(post):
                    # Its first click deletes it. This one's delete could reach Discord first,
                    # and the first's 404 would then link the post again as a moderator's.
                    if not interaction.response.is_done():
                        await interaction.response.defer()
                    return
                _MAKERS_DELETING.add(message.id)
                try:
                    # Before the delete: its event may arrive before the delete's answer.
                    if await history.deleted_by_its_maker(job.job_id, message.id):
                        await _delete_clicked(interaction, unlinked=(job, message.id))
                    elif _easel_post_of(interaction, message, job.job_id):
                        await _delete_clicked(interaction)
                    else:
                        raise not_its_post
                finally:
                    _MAKERS_DELETING.discard(message.id)
                return
            # As the deletion's own event does: only a post of the job in this channel
            # withdraws it (never a message of another channel that names the job).
            recorded = await history.is_post_of(job.job_id, *post)
            if not (recorded or _easel_post_of(interaction, message, job.job_id)):
                raise not_its_post
            if message.id in _MAKERS_DELETING:
                # Its maker's Delete unlinks it (before or after the read above) and deletes
                # it: what this moderator's deletion would do is done as theirs, by job id.
                await defer_thinking(interaction, private=True)
                withdrawn = await withdraw_as_moderator(interaction, job)
                await tell(interaction, f"Its maker is deleting this post already. {withdrawn}")
                return
            if not recorded:
                # Its post from before the records (or lost to a crash): nothing to withdraw.
                raise UserError(
                    f"Easel has no record of this post of job `{job.job_id}`; delete it in "
                    "Discord (it withdraws nothing)."
                )
            # Marked ``deleting`` with no await before it: a maker's click from now on sees it.
            moderated = post
        if moderated is None:
            # A button in direct messages is on the clicker's own copy.
            await _delete_clicked(interaction)
            if interaction.guild_id is None and message is not None:
                # Gone, found gone or not: a withdrawal of its job has nothing there to delete.
                await services_of(interaction).history.copy_deleted(message.id)
            return
        history = services_of(interaction).history
        # Its deletion's event may come before the answer: it waits for it (``deleting``).
        with history.deleting(moderated):
            if not await _delete_clicked(interaction):
                return
            # After its event or before: withdrawn once.
            guild_id, channel_id, message_id = moderated
            await history.withdraw_deleted(
                guild_id, channel_id, [message_id], by=interaction.user.id
            )
        await _tell_of_older_copies(interaction, self.job_id)


async def _tell_of_older_copies(interaction: discord.Interaction[Any], job_id: str) -> None:
    """A moderator's Delete withdrew ``job_id``, but never an older job of the server with
    the same pixels (a member could otherwise copy another's picture into a channel they
    moderate and delete it there): each one still standing and posted is named to them
    privately, with a link to its post where they have Manage Messages in its channel, else
    only said to be up elsewhere (the audit row names them all)."""
    history = services_of(interaction).history
    older = await history.older_standing_copies(job_id)
    if not older:
        return
    guild_id = interaction.guild_id
    assert guild_id is not None  # a moderator's Delete is a server's
    channels = (post.channel_id for _, posts in older for post in posts)
    moderated = await moderated_channels(interaction, channels)
    lines = []
    elsewhere = False
    for twin, posts in older:
        # One posted nowhere (private, or its posts deleted) is not up: not said to be, nor
        # its existence told (the audit row names it).
        if not posts:
            continue
        post = next((post for post in posts if post.channel_id in moderated), None)
        if post is None:
            elsewhere = True
        else:
            lines.append(
                f"An older job with these pixels is still up: `{twin.job_id}` "
                f"{post_link(guild_id, post)}"
            )
    if elsewhere:
        lines.append(
            "An older copy of this picture is still up elsewhere in this server, where you "
            "lack Manage Messages."
        )
    if lines:
        await interaction.followup.send("\n".join(lines), ephemeral=True)


# The messages a maker's Delete click is deleting now (their ids).
_MAKERS_DELETING: set[int] = set()


async def _delete_clicked(
    interaction: discord.Interaction[Any], *, unlinked: tuple[StoredJob, int] | None = None
) -> bool:
    """Delete the message the button is on; False: Discord answers it is deleted already.
    ``unlinked``: its maker's post, unlinked from its job first, linked again unless this
    deleted it (Discord refused; or another deleted it, a moderator whose deletion's event
    may come after the unlink: it withdraws the job then, or now if it came first)."""
    try:
        if not interaction.response.is_done():  # a maker's click waited for a moderator's
            await interaction.response.defer()
        await interaction.delete_original_response()
    except Exception as error:
        if unlinked is not None:
            await _link_again(interaction, *unlinked)
        # Only Unknown Message is "already deleted" (its channel gone, 10003, is not): by a
        # second click or in Discord, whose deletion's own event withdraws what it withdraws.
        if isinstance(error, discord.NotFound) and error.code == UNKNOWN_MESSAGE:
            return False
        if isinstance(error, discord.NotFound):
            raise UserError(_not_found_on_delete(interaction, error)) from error
        raise
    return True


async def _link_again(
    interaction: discord.Interaction[Any], job: StoredJob, message_id: int
) -> None:
    """Link the maker's post to its job again after a Delete that did not delete it. A write
    that fails is logged, not raised: the delete's own error is what the clicker is told."""
    try:
        await services_of(interaction).history.posted_again(job, interaction.channel_id, message_id)
    except Exception:
        log.exception(
            "job %s: post %d, unlinked for its maker's Delete, could not be linked again; a "
            "moderator's deletion of it withdraws nothing",
            job.job_id,
            message_id,
        )


def _not_found_on_delete(interaction: discord.Interaction[Any], error: discord.NotFound) -> str:
    """What a clicker is told when Discord answers a Delete with a 404 other than Unknown
    Message: what it could not find, that nothing was deleted by the click, and what they
    can do: only the clicker with Manage Messages can delete Easel's message in a server, a
    message seen by them alone they can dismiss, and nobody can delete it in direct
    messages."""
    if error.code == UNKNOWN_CHANNEL:
        return "Discord answers that this message's channel is gone, and its messages with it."
    message = interaction.message
    if message is not None and message.flags.ephemeral:
        remedy = "Dismiss it in Discord."
    elif interaction.guild_id is None:
        remedy = "Nothing was deleted."
    elif interaction.permissions.manage_messages:
        remedy = "Delete it in Discord."
    else:
        remedy = "Ask a moderator to delete it."
    return (
        f"Discord did not delete this message: it answers that something is missing "
        f"({quoted(error.text, 100) or 'not found'}, code {error.code}). {remedy}"
    )


def _easel_post_of(
    interaction: discord.Interaction[Any], message: discord.Message, job_id: str
) -> bool:
    """Whether ``message`` is Easel's own post of ``job_id``'s pictures, recorded or not."""
    easel = interaction.client.user
    return (
        easel is not None
        and message.author.id == easel.id
        and carries_pictures_of(message, job_id, result_only=False)
    )


def picture_caption(job: StoredJob, idx: int) -> str:
    """The caption of ``job``'s picture ``idx`` posted alone (U1-U4)."""
    return f"Picture {idx + 1} of `{job.job_id}` (seed {job.seeds[idx]})"


def copy_caption(job: StoredJob, indexes: Sequence[int] | None = None) -> str:
    """The caption of a copy of ``job``'s pictures at ``indexes`` (None: all of them): the
    seeds of those sent alone, and which picture it is when one of several is sent."""
    prompt = shown_prompt(job.prompt, MAX_QUOTED_PROMPT) or NO_PROMPT
    sent = range(len(job.seeds)) if indexes is None else indexes
    seeds = ", ".join(str(job.seeds[index]) for index in sent)
    which = f"picture {sent[0] + 1} of job" if len(sent) == 1 < len(job.seeds) else "job"
    return f"**{prompt}** — {which} `{job.job_id}` (seed {seeds})"


def copy_view(job_id: str) -> discord.ui.View:
    """The buttons under a copy in direct messages: Delete alone."""
    view = discord.ui.View(timeout=None)
    view.add_item(DeleteButton(job_id))
    return view


class RegionOffer(Protocol):
    """Vary (Region)'s two ways to say where (``cogs.region.RegionOffers``)."""

    async def offer(
        self,
        interaction: discord.Interaction[Any],
        job: StoredJob,
        idx: int,
        made_in: GuildChannelLike | None,
    ) -> None: ...


class RegionButton(
    JobButton,
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=rf"easel:region:{_JOB}:{_IDX}",
):
    """Vary (Region): repaint part of that picture, named in words or painted on a page."""

    action, label = "region", "Vary (Region)"

    async def run(self, interaction: discord.Interaction[Any]) -> None:
        idx = self.idx
        assert idx is not None  # the template always holds a picture index
        job, made_in = await visible_job_where_made(interaction, self.job_id)
        await _stored_picture(interaction, job, idx)  # still there, its job still known
        offers = cast(HasRegionOffer, interaction.client).region_offer
        await offers.offer(interaction, job, idx, made_in)


class HasRegionOffer(Protocol):
    region_offer: RegionOffer


RESULT_BUTTONS = (
    RerollButton,
    PickButton,
    VaryButton,
    UpscaleButton,
    ExpandButton,
    CancelButton,
    RemixButton,
    DirectCopyButton,
    DeleteButton,
    RegionButton,
    FixFacesButton,
)


def single_view(
    job_id: str, idx: int, *, picked: bool = False, remakeable: bool = True
) -> discord.ui.View:
    """The buttons under one picture: its job's only one, or picture ``idx`` of a grid posted
    alone (``picked``: its 🔄 makes that picture again, not the grid). ``remakeable`` False
    (a fast upscale, ``is_fast_upscale``): no 🔄 nor Remix, which would enlarge the same
    picture again."""
    view = discord.ui.View(timeout=None)
    view.add_item(VaryButton(job_id, idx, "subtle", row=0))
    view.add_item(VaryButton(job_id, idx, "strong", row=0))
    view.add_item(UpscaleButton(job_id, idx, "2", row=0))
    view.add_item(UpscaleButton(job_id, idx, "4", row=0))
    if remakeable:
        view.add_item(RerollButton(job_id, idx if picked else None, row=0))
    for how in ("zoom2", "left", "right", "up", "down"):
        view.add_item(ExpandButton(job_id, idx, how, row=1))
    view.add_item(RegionButton(job_id, idx, row=2))
    view.add_item(FixFacesButton(job_id, idx, "fix", row=2))
    add_everyday_buttons(view, job_id, idx, remix=remakeable)
    return view


def add_everyday_buttons(
    view: discord.ui.View, job_id: str, idx: int | None, *, remix: bool = True
) -> None:
    """Remix (unless ``remix`` is False), DM me and Delete on row 2 (``idx``: one picture,
    None: the whole job)."""
    if remix:
        view.add_item(RemixButton(job_id, idx, row=2))
    view.add_item(DirectCopyButton(job_id, idx, row=2))
    view.add_item(DeleteButton(job_id, row=2))


def job_view(job_id: str, request: RenderRequest | None, image_count: int) -> discord.ui.View:
    """Single picture: Vary/Upscale/🔄, then Zoom Out and pans; several: U1-U4, V1-V4 and 🔄;
    then Remix, DM me and Delete. ``request``: the job's (None: not known), which tells a
    fast upscale (``single_view``)."""
    if image_count == 1:
        return single_view(job_id, 0, remakeable=request is None or not is_fast_upscale(request))
    view = discord.ui.View(timeout=None)
    for idx in range(image_count):
        view.add_item(PickButton(job_id, idx, row=0))
        view.add_item(VaryButton(job_id, idx, "v", row=1))
    view.add_item(RerollButton(job_id, row=2))
    add_everyday_buttons(view, job_id, None)
    return view
