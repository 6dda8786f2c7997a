"""/history (paged, searchable), /show (re-post a job with live buttons), /forget-me."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Self

import discord
from discord import app_commands
from discord.ext import commands

from bot.alt_text import picture_description, result_description
from bot.compare_grid import comparison_png
from bot.cooldowns import MemberCooldown
from bot.history import (
    Erasure,
    Forgotten,
    History,
    HistoryPage,
    PageAnchor,
    PostedMessage,
    ReplyToken,
    StoredJob,
    post_delete_retry_days,
)
from bot.images import decoded
from bot.policy.moderation import NsfwPolicy, check_repost
from bot.user_errors import Reason, UserError
from cogs.common import (
    ORIGINAL_RESPONSE,
    client_of,
    defer_thinking,
    page_turn_button,
    page_turns,
    queue_of,
    services_of,
    turned_label,
)
from cogs.contexts import FORGET_ME, FORGET_ME_CONFIRM
from cogs.errors import report_error
from cogs.forms import mark_taken, untaken_custom_id
from cogs.job_lines import history_line_text
from cogs.lists import MAX_SEARCH_CHARS
from cogs.results.buttons import (
    THREAD_ARCHIVED,
    check_still_shown,
    copy_caption,
    copy_view,
    deleted_picture_read,
    job_view,
    keeps_private,
    link_post_again,
    spoilered,
)
from cogs.results.copies import in_direct_messages
from cogs.results.fitted import SHOWN_AS_PREVIEW, fitted_file
from cogs.results.progress import INTERACTION_TOKEN_LIFETIME_S, interaction_webhook
from cogs.visibility import (
    DISCORD_FAILED,
    check_enabled_here,
    check_member_may_act_here,
    check_member_may_read_channel,
    is_age_restricted,
    job_made_age_restricted,
)
from cogs.withdrawals import check_posts_there
from cogs.wording import counted
from inference.compare import is_comparison

# Discord wants /show's first answer within 3 s: its checks before that (the stored pictures'
# banned-word read, up to 2 s, and the channel the job was made in, asked of Discord up to 1 s
# a time) share this much, the rest is the defer's own call.
SHOW_CHECKS_BUDGET_S = 2.5
# What /show's checks wait on, in turn, for the log when they run past SHOW_CHECKS_BUDGET_S, and
# the refusal's reason: none is the member's doing. Discord's (not kept as their refusal on the
# dashboard: ``Reason.DISCORD``) where Discord was waited on, even in part; Easel's own database
# and stored banned-word check: ``Reason.BUSY`` (kept, and shown as not the member's doing).
_WAITING_ON_WORDS = ("the stored pictures' banned-word check (the database)", Reason.BUSY)
_WAITING_ON_CHANNEL = ("Discord (the channel the job was made in)", Reason.DISCORD)
_WAITING_ON_SETTINGS = ("the database (the member's and the server's settings)", Reason.BUSY)
_WAITING_ON_HERE = ("Discord or the database (whether it may be shown here)", Reason.DISCORD)
# /show's refusal once the member can no longer read the channel the job was made in: its
# pictures and prompt are that channel's, not posted again elsewhere. A thread archived since
# (out of discord.py's cache) is asked of Discord, and read by its parent's permissions.
LOST_THE_CHANNEL = (
    "Job `{}` was made in a channel or thread you can no longer read, so /show does not post "
    "it again."
)
# /show's refusal once Discord hides that channel from Easel itself (``HiddenFromEasel``).
EASEL_LOST_THE_CHANNEL = (
    "Easel can no longer see the channel or thread job `{}` was made in, so /show does not "
    "post it again; once Easel is added to that thread (or may view that channel), /show "
    "brings it back."
)

log = logging.getLogger(__name__)


def render_page(page: HistoryPage, search: str | None) -> str:
    if not page.lines:
        if search:
            return f"None of your jobs mention {search!r}; try a shorter search."
        return "You have no jobs yet; try `/imagine`."
    header = f"**Your jobs** — page {page.page + 1}/{page.page_count} ({page.total} in all)"
    if search:
        header += f", matching {search!r}"
    lines = [header, *(history_line_text(line) for line in page.lines)]
    lines.append("Use `/show job_id` to post one again.")
    return "\n".join(lines)


def pager(page: HistoryPage, search: str | None) -> discord.ui.View | None:
    """◀ ▶ under a /history reply of several pages, each turning from this page's edge."""
    if not page.lines:  # no edge to turn from (one page, empty)
        return None

    def button(to: int, label: str, disabled: bool) -> HistoryPageButton:
        older = to > page.page
        edge = page.lines[-1 if older else 0].job_id
        return HistoryPageButton(to, search or "", label, PageAnchor(edge, older), disabled)

    return page_turns(page.page, page.page_count, button)


# Which way a page turn reads from its anchor job, in its custom id.
_OLDER, _NEWER = ">", "<"


class HistoryPageButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    # A button posted before the anchor (a page number alone) still turns, by number.
    template=r"easel:history:(?P<page>-?\d+):(?:(?P<way>[<>])(?P<anchor>[0-9a-f]{16}):)?"
    r"(?P<search>.*)",
):
    """◀ / ▶ under a /history reply, searched as before; after any time or a restart too:
    its custom id carries the page, the job it turns from and which way (``PageAnchor``),
    and the search (at most 89 of Discord's 100 characters: 50 of them the search's).
    A page of the clicker's own jobs in the server clicked in: what /history shows them, so
    no click shows anyone another member's jobs (the reply is ephemeral besides)."""

    def __init__(
        self,
        page: int,
        search: str,
        label: str,
        anchor: PageAnchor | None,
        disabled: bool = False,
    ) -> None:
        turn = "" if anchor is None else f"{_OLDER if anchor.older else _NEWER}{anchor.job_id}:"
        custom_id = f"easel:history:{page}:{turn}{search}"
        super().__init__(page_turn_button(custom_id, label, disabled))
        self.page, self.search, self.anchor = page, search, anchor

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: Any
    ) -> Self:
        way = match["way"]
        anchor = None if way is None else PageAnchor(match["anchor"], way == _OLDER)
        return cls(int(match["page"]), match["search"], turned_label(item), anchor)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            search = self.search or None
            page = await services_of(interaction).history.page(
                interaction.user.id,
                self.page,
                search,
                guild_id=interaction.guild_id,
                next_to=self.anchor,
            )
            await interaction.response.edit_message(
                content=render_page(page, search), view=pager(page, search)
            )
        except Exception as error:
            await report_error(interaction, error, "history pager")


async def check_may_show_here(
    interaction: discord.Interaction[Any], job: StoredJob, made_in: object | None = None
) -> None:
    """/show works where Easel is enabled, and a picture shown in a server keeps the age
    restriction it was made under, even shown privately: the age gate is the channel's, and
    a member shown it privately in an ordinary channel has not passed one. ``made_in``: the
    job's channel when an earlier check asked Discord for it (not asked again)."""
    policy = services_of(interaction).guild_policy
    await check_enabled_here(interaction)
    if interaction.guild_id is None:
        return
    # The rule DM copies follow (``made_age_restricted``): a channel the cache lacks (an
    # archived thread) is asked of Discord, one Easel cannot see counts as age-restricted.
    made_restricted = await job_made_age_restricted(
        interaction,
        job.channel_id,
        restricted_when_made=job.age_restricted,
        fetched=made_in,
        asked_for=f"job {job.job_id}, /show",
        unanswered=(
            f"Discord did not say whether the channel job `{job.job_id}` was made in is "
            "age-restricted; try /show again in a moment."
        ),
        hidden=EASEL_LOST_THE_CHANNEL.format(job.job_id),
    )
    settings = await policy.settings(interaction.guild_id)
    check_repost(
        made_age_restricted=made_restricted,
        here_age_restricted=is_age_restricted(interaction.channel),
        nsfw_policy=NsfwPolicy(settings.nsfw_policy),
    )


async def checked_for_showing(
    interaction: discord.Interaction[Any], job: StoredJob
) -> tuple[bool, bool]:
    """Whether /show posts ``job``'s pictures privately, and behind a spoiler, once they may
    still be shown (``check_still_shown``), to this member (the channel it was made in still
    theirs to read, as its buttons ask: ``check_member_may_read_channel``) and here
    (``check_may_show_here``): all answered within ``SHOW_CHECKS_BUDGET_S``, past it a
    refusal to try again."""
    budget = asyncio.timeout(SHOW_CHECKS_BUDGET_S)
    waiting_on = _WAITING_ON_WORDS
    try:
        async with budget:
            await check_still_shown(services_of(interaction), job, interaction.user.id)
            waiting_on = _WAITING_ON_CHANNEL
            made_in = None
            # As its buttons: not once they lost its channel. Shown in that channel, the
            # member is there now (Discord takes a command only where they see), and
            # ``check_may_show_here`` keeps its age restriction.
            if job.channel_id not in (None, interaction.channel_id):
                made_in = await check_member_may_read_channel(
                    interaction,
                    job.channel_id,
                    made_by_clicker=True,
                    restricted_when_made=job.age_restricted,
                    refusal=LOST_THE_CHANNEL.format(job.job_id),
                    hidden_refusal=EASEL_LOST_THE_CHANNEL.format(job.job_id),
                )
            waiting_on = _WAITING_ON_SETTINGS
            private = await keeps_private(interaction, job)
            check_member_may_act_here(interaction, private=private)  # posted for them
            spoiler = await spoilered(interaction, job)
            waiting_on = _WAITING_ON_HERE
            await check_may_show_here(interaction, job, made_in)
    except TimeoutError:
        if not budget.expired():
            raise
        what, reason = waiting_on
        log.warning(
            "/show of job %s: its checks ran past %s s waiting on %s",
            job.job_id,
            SHOW_CHECKS_BUDGET_S,
            what,
        )
        raise UserError(
            f"Checking whether job `{job.job_id}` may be shown here took too long; try /show "
            "again in a moment.",
            reason,
        ) from None
    return private, spoiler


# Why a post stays after /forget-me's delete, in the words its answer uses.
ARCHIVED_THREAD = "in an archived thread"
UNREACHABLE = "in a channel Easel cannot reach"
STOPPED = "not deleted before the bot stopped"
# The posts whose delete is due again (``History.post_delete_failed``) are tried this often.
PENDING_POSTS_SWEEP_S = 15 * 60.0
# A /forget-me request a failure left (its own run's, or a retry's) is tried again after the
# first wait, then after each wait doubled up to the last, until it is finished: a member who
# asked to be forgotten is not kept waiting for the sweep above.
ERASURE_RETRY_WAITS_S = (5.0, 120.0)
# What a member whose /forget-me failed part way is told after the error's reference: its
# retry (``ERASURE_RETRY_WAITS_S``) finishes it, and its answer replaces this one.
ERASE_RETRIED = (
    "what is left of your erase is finished shortly, and you are told here, or by direct "
    "message where they are open, when it is; no need to run /forget-me again."
)
# /forget-me's erase reads and rewrites all the member's jobs, files and ledger rows: a member
# runs it once per this long (kept in memory: a restart forgets when they last ran it).
FORGET_ME_COOLDOWN_S = 15 * 60.0
# /forget-me asks first; its button works this long, then the question expires.
FORGET_ME_CONFIRM_S = 180.0
ERASE_EVERYTHING = "Erase everything"
FORGET_ME_ASK = (
    "**Erase all your Easel data?** In every server and in DMs: your jobs, pictures, uploads, "
    "settings and presets, and Easel's posts of them in channels; your quota records are "
    "anonymised. This cannot be undone. What stays (a record that you asked, others' "
    "variations of your pictures…) is listed in `/help topic:privacy`. "
    f"Press **{ERASE_EVERYTHING}** within {FORGET_ME_CONFIRM_S / 60:.0f} minutes to go ahead; "
    "anything else keeps everything."
)
FORGET_ME_EXPIRED = "/forget-me expired: nothing was erased. Run it again to erase your data."
FORGET_ME_PRESSED = f"**{ERASE_EVERYTHING}** was pressed: the answer below says what was erased."
FORGET_ME_REFUSED = (
    f"**{ERASE_EVERYTHING}** was pressed but refused, so nothing was erased: the answer below "
    "says why."
)
FORGET_ME_PRESS_FAILED = f"**{ERASE_EVERYTHING}** was pressed: the answer below says what happened."
# A press that no live question took: asked before Easel restarted, or pressed as the question
# expired or after its one press (``HistoryCog.answer_stray_erase_press``).
FORGET_ME_NO_LONGER_OPEN = (
    "This /forget-me question is no longer open (it expired, was already pressed, or Easel "
    "restarted since): this press erased nothing. Run /forget-me again to erase your data."
)


class _EraseButton(discord.ui.Button["_EraseConfirmation"]):
    """/forget-me's confirmation's button; its custom_id lets it pass in a server left off
    EASEL_ALLOWED_SERVERS, as /forget-me does (``cogs.contexts``)."""

    def __init__(self, custom_id: str) -> None:
        super().__init__(
            label=ERASE_EVERYTHING, style=discord.ButtonStyle.danger, custom_id=custom_id
        )

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        assert self.view is not None  # added to its view at once
        await self.view.confirmed(interaction)


class _EraseConfirmation(discord.ui.View):
    """/forget-me's question: its one button runs ``erase`` for the member who asked, until
    it expires (a restart forgets it: the member runs /forget-me again)."""

    def __init__(
        self,
        asked: discord.Interaction[Any],
        erase: Callable[[discord.Interaction[Any]], Awaitable[None]],
    ) -> None:
        super().__init__(timeout=FORGET_ME_CONFIRM_S)
        self._asked = asked
        self._erase = erase
        self.add_item(_EraseButton(f"{FORGET_ME_CONFIRM}{asked.id}"))

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        # In the press's task's first step: ``answer_stray_erase_press`` leaves it alone.
        mark_taken(interaction)
        return True

    async def confirmed(self, pressed: discord.Interaction[Any]) -> None:
        try:
            if pressed.user.id != self._asked.user.id:  # private: never, unless forged
                raise UserError("Only the member who ran this /forget-me may confirm it.")
            self.stop()
            await self._erase_once(pressed)
        except Exception as error:
            await report_error(pressed, error, f"/{FORGET_ME}")

    async def _erase_once(self, pressed: discord.Interaction[Any]) -> None:
        """The erase; then the question, its button gone (one press erases), says what came
        of the press."""
        try:
            await self._erase(pressed)
        except UserError:
            await self._tell_asked(FORGET_ME_REFUSED)
            raise
        except BaseException:
            await self._tell_asked(FORGET_ME_PRESS_FAILED)
            raise
        await self._tell_asked(FORGET_ME_PRESSED)

    async def on_timeout(self) -> None:
        await self._tell_asked(FORGET_ME_EXPIRED)

    async def _tell_asked(self, text: str) -> None:
        with contextlib.suppress(*DISCORD_FAILED):
            await self._asked.edit_original_response(content=text, view=None)


@dataclass(frozen=True)
class PostsOutcome:
    """How /forget-me's deletes of a member's posts ended: how many were asked, and why
    those that stay stay (reason: how many)."""

    asked: int
    kept: Counter[str]

    @property
    def removed(self) -> int:
        return self.asked - self.kept.total()


def outcome_text(outcome: PostsOutcome) -> str:
    """The line /forget-me's answer gets once its deletes ended. Those that stay are tried
    again (the first failure is never the last: ``bot.history.POST_DELETE_TRIES``)."""
    asked = counted(outcome.asked, "posted message")
    text = f"Removed {outcome.removed} of {asked} from channels."
    if not outcome.kept:
        return text
    reasons = ", ".join(f"{count} {why}" for why, count in outcome.kept.most_common())
    left = outcome.kept.total()
    stay, them = ("stays", "it") if left == 1 else ("stay", "them")
    return (
        f"{text} {left} {stay} for now ({reasons}): Easel tries again over the next "
        f"{post_delete_retry_days()} days; a moderator of that server can delete {them} sooner."
    )


def forgotten_text(forgotten: Forgotten) -> str:
    """What a /forget-me request erased, in all its runs, from "erased" on."""
    posts = (
        f" Removing {counted(forgotten.all_posts, 'posted message')} from channels…"
        if forgotten.all_posts
        else ""
    )
    anonymised = (
        " Your older quota use no longer carries your id (the server keeps the amounts)."
        if forgotten.ledger_rows_anonymised
        else ""
    )
    # "too" only after the sentence above: alone, it would point at nothing.
    too = " too" if anonymised else ""
    deferred = (
        " What still counts towards your current limits keeps your id until those periods "
        f"end, <t:{int(forgotten.deferred_until)}:f>, then loses it{too}."
        if forgotten.ledger_rows_deferred
        else ""
    )
    broker = (
        " The render broker could not be reached: its copies of your jobs expire within 24 hours."
        if forgotten.broker_copies_left
        else ""
    )
    return (
        f"erased {counted(forgotten.jobs, 'job')}, "
        f"{counted(forgotten.pictures, 'stored picture')}, "
        f"{counted(forgotten.uploads, 'uploaded picture')} and your settings."
        f"{posts}{anonymised}{deferred}{broker} Copies sent to you by direct message stay: "
        "delete those there. Copies other members asked for with DM me go with your posts."
    )


def erasure_retry_wait_s(failures: int) -> float:
    """The wait before a failed /forget-me request's next try, after ``failures`` in a row."""
    first, longest = ERASURE_RETRY_WAITS_S
    return min(first * 2.0 ** max(failures - 1, 0), longest)


async def finish_erasures(
    client: discord.Client, history: History, *, with_traceback: bool = True
) -> bool:
    """The /forget-me requests a stop or a failed run left, but for those being erased or
    answered now: each erased to the end (what its member made up to when they asked), then
    its member told, where they asked while the interaction's token lives, else by direct
    message, else (closed) in the log alone; then it is done, before any other run of theirs
    (a rerun asked meanwhile answers for it instead). One that fails is logged (its traceback
    ``with_traceback``, else one line), left for the next try. Whether all were finished."""
    finished = True
    for erasure in await history.unfinished_erasures():
        try:
            # None: told meanwhile, or asked again: that run answers.
            await history.resume(erasure, functools.partial(_tell_finished, client, erasure))
        except Exception as error:
            finished = False
            # Naming no one: this line outlives the erase.
            _log_failure("finishing an interrupted request failed", error, with_traceback)
    return finished


def _log_failure(what: str, error: Exception, with_traceback: bool) -> None:
    """A /forget-me retry's failure: an error with its traceback the first time in a row of
    failures, then a one-line warning each time it fails again."""
    if with_traceback:
        log.error("/forget-me: %s", what, exc_info=error)
    else:
        log.warning("/forget-me: %s again (%s)", what, type(error).__name__)


async def _tell_finished(client: discord.Client, erasure: Erasure, forgotten: Forgotten) -> None:
    text = (
        f"Your /forget-me of <t:{int(erasure.asked_at)}:f> was interrupted (Easel stopped or "
        f"failed); it is finished now: {forgotten_text(forgotten)}"
    )
    reply = erasure.reply
    if reply is not None and time.time() - erasure.asked_at < INTERACTION_TOKEN_LIFETIME_S:
        webhook = interaction_webhook(client, reply.application_id, reply.token)
        try:
            # The deferred answer ("thinking…"), private as it was deferred.
            await webhook.edit_message(ORIGINAL_RESPONSE, content=text)
            return
        except DISCORD_FAILED as error:  # the token went: by direct message instead
            log.info(
                "/forget-me: the interrupted answer could not be sent (%s)", type(error).__name__
            )
    await _tell_by_direct_message(client, erasure.user_id, text)


async def _tell_by_direct_message(
    client: discord.Client, user_id: int, text: str
) -> discord.Message | None:
    """A finished /forget-me's answer, where the interaction cannot take it; None (logged,
    naming no one) where the member cannot be reached: the erase is done all the same."""
    try:
        sent = await in_direct_messages(client, user_id, lambda dm: dm.send(text))
    except DISCORD_FAILED as error:  # an account deleted meanwhile
        log.warning(
            "/forget-me: a request is finished; its member could not be told (%s)",
            type(error).__name__,
        )
        return None
    if sent is None:
        log.warning("/forget-me: a request is finished; its member's DMs are closed")
    return sent


async def _direct_messages_of(member: discord.User | discord.Member) -> int | None:
    """The member's direct messages with Easel, whose copies by DM their /forget-me no longer
    records (``History.forget``); None where Discord does not tell it now (logged: those
    records stay, naming no one but that channel)."""
    if member.dm_channel is not None:
        return member.dm_channel.id
    try:
        return (await member.create_dm()).id
    except DISCORD_FAILED as error:
        log.warning(
            "/forget-me: the member's direct messages were not found (%s); the records of "
            "copies sent there stay",
            type(error).__name__,
        )
        return None


async def delete_posts(
    client: discord.Client, posts: Sequence[PostedMessage], history: History
) -> PostsOutcome:
    """Delete Easel's posts of a forgotten member's jobs, one call each, without reading them
    first (discord.py waits out rate limits). One already gone is done; once Discord refuses
    one (Easel can no longer see the channel, or the thread is archived: never unarchived
    for this), the rest of that channel are not asked this time. Each post deleted or gone is
    settled (``History.post_delete_settled``); each refused or failed is tried again later
    or, at its last try, given up (``History.post_delete_failed``); one a stop kept is tried
    at the next start. Logged by count and reason, naming nobody."""
    kept: Counter[str] = Counter()  # why posts stay: how many
    refused_channels: dict[int, str] = {}  # channel: why Discord refuses its deletes
    handled = 0
    try:
        for post in posts:
            why = await _why_kept(client, post, refused_channels)
            handled += 1
            if why is None:
                await history.post_delete_settled(post)
            else:
                kept[why] += 1
                await history.post_delete_failed(post)
    except asyncio.CancelledError:  # the bot stops: what is not deleted yet stays
        kept[STOPPED] += len(posts) - handled
        raise
    finally:
        if kept:
            _log_kept(len(posts), kept)
    return PostsOutcome(len(posts), kept)


async def _delete_and_tell(
    client: discord.Client,
    history: History,
    posts: Sequence[PostedMessage],
    tell: Callable[[str], Awaitable[object]],
) -> None:
    outcome = await delete_posts(client, posts, history)
    try:
        await tell(outcome_text(outcome))
    except DISCORD_FAILED as error:  # the member is not told; the log has the counts
        log.warning("/forget-me: its answer could not be updated (%s)", type(error).__name__)


async def _delete_pending(
    client: discord.Client, history: History, in_flight: Collection[int]
) -> None:
    """The deletes due again (no member to tell: their interactions are gone), but those of
    ``in_flight`` (message ids a /forget-me is deleting now), logged."""
    posts = [
        post for post in await history.pending_post_deletes() if post.message_id not in in_flight
    ]
    if posts:
        # Left by an erase, or by a moderator's withdrawal (its jobs' other posts).
        log.info("posts left to delete: deleting %d posted message(s)", len(posts))
        outcome = await delete_posts(client, posts, history)
        log.info("posts left to delete: removed %d of %d", outcome.removed, len(posts))


def _log_kept(asked: int, kept: Counter[str]) -> None:
    reasons = ", ".join(f"{count}: {why}" for why, count in kept.items())
    # Neutral: an erase's deletes, or a moderator's withdrawal's (the sweep), alike.
    log.warning(
        "posts to delete: %d of %d posted message(s) stay (%s)", kept.total(), asked, reasons
    )


async def _why_kept(
    client: discord.Client, post: PostedMessage, refused_channels: dict[int, str]
) -> str | None:
    """Delete ``post``; None once it is gone, else why it stays (a refusing channel is
    added to ``refused_channels`` and not asked again)."""
    if (refused := refused_channels.get(post.channel_id)) is not None:
        return refused
    channel = client.get_partial_messageable(post.channel_id)
    try:
        await channel.get_partial_message(post.message_id).delete()
    except discord.NotFound:  # deleted already, or its channel
        return None
    except DISCORD_FAILED as error:
        if isinstance(error, discord.Forbidden):
            why = UNREACHABLE
        elif isinstance(error, discord.HTTPException) and error.code == THREAD_ARCHIVED:
            why = ARCHIVED_THREAD
        else:
            return f"Discord failed to delete ({type(error).__name__})"
        refused_channels[post.channel_id] = why
        return why
    return None


class HistoryCog(commands.Cog):
    def __init__(self, history: History, *, pending_sweep_s: float = PENDING_POSTS_SWEEP_S) -> None:
        self._history = history
        self._pending_sweep_s = pending_sweep_s
        # /forget-me's deletes of posts, going on after its answer until done or the bot stops,
        # and the sweep of those left to try again (``resume_forget_me``).
        self._deletes: set[asyncio.Task[None]] = set()
        # Message ids a /forget-me is deleting now: the sweep leaves them to it.
        self._in_flight: set[int] = set()
        self._unloaded = False  # the bot stops: no new deletes (its HTTP session closes)
        self._forget_me_cooldown = MemberCooldown(FORGET_ME_COOLDOWN_S)
        # Set when a member's /forget-me failed part way: the sweep tries it again now; also
        # when a moderator's withdrawal left posts to delete (``delete_pending_now``).
        self._sweep_now = asyncio.Event()

    def delete_posts_later(
        self,
        client: discord.Client,
        posts: Sequence[PostedMessage],
        tell: Callable[[str], Awaitable[object]],
    ) -> None:
        """``delete_posts`` in the background, however long they take; ``tell`` then gets
        the outcome's line (``outcome_text``)."""
        if self._unloaded:  # a /forget-me that ended while the bot stops
            _log_kept(len(posts), Counter({STOPPED: len(posts)}))
            return
        message_ids = {post.message_id for post in posts}
        self._in_flight |= message_ids
        task = self._in_background(_delete_and_tell(client, self._history, posts, tell))
        task.add_done_callback(lambda _: self._in_flight.difference_update(message_ids))

    def delete_pending_now(self) -> None:
        """A moderator's withdrawal left its jobs' other posts and copies by DM to delete
        (``History.posts_left_to_delete``): the sweep deletes them now, and those refused or
        failed later, under its rules (``History.post_delete_failed``)."""
        self._sweep_now.set()

    def resume_forget_me(self, client: discord.Client) -> None:
        """From start-up until the bot stops, in the background: the /forget-me requests the
        last stop left (``finish_erasures``), the deletes of posts it left, then every
        ``pending_sweep_s`` those due again (read there too, so that the bot's readiness waits
        for none of it). A /forget-me that failed part way is tried again at once, and while
        one is left unfinished the sweep comes after ``ERASURE_RETRY_WAITS_S``'s backoff."""
        self._in_background(self._sweep_pending(client))

    async def _sweep_pending(self, client: discord.Client) -> None:
        failures = 0  # sweeps in a row that left a request unfinished
        while True:
            finished = False
            first = failures == 0  # of a row of failures: logged with its traceback
            try:
                # Discord no longer takes them: those members are told by direct message.
                await self._history.forget_reply_tokens(INTERACTION_TOKEN_LIFETIME_S)
                finished = await finish_erasures(client, self._history, with_traceback=first)
            except Exception as error:
                _log_failure("finishing interrupted requests failed", error, first)
            failures = 0 if finished else failures + 1
            wait = self._pending_sweep_s if finished else erasure_retry_wait_s(failures)
            if not finished:
                log.warning("/forget-me: a request is left unfinished; tried again in %.0f s", wait)
            try:
                await _delete_pending(client, self._history, self._in_flight)
            except Exception:
                log.exception(
                    "posts left to delete: retrying their deletes failed; trying again in %.0f s",
                    wait,
                )
            # Not ``wait_for``: on Python 3.11 it swallows the bot's stop (a cancel) that comes
            # in the loop turn a withdrawal wakes the sweep, which would then wait on.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._sweep_now.wait()
            self._sweep_now.clear()

    def _in_background(self, deletes: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(deletes, name="easel-forget-me-posts")
        self._deletes.add(task)
        task.add_done_callback(self._deletes.discard)
        return task

    async def cog_unload(self) -> None:
        """The bot stops (discord.py removes its cogs first): deletes still going on end."""
        self._unloaded = True
        for task in self._deletes:
            task.cancel()
        await asyncio.gather(*self._deletes, return_exceptions=True)

    @app_commands.command(name="history", description="Your past jobs in this server, newest first")
    @app_commands.describe(search="Only jobs whose prompt contains this text")
    async def history(
        self,
        interaction: discord.Interaction[Any],
        search: app_commands.Range[str, 1, MAX_SEARCH_CHARS] | None = None,
    ) -> None:
        page = await self._history.page(
            interaction.user.id, 0, search, guild_id=interaction.guild_id
        )
        await interaction.response.send_message(
            render_page(page, search),
            view=pager(page, search) or discord.utils.MISSING,
            ephemeral=True,
        )

    @app_commands.command(name="show", description="Post one of your past results again")
    @app_commands.describe(job_id="The job id from /history or a result's caption")
    async def show(
        self, interaction: discord.Interaction[Any], job_id: app_commands.Range[str, 1, 32]
    ) -> None:
        job = await self._history.job(job_id.strip().lower())
        # Someone else's job, or one of another server, is answered as if it did not exist.
        if (
            job is None
            or job.user_id != interaction.user.id
            or job.guild_id != interaction.guild_id
        ):
            raise UserError(f"You have no job `{job_id}`; find your job ids with /history.")
        if not job.image_paths:
            raise UserError(
                f"Job `{job.job_id}` is {job.status} and has no pictures; /history lists "
                "the finished ones."
            )
        private, spoiler = await checked_for_showing(interaction, job)
        await defer_thinking(interaction, private=private)
        # After the defer: Discord may take past its 3 s to answer.
        await check_posts_there(interaction.client, services_of(interaction), job)
        # Each file fitted to this interaction's upload limit (per file, as Discord checks),
        # in the member's line of picture work: a burst of /show never fills the default pool.
        limit, paths = interaction.filesize_limit, job.image_paths
        request = await queue_of(interaction).request_of(job.job_id)
        work, member_id = services_of(interaction).picture_work, interaction.user.id
        # A picture deleted, or named outside the data folder (stored_file): answered as gone.
        try:
            if request is not None and is_comparison(request):
                # Up to 16 pictures: posted as their labelled grid, with Delete alone under it.
                comparison, first_infotext = request, job.infotexts[0]
                fitted = await work.run(
                    member_id,
                    lambda: [
                        fitted_file(
                            comparison_png(
                                comparison, decoded([p.read_bytes() for p in paths]), first_infotext
                            ),
                            f"easel-{job.job_id}",
                            limit,
                            spoiler=spoiler,
                            description=result_description(job.job_id, len(paths), comparison=True),
                        )
                    ],
                )
                view = copy_view(job.job_id)
            else:
                fitted = await work.run(
                    member_id,
                    lambda: [
                        fitted_file(
                            path.read_bytes(),
                            f"easel-{job.job_id}-{i}",
                            limit,
                            spoiler=spoiler,
                            description=picture_description(job.job_id, i, len(paths)),
                        )
                        for i, path in enumerate(paths)
                    ],
                )
                view = job_view(job.job_id, request, len(paths))
        except FileNotFoundError as missing:
            raise deleted_picture_read(job, range(len(paths)), missing) from None
        previews = SHOWN_AS_PREVIEW if any(is_preview for _, is_preview in fitted) else ""
        # Its "thinking…" becomes the post: an edit, which discord.py may send again after a
        # 5xx without posting twice (a follow-up sent again would leave an unrecorded copy).
        sent = await interaction.edit_original_response(
            content=copy_caption(job) + previews,
            attachments=[file for file, _ in fitted],
            view=view,
            allowed_mentions=discord.AllowedMentions.none(),
        )
        if not private:
            await link_post_again(self._history, job, interaction.channel_id, sent)

    @app_commands.command(
        name=FORGET_ME,
        description="Erase all your Easel data in every server: jobs, pictures, settings "
        "(asks first; cannot be undone)",
    )
    async def forget_me(self, interaction: discord.Interaction[Any]) -> None:
        # Asked first: one command (picked by mistake, or Enter) erases for good, everywhere.
        # The answer is private, so only the member who asked sees and presses the button.
        view = _EraseConfirmation(interaction, self._erase)
        await interaction.response.send_message(FORGET_ME_ASK, view=view, ephemeral=True)

    @commands.Cog.listener("on_interaction")
    async def answer_stray_erase_press(self, interaction: discord.Interaction[Any]) -> None:
        """A press of a /forget-me question's button that no live question took (asked
        before a restart, or pressed as it expired) is answered, never left to fail: nothing
        erased, the button removed. No race with a live question: discord.py hands a press to
        its view (a task) before it dispatches ``on_interaction`` (a task made after it), and
        the view marks it in its task's first step (``_EraseConfirmation.interaction_check``)."""
        custom_id = untaken_custom_id(interaction, discord.InteractionType.component)
        if custom_id is None or not custom_id.startswith(FORGET_ME_CONFIRM):
            return
        try:
            await interaction.response.edit_message(content=FORGET_ME_NO_LONGER_OPEN, view=None)
        except DISCORD_FAILED as failure:
            log.warning("/forget-me: a stray press could not be answered: %s", failure)

    async def _erase(self, interaction: discord.Interaction[Any]) -> None:
        """/forget-me's erase, on the press of its confirmation's button (``interaction``)."""
        member_id = interaction.user.id
        if (again_at := self._forget_me_cooldown.claim(member_id)) is not None:
            raise UserError(
                f"/forget-me can be run once every {FORGET_ME_COOLDOWN_S / 60:.0f} minutes: "
                f"you can run it again <t:{int(again_at) + 1}:R> (<t:{int(again_at) + 1}:T>).",
                Reason.COOLDOWN,
            )
        reply: discord.Message | None = None
        by_dm = False  # a direct message can be edited however long the deletes take
        answered = False  # told it is done, or that it failed part way

        async def tell_done(forgotten: Forgotten) -> None:
            # Told (or the log says they cannot be), the request is done (``History.forget``).
            # A stop before that leaves it for the next start to tell.
            nonlocal reply, by_dm, answered
            text = f"Done: {forgotten_text(forgotten)}"
            try:
                reply = await interaction.followup.send(text, ephemeral=True, wait=True)
            except DISCORD_FAILED as error:
                # Erased all the same: told by direct message, and they may run it again at once.
                self._forget_me_cooldown.release(member_id)
                log.info("/forget-me: the answer could not be sent (%s)", type(error).__name__)
                reply = await _tell_by_direct_message(interaction.client, member_id, text)
                by_dm = True
            answered = True

        async def tell_failed(error: Exception) -> None:
            # In the erase's turn (``History.forget``): before the retry's "finished now",
            # which replaces this answer where it can.
            nonlocal answered
            if answered:  # only its end was not recorded: the retry tells them again
                log.error("/forget-me: a request answered could not be ended", exc_info=error)
                return
            answered = True
            try:
                await report_error(interaction, error, f"/{FORGET_ME}", next_step=ERASE_RETRIED)
            except DISCORD_FAILED as unsent:  # the retry's answer goes by DM then, if it must
                log.warning("/forget-me: a failure could not be told (%s)", type(unsent).__name__)

        try:
            # The erase, the files and the broker's copies may take past Discord's 3 s to
            # answer. A defer Discord refused (the interaction expired) erased nothing.
            await defer_thinking(interaction, private=True)
        except Exception:
            self._forget_me_cooldown.release(member_id)  # it failed: they may try again at once
            raise
        reply_token = ReplyToken(interaction.application_id, interaction.token)
        direct_messages = await _direct_messages_of(interaction.user)
        try:
            forgotten = await self._history.forget(
                member_id, reply_token, tell_done, tell_failed, direct_messages=direct_messages
            )
        except UserError:
            self._forget_me_cooldown.release(member_id)  # refused: they may try again at once
            raise
        except Exception:
            self._forget_me_cooldown.release(member_id)
            # The request a failure left is finished by the sweep, tried again now
            # (``_sweep_pending``). Not answered: it failed before it was journaled, erasing
            # nothing (raised: told to try again).
            self._sweep_now.set()
            if not answered:
                raise
            return
        if not forgotten.posts:
            return
        results = client_of(interaction).results  # its clocks judge the token

        async def tell(outcome: str) -> None:
            # The answer can be edited: by direct message, or while the token lives.
            if reply is not None and (by_dm or results.token_alive_of(interaction)):
                await reply.edit(content=f"{reply.content}\n{outcome}")

        self.delete_posts_later(interaction.client, forgotten.posts, tell)
