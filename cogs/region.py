"""Vary (Region): repaint part of a result. The member says where in words (CLIPSeg makes the
mask, ``inference.segment``) or paints it on the bot's mask editor page (``bot.web``); either
way the mask goes into the inpaint /inpaint uses, as a job charged to the member.

The page's link is signed for one member, one picture, the server and channel of the click,
and expires; its page, picture and submit are checked again here as a click would be (the
job still in that server, the member still in it and able to see the channel; the submit: the
server's rules too). No age-restricted picture is shown on the page (a web page is age-gated by
nobody): Vary (Region) offers such a picture's region in words only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol, cast

import discord
from PIL import Image

from bot.edits import InpaintSettings, Picture, inpaint_request, input_path
from bot.history import StoredJob
from bot.images import decoded_upload
from bot.jobs.queue import JobQueue, QuotaExceeded
from bot.memo import Memo
from bot.policy.moderation import NsfwPolicy, kept_in_age_restricted_channels
from bot.policy.visibility import ThreadMembershipUnknown
from bot.refusals import quota_refused
from bot.requests import MAX_PROMPT_CHARS, check_prompt_length
from bot.services import Services
from bot.user_errors import Reason, UserError
from bot.web.links import DiscordDidNotAnswer, LinkRefused, RegionLink
from bot.web.server import Claim, RegionWebServer
from cogs.common import (
    Requester,
    admitted_submission,
    submit_from_interaction,
    submit_unless_stopped,
)
from cogs.contexts import NOT_ENABLED_HERE
from cogs.edit import write_file
from cogs.errors import refusal_of
from cogs.forms import ReportingModal
from cogs.results.buttons import (
    JobButton,
    check_still_shown,
    keeps_private,
    stored_picture,
    visible_job,
)
from cogs.visibility import (
    CHANNEL_CHECK_FAILED,
    DISCORD_FAILED,
    GuildChannelLike,
    HiddenFromEasel,
    check_member_may_act_here,
    guild_channel,
    is_age_restricted,
    is_age_restricted_picture,
    job_made_age_restricted,
    log_discord_failed,
    member_may_read,
    member_may_see,
    parent_unseen,
    thread_parent,
    why_member_may_not_act_in,
)
from cogs.withdrawals import check_posts_there
from inference.images import eight_bit
from inference.model_thread import AlreadyInLine, LineFull, ModelThread
from inference.segment import clipseg_dir, load_segmenter, missing_model_sentence, segment
from inference.types import RenderInputError, RenderRequest

MAX_REGION_CHARS = 200
# Members' regions in words waiting for CLIPSeg at once (one each; about a second each on a CPU).
MAX_WAITING_REGIONS = 4
# A link's page and its picture, loaded again within this long, use the member (and channel)
# Discord gave for the last load (a page reloaded asks Discord once); the submit asks anew.
# Kept for this many members (and channels) at most, those loaded last.
KEPT_FOR_PAGES_S = 5.0
KEPT_FOR_PAGES = 1_000
_GONE = "That picture is no longer in the history; make a new one with /imagine."
_DISCORD_FAILED = "Discord did not answer; submit again in a minute."
_OUT_OF_SIGHT = "You can no longer see the channel this picture was made in."
_EASEL_LOST_SIGHT = "Easel can no longer see the channel or thread this picture is in."
_EASEL_LEFT = "Easel is no longer in that server."
_AGE_UNANSWERED = (
    "Discord did not say whether the channel this picture was made in is age-restricted; "
    "click Vary (Region) again in a moment."
)
_KEPT_OFF_WEB_PAGES = (
    "This picture is kept in age-restricted channels, and a web page is age-gated by nobody, "
    "so the mask editor does not show it; click Vary (Region) again in Discord and describe "
    "the region in words."
)
# Vary (Region) without CLIPSeg installed (the operator's log says where it goes).
_NO_WORDS = "Describing a region in words is not installed on this bot; ask an admin to add it."
_NO_WORDS_NOR_PAGE = (
    "This picture is kept in age-restricted channels, and the mask editor is a web page "
    "age-gated by nobody, so it is not painted there. Describing the region in words is not "
    "installed on this bot; ask an admin to add it."
)
# The web page's words for the channel's rules of now refusing a link made there before.
_CLOSED_SINCE = (
    "Easel is no longer enabled where this picture was posted, so its editor is closed; use "
    "Easel in a channel where it is enabled."
)
STOPPED_IN_SERVER = (
    "You were banned, kicked or timed out in that server: Easel makes nothing for you there now."
)

log = logging.getLogger(__name__)


def _with_prompt(base: RenderRequest, prompt: str) -> RenderRequest:
    typed = prompt.strip()
    if not typed:
        return base
    check_prompt_length(typed, "the prompt")
    return dataclasses.replace(base, prompt=typed)


def _write_mask_of_words(models_dir: Path, picture: Path, words: str, path: Path) -> None:
    """On the segmenter's thread: the mask of ``picture`` CLIPSeg finds for ``words``."""
    mask = segment(models_dir, picture, words)
    path.parent.mkdir(parents=True, exist_ok=True)
    mask.save(path, format="PNG")


class RegionOffers:
    """What Vary (Region) offers and does; the composition root builds one per bot."""

    def __init__(
        self,
        client: discord.Client,
        queue: JobQueue,
        services: Services,
        models_dir: Path,
        serves_server: Callable[[int], bool],
    ) -> None:
        self._client = client
        # Whether Easel serves a server (``Settings.serves_server``): a link made before the
        # operator left its server out of EASEL_ALLOWED_SERVERS opens and submits nothing.
        self._serves_server = serves_server
        self._queue = queue
        self._services = services
        self._models_dir = models_dir
        self.web: RegionWebServer | None = None
        # CLIPSeg's own thread: a member waits there for their region in words, one place each.
        self._segmenter = ModelThread("easel-segment", MAX_WAITING_REGIONS)
        self._warming: Future[object] | None = None
        # The missing CLIPSeg's sentence last logged (``_check_words_installed``).
        self._missing_logged: str | None = None
        # The members and channels of links lately loaded (``_member``, ``_channel``): a few
        # seconds' answers, bounded.
        self._members_for_pages: Memo[tuple[int, int], discord.Member | None] = Memo(
            KEPT_FOR_PAGES, ttl_s=KEPT_FOR_PAGES_S
        )
        self._channels_for_pages: Memo[int, GuildChannelLike | None] = Memo(
            KEPT_FOR_PAGES, ttl_s=KEPT_FOR_PAGES_S
        )

    def close(self) -> None:
        self._segmenter.close()

    # Discord: the button and the modal.

    async def offer(
        self,
        interaction: discord.Interaction[Any],
        job: StoredJob,
        idx: int,
        made_in: GuildChannelLike | None,
    ) -> None:
        """Without the web page, or for a picture no web page shows (``_kept_off_web_pages``),
        the words modal at once; else a private choice of the two: words, or a link to the page
        made for this member alone. ``made_in``: the job's channel as the click's check found
        it outside discord.py's cache (an archived thread), or None."""
        if self.web is None:
            await self.ask_for_words(interaction, job.job_id, idx)
            return
        if await self._kept_off_web_pages(
            interaction.guild_id, await self._made_age_restricted(interaction, job, made_in)
        ):
            await self.ask_for_words(interaction, job.job_id, idx, kept_off_the_page=True)
            return
        token = self.web.signer.issue(
            job.job_id,
            idx,
            interaction.user.id,
            interaction.guild_id,
            interaction.channel_id,
            private=await keeps_private(interaction, job),
        )
        view = discord.ui.View(timeout=None)
        # Words are offered only where they work (CLIPSeg installed): the page alone is said
        # to take the keyboard too, as it does.
        in_words = missing_model_sentence(self._models_dir) is None
        if in_words:
            view.add_item(WordsButton(job.job_id, idx))
        view.add_item(discord.ui.Button(label="Paint the region", url=self.web.url_for(token)))
        how = (
            "describe it in words, or paint it on the page"
            if in_words
            else "paint it on the page, with a mouse, a finger or the keyboard"
        )
        await interaction.response.send_message(
            f"Say which part to repaint: {how} (the link is yours alone, works once and "
            "expires in 15 minutes).",
            view=view,
            ephemeral=True,
        )

    async def _made_age_restricted(
        self,
        interaction: discord.Interaction[Any],
        job: StoredJob,
        made_in: GuildChannelLike | None,
    ) -> bool:
        """The rule /show and DM copies follow (``made_age_restricted``): a job's channel the
        cache lacks (an archived thread) is asked of Discord unless ``made_in`` holds it; one
        Easel cannot see counts as age-restricted; while Discord does not answer, try again."""
        if interaction.guild_id is None:
            return False
        return await job_made_age_restricted(
            interaction,
            job.channel_id,
            restricted_when_made=job.age_restricted,
            fetched=made_in,
            asked_for=f"job {job.job_id}, Vary (Region)",
            unanswered=_AGE_UNANSWERED,
        )

    async def ask_for_words(
        self,
        interaction: discord.Interaction[Any],
        job_id: str,
        idx: int,
        *,
        kept_off_the_page: bool = False,
    ) -> None:
        """The words form, once CLIPSeg is installed (``_check_words_installed``)."""
        self._check_words_installed(kept_off_the_page=kept_off_the_page)
        self._warm_up()
        await interaction.response.send_modal(RegionModal(self, job_id, idx))

    def _check_words_installed(self, *, kept_off_the_page: bool = False) -> None:
        """Without CLIPSeg, a refusal that says why (``kept_off_the_page``: the picture's age
        rule kept the mask editor from it) and to ask an admin, while the log tells the
        operator where to install it (a path of theirs, never shown to a member): once while
        it stays missing, not at each click, which would bury other warnings."""
        missing = missing_model_sentence(self._models_dir)
        if missing is not None and missing != self._missing_logged:
            log.warning("Vary (Region) in words was refused: %s", missing)
        self._missing_logged = missing
        if missing is not None:
            raise UserError(_NO_WORDS_NOR_PAGE if kept_off_the_page else _NO_WORDS)

    def _warm_up(self) -> None:
        """Load CLIPSeg while the member types, on its thread, one load at a time (a broken
        model is met again, and reported, by the segmenting that follows)."""
        if self._warming is None or self._warming.done():
            directory = clipseg_dir(self._models_dir)
            self._warming = self._segmenter.start(load_segmenter, directory)

    async def submit_words(
        self, interaction: discord.Interaction[Any], job_id: str, idx: int, words: str, prompt: str
    ) -> None:
        """The mask is found (CLIPSeg) only once the job is admitted, the member's quota
        included, and the form acknowledged, on the segmenter's thread: a member waits there in
        one place of ``MAX_WAITING_REGIONS``, and one more form is refused at once."""
        self._check_words_installed()  # removed since the form opened
        job = await visible_job(interaction, job_id)
        private = await keeps_private(interaction, job)
        check_member_may_act_here(interaction, private=private)  # before segmenting spends CPU
        base, picture = await stored_picture(self._queue, self._services, job, idx)
        mask_path = input_path(self._services.inputs_dir)
        request = inpaint_request(
            _with_prompt(base, prompt),
            picture,
            Picture(mask_path, picture.width, picture.height),
            InpaintSettings(),
        )

        async def find_the_mask() -> None:
            found = (self._models_dir, picture.path, words.strip(), mask_path)
            try:
                await self._segmenter.run(_write_mask_of_words, *found)
            except RenderInputError as error:
                raise UserError(str(error)) from None

        journaled: list[None] = []  # once the job is: the mask is its own, whatever fails after
        try:
            with self._segmenter.place(interaction.user.id):
                await submit_from_interaction(
                    interaction,
                    "region",
                    request,
                    job,
                    private=private,
                    before_queueing=find_the_mask,
                    on_journaled=lambda: journaled.append(None),
                    input_size=picture.size,
                )
        except AlreadyInLine:
            raise UserError(
                "Your last region in words is still being found; submit the next one when it "
                "is queued."
            ) from None
        except LineFull:
            raise UserError(
                f"{MAX_WAITING_REGIONS} regions in words are being found already; try again in "
                "a minute."
            ) from None
        finally:
            if not journaled:
                await asyncio.to_thread(mask_path.unlink, missing_ok=True)

    # The web page (bot.web.server.RegionEditor).

    async def _linked_job(
        self, link: RegionLink, *, recently: bool
    ) -> tuple[StoredJob, int | None]:
        """The link's job, still in the server it was made in, its picture still stored and
        still shown (not withdrawn, no word banned since: the page shows it too), while Easel
        is still enabled in the link's channel (its rules of now, as a button there reads: a
        thread with its channel); with that thread's channel (None: not a thread).
        ``recently``: as ``_member``."""
        job = await self._services.history.job(link.job_id)
        if job is None or job.guild_id != link.guild_id or link.idx >= len(job.image_paths):
            raise LinkRefused(_GONE, Reason.INPUT)
        parent = await self._thread_parent(link, job, recently=recently)
        try:
            await self._services.guild_policy.check_channel(link.guild_id, link.channel_id, parent)
        except UserError:
            # Its words name Discord channels: the check's own are not shown on the page.
            raise LinkRefused(_CLOSED_SINCE, Reason.CHANNEL) from None
        if not await asyncio.to_thread(job.image_paths[link.idx].is_file):
            raise LinkRefused(_GONE, Reason.INPUT)
        try:
            await check_still_shown(self._services, job, link.user_id)
        except UserError as refused:
            raise LinkRefused(str(refused), refused.reason) from None
        return job, parent

    async def _thread_parent(
        self, link: RegionLink, job: StoredJob, *, recently: bool
    ) -> int | None:
        """The channel of the thread the link was made in: the job's, journaled at its submit,
        where the job was made there (Discord may not show Easel a private thread); else the
        link's channel as ``_member_may_act`` reads it next (``_channel``: a page asks Discord
        once for both). None: not a thread. A channel Discord hides from Easel is refused as
        Easel's sight lost (whether Easel is enabled there cannot be told), one of a server
        Easel is not in as such."""
        if link.guild_id is None or link.channel_id is None:
            return None
        if link.channel_id == job.channel_id and job.thread_parent_id is not None:
            return job.thread_parent_id
        guild = self._client.get_guild(link.guild_id)
        if guild is None:
            raise LinkRefused(_EASEL_LEFT, Reason.CHANNEL)
        return thread_parent(await self._channel(guild, link.channel_id, recently=recently))

    def _check_served(self, link: RegionLink) -> None:
        """Refused, in the words of a command there, where Easel no longer serves the link's
        server: before anything is checked, charged or recorded (a server left out keeps no
        refusals, as its commands' answers are not recorded)."""
        if link.guild_id is not None and not self._serves_server(link.guild_id):
            raise LinkRefused(NOT_ENABLED_HERE, Reason.CHANNEL)

    async def picture(self, link: RegionLink) -> Path:
        """The page and its picture ask of the member what the submit asks
        (``_member_may_act``), each time they are served: a link shows nothing to a member who
        left the server or lost the channel since it was made."""
        self._check_served(link)
        job, _ = await self._linked_job(link, recently=True)
        await self._member_may_act(link, job, recently=True)
        return job.image_paths[link.idx]

    async def submit(self, link: RegionLink, mask_png: bytes, prompt: str, claim: Claim) -> str:
        self._check_served(link)
        try:
            return await self._submit_painted(link, mask_png, prompt, claim)
        except Exception as error:  # the page shows a refusal; the server's dashboard keeps it
            refusal = refusal_of(error)
            if refusal is not None:
                sentence, reason = refusal
                await self._services.refusals.record(
                    link.guild_id, link.channel_id, link.user_id, reason, sentence
                )
            raise

    async def _submit_painted(
        self, link: RegionLink, mask_png: bytes, prompt: str, claim: Claim
    ) -> str:
        # The submit is new work, checked anew: the member is fetched after this moment, so a
        # stop heard before it is Discord's answer (gone, in a timeout) and one heard after it
        # is the record's (an old link of a kicked member who joined again works).
        began_at = time.time()
        job, thread_parent_id = await self._linked_job(link, recently=False)
        try:  # a deletion Easel did not hear (offline, a gateway gap): as a button's new job
            await check_posts_there(self._client, self._services, job)
        except UserError as refused:
            raise LinkRefused(str(refused), refused.reason) from None
        roles, is_admin, channel = await self._member_may_act(link, job)
        # Decoded once, off the loop: its sides are those of the mask written, turned by an EXIF
        # orientation (a PNG's after its pixels is read only by decoding).
        work = self._services.picture_work
        upload = await work.run(
            link.user_id, decoded_upload, "mask.png", mask_png, digest=False, as_png=True
        )
        assert upload.png is not None  # asked for
        if not await work.run(link.user_id, _anything_painted, upload.png):
            raise UserError("The mask is empty: paint over what should change, then Submit.")
        try:
            base, picture = await stored_picture(self._queue, self._services, job, link.idx)
        except UserError:
            raise LinkRefused(_GONE, Reason.INPUT) from None
        mask_path = input_path(self._services.inputs_dir)
        mask_picture = Picture(mask_path, upload.image.width, upload.image.height)
        request = inpaint_request(
            _with_prompt(base, prompt), picture, mask_picture, InpaintSettings()
        )
        requester = Requester(
            link.user_id,
            link.guild_id,
            link.channel_id,
            roles,
            is_admin,
            is_age_restricted(channel),
            thread_parent_id=thread_parent_id,
            # Discord hides such a channel's flag from Easel: counted as age-restricted.
            parent_unseen=parent_unseen(channel),
        )
        submission = await admitted_submission(
            self._services,
            "region",
            request,
            requester,
            parent_job_id=link.job_id,
            private=link.private,
            input_size=picture.size,
        )
        refusal = await self._queue.quota_refusal(submission)
        if refusal is not None:
            raise quota_refused(refusal)
        await asyncio.to_thread(write_file, mask_path, upload.png)
        job_id = None
        try:
            claim()
            job_id = await submit_unless_stopped(
                self._services, self._queue, submission, began_at=began_at
            )
        except QuotaExceeded as refused:  # another job of the member's was admitted meanwhile
            raise quota_refused(refused) from None
        finally:
            if job_id is None:
                await asyncio.to_thread(mask_path.unlink, missing_ok=True)
        if job_id is None:  # banned, kicked or timed out since the member was fetched
            raise LinkRefused(STOPPED_IN_SERVER, Reason.PERMISSION)
        where = "in your direct messages" if link.private else "in the channel"
        return f"Queued as job {job_id}; the result will be posted {where} in Discord."

    async def _member(
        self, guild: discord.Guild, user_id: int, *, recently: bool
    ) -> discord.Member:
        """The member as Discord says now, or (``recently``: a page or picture load) as it
        said within ``KEPT_FOR_PAGES_S``: a page reloaded, or its picture loaded with
        it, asks Discord once."""

        async def fetched() -> discord.Member | None:
            try:
                return await guild.fetch_member(user_id)
            except discord.NotFound:
                return None

        try:
            if recently:
                member = await self._members_for_pages.get((guild.id, user_id), fetched)
            else:
                member = await fetched()
        except DISCORD_FAILED as failed:
            log_discord_failed(f"whether member {user_id} is in server {guild.id}", failed)
            raise DiscordDidNotAnswer(_DISCORD_FAILED) from None
        if member is None:
            raise LinkRefused("You are no longer a member of that server.", Reason.PERMISSION)
        return member

    async def _channel(
        self, guild: discord.Guild, channel_id: int | None, *, recently: bool
    ) -> GuildChannelLike | None:
        """The server's channel (an archived thread asked of Discord: ``guild_channel``);
        ``recently``: as ``_member``."""
        if channel_id is None:
            return None

        async def found() -> GuildChannelLike | None:
            channel, _ = await guild_channel(self._client, guild, guild.id, channel_id)
            return channel

        try:
            if recently:
                return await self._channels_for_pages.get(channel_id, found)
            return await found()
        except CHANNEL_CHECK_FAILED as failed:
            log_discord_failed(f"what channel {channel_id} is (a Vary (Region) link)", failed)
            raise DiscordDidNotAnswer(_DISCORD_FAILED) from None
        except HiddenFromEasel:
            raise LinkRefused(_EASEL_LOST_SIGHT, Reason.CHANNEL) from None

    async def _member_may_act(
        self, link: RegionLink, job: StoredJob, *, recently: bool = False
    ) -> tuple[tuple[int, ...], bool, GuildChannelLike | None]:
        """The member's roles, admin power and the link's channel as it is now; refused
        when they left the server or the channel is out of their sight (another's job: when
        they can no longer read it), as a click there would be
        (``cogs.visibility.check_member_may_read_channel``), and while Discord fails. A link
        offered from a copy of the buttons in another channel also needs the job's own channel
        still readable, the maker's included, as the click did. A picture no web page shows
        (``_kept_off_web_pages``: a channel's flag set since the click) is refused. A channel
        the cache lacks (an archived thread) is asked of Discord; ``recently``: the member
        as Discord said a moment ago will do (``_member``)."""
        if link.guild_id is None:
            return (), False, None
        guild = self._client.get_guild(link.guild_id)
        if guild is None:
            raise LinkRefused(_EASEL_LEFT, Reason.CHANNEL)
        member = await self._member(guild, link.user_id, recently=recently)
        channel = await self._channel(guild, link.channel_id, recently=recently)
        recent = self._services.thread_members
        may_act = member_may_see if job.user_id == link.user_id else member_may_read
        # Discord refusing Easel a private thread (Easel was taken out of it) is Easel's sight
        # lost, not the member's: the page says so.
        try:
            if channel is None or not await may_act(channel, member, recent):
                raise LinkRefused(_OUT_OF_SIGHT, Reason.PERMISSION)
            # A timeout, or a public result where they may not post one, as a click would be.
            refusal = why_member_may_not_act_in(channel, member, private=link.private)
            if refusal is not None:
                raise LinkRefused(refusal, Reason.PERMISSION)
            made_in: object = channel
            if job.channel_id is not None and job.channel_id != link.channel_id:
                made_in = await self._channel(guild, job.channel_id, recently=recently)
                if made_in is None or not await member_may_read(made_in, member, recent):
                    raise LinkRefused(_OUT_OF_SIGHT, Reason.PERMISSION)
        except HiddenFromEasel:
            raise LinkRefused(_EASEL_LOST_SIGHT, Reason.CHANNEL) from None
        except ThreadMembershipUnknown as unknown:  # Discord's failure: the page says try again
            raise DiscordDidNotAnswer(str(unknown)) from None
        made_restricted = is_age_restricted_picture(
            made_in, restricted_when_made=job.age_restricted
        )
        if await self._kept_off_web_pages(link.guild_id, made_restricted):  # a flag set since
            raise LinkRefused(_KEPT_OFF_WEB_PAGES, Reason.NSFW)
        permissions = member.guild_permissions
        roles = tuple(role.id for role in member.roles if role.id != guild.id)
        is_admin = permissions.manage_guild or permissions.administrator
        return roles, is_admin, channel

    async def _kept_off_web_pages(self, guild_id: int | None, made_restricted: bool) -> bool:
        """The dashboard's rule (docs/security.md, "No age-restricted picture on the
        dashboard"): a web page is age-gated by nobody, so a picture kept in age-restricted
        channels (``made_restricted``: made in one, or its channel one now, one Easel no longer
        sees counting as one; or the server renders only in those) is never on the mask
        editor's page."""
        if guild_id is None:
            return False
        settings = await self._services.guild_policy.settings(guild_id)
        return kept_in_age_restricted_channels(
            made_age_restricted=made_restricted, nsfw_policy=NsfwPolicy(settings.nsfw_policy)
        )


def _anything_painted(png: bytes) -> bool:
    with Image.open(io.BytesIO(png)) as mask:
        return eight_bit(mask).convert("L").getbbox() is not None


class _HasRegionOffers(Protocol):
    region_offer: RegionOffers


class RegionModal(ReportingModal):
    def __init__(self, offers: RegionOffers, job_id: str, idx: int) -> None:
        super().__init__("region", title="Vary (Region)")
        self._offers = offers
        self.job_id = job_id
        self.idx = idx
        self.region = discord.ui.TextInput[RegionModal](
            label="What to repaint (e.g. the sky)", max_length=MAX_REGION_CHARS
        )
        self.prompt = discord.ui.TextInput[RegionModal](
            label="New prompt (optional)",
            style=discord.TextStyle.paragraph,
            required=False,
            max_length=MAX_PROMPT_CHARS,
        )
        self.add_item(self.region)
        self.add_item(self.prompt)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        await self._offers.submit_words(
            interaction, self.job_id, self.idx, self.region.value, self.prompt.value
        )


class WordsButton(
    JobButton,
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=r"easel:region-words:(?P<job_id>[0-9a-f]{16}):(?P<idx>[0-3])",
):
    """Under the Vary (Region) choice: opens the words modal."""

    action, label = "region-words", "Describe it in words"
    style = discord.ButtonStyle.primary

    async def run(self, interaction: discord.Interaction[Any]) -> None:
        idx = self.idx
        assert idx is not None  # the template always holds a picture index
        await visible_job(interaction, self.job_id)
        offers = cast(_HasRegionOffers, interaction.client).region_offer
        await offers.ask_for_words(interaction, self.job_id, idx)
