"""Posting a finished job: its files, caption and buttons, in the interaction's response while
its token lives, else in the channel or the member's direct messages (never for a job whose
pictures stay in age-restricted channels: ``cogs.results.copies.may_go_to_direct_messages``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import discord

from bot.alt_text import picture_description, result_description
from bot.bans import StoppedMembers
from bot.history import PostedMessage
from bot.images import decoded, posted_as_grid, posted_grid_png
from bot.jobs.queue import (
    PRIVATELY,
    SERVER_NOT_SERVED,
    STOPPED_BEFORE_ITS_START,
    FinishedJob,
    Privately,
)
from bot.jobs.queue.delivery import INVALID_WEBHOOK_TOKEN
from bot.policy.delivery import (
    CHANNEL_DELETED,
    EASEL_REMOVED,
    MODERATOR_STOPPED,
    PROGRESS_DELETED,
    SANCTION_STOPPED,
    UNSEEN_AND_DMS_CLOSED,
    Withheld,
    placed_under_rules_of_now,
    refunded_withdrawal,
    stopped_by_moderator,
    stopped_by_sanction,
    under_rules_of_now,
)
from bot.policy.moderation import WITHHELD_BECAUSE
from cogs.common import MAX_CAPTION, MAX_QUOTED_PROMPT, ORIGINAL_RESPONSE, quoted, shown_prompt
from cogs.results.buttons import (
    THREAD_ARCHIVED,
    UNKNOWN_CHANNEL,
    copy_view,
    delete_erased_post,
    job_view,
    link_copy,
)
from cogs.results.copies import (
    AGE_RESTRICTED_THERE,
    CHANNEL_UNCHECKED,
    EASEL_CANNOT_SEE,
    HIDDEN_AGE_RESTRICTED,
    MADE_AGE_RESTRICTED,
    CopiedPicture,
    copy_files,
    in_direct_messages,
    kept_in_the_server,
    send_copy,
    why_kept_in_the_server,
)
from cogs.results.earlier_posts import SERVER_WAIT_S, earlier_post
from cogs.results.fitted import (
    DIRECT_MESSAGE_UPLOAD_LIMIT,
    SMALLEST_UPLOAD_LIMIT,
    ResultPost,
    channel_upload_limit,
)
from cogs.results.progress import (
    CHANNEL_CHECK_TIMEOUT_S,
    Pointer,
    ProgressMessages,
    _Watched,
    interaction_webhook,
)
from cogs.visibility import (
    CHANNEL_CHECK_FAILED,
    DISCORD_FAILED,
    HiddenFromEasel,
    guild_channel,
    made_age_restricted,
    thread_parent_of,
)
from cogs.withdrawals import UNKNOWN_MESSAGE
from inference.compare import is_comparison
from inference.infotext import PROMPT_WARNINGS, parse_infotext

log = logging.getLogger(__name__)

# Invalid Webhook Token, Unknown Webhook, Unknown Message.
_GONE_TOKEN_CODES = frozenset({INVALID_WEBHOOK_TOKEN, 10015, UNKNOWN_MESSAGE})
# Discord asks for an interaction's first answer within 3 s, and makes its original response
# then: a post of the job made later (a /show's) is never taken for it. Both times are
# Discord's (read from ids), so no clock slack is needed beyond its own delays.
FIRST_ANSWER_WINDOW_S = 10.0
# At most so many of a member's jobs a start ended for servers left out of
# EASEL_ALLOWED_SERVERS are named in one DM, of so many servers at most, each named once (20
# characters a job, up to 206 a server's escaped name: under Discord's 2,000 however large
# EASEL_MAX_QUEUED_PER_MEMBER is, and in however many servers); the rest in the next.
NAMED_IN_ONE_DM = 50
SERVERS_IN_ONE_DM = 3
# What a server's result sent to direct messages says of its buttons (none there: a click
# outside its server is refused); of one made in a thread Discord hides from Easel (a private
# thread it was not added to), that /show and the buttons refuse it there until it is added.
_BUTTONS_THERE = "Its buttons work in its server: `/show {0}` there."
_UNSEEN_THERE = (
    "Easel cannot see the thread it was made in, so its buttons and `/show {0}` do not work "
    "there; add Easel to that thread to use them."
)


def _unserved_jobs(servers: int) -> str:
    """Why jobs of ``servers`` servers left out were not posted (``SERVER_NOT_SERVED``, said
    of several; all refunded whole)."""
    made_in = "the server they were made in" if servers == 1 else "the servers they were made in"
    return f"Easel's operator no longer serves {made_in}. They do not count against your quota"


def caption(job: FinishedJob) -> str:
    """The prompt, maker, seeds and notes; never so long that Discord refuses the result."""
    # A prompt of direction controls alone shows as nothing: said to have none.
    prompt = shown_prompt(job.request.prompt, MAX_QUOTED_PROMPT) or f"({job.kind}, no prompt)"
    seeds = ", ".join(str(image.seed) for image in job.images)
    text = f"**{prompt}** — <@{job.user_id}> (seed {seeds}, job `{job.job_id}`)"
    said = [*job.request.notes, *render_warnings(job)]
    notes = "".join(f"\nNote: {n}" for n in said)
    return text + quoted(notes, MAX_CAPTION - len(text))


def render_warnings(job: FinishedJob) -> list[str]:
    """What the engine said about how it read the prompt (the first picture's infotext
    ``Prompt warnings``: weights a T5 model ignored, a sampler it replaced...). The engine
    writes only its own there: a picture's carried over is dropped (``without_easel_keys``)."""
    if not job.images:
        return []
    warnings = parse_infotext(job.images[0].infotext)[2].get(PROMPT_WARNINGS)
    return [part for part in str(warnings).split("; ") if part] if warnings else []


def result_png(job: FinishedJob) -> bytes:
    """The one picture, or the picture the queue composed of all of them while they were
    stored (composed here from the stored files when it did not: a delivery after a restart,
    a picture rendered by a broker worker)."""
    if job.composed is not None:
        return job.composed
    pngs = [image.path.read_bytes() for image in job.images]
    if not posted_as_grid(job.request, len(pngs)):
        return pngs[0]
    seeds = [image.seed for image in job.images]
    return posted_grid_png(job.request, decoded(pngs), job.images[0].infotext, seeds)


@dataclass(frozen=True)
class _Placed:
    """Where a job's outcome went: its message in the server's channel (``PRIVATELY``: to its
    maker alone; None: nowhere), and, when it is not in the interaction's original response,
    what that response (the public progress message ``progress_id``) says of it instead (None:
    it is that response, or private; ``progress_id`` None: none known that may be edited)."""

    message_id: int | Privately | None
    pointer: str | None = None
    progress_id: int | None = None


def _original_response_recorded(job: FinishedJob) -> int | None:
    """The job's interaction's original response in its channel, as the journal recorded it
    once its progress showed there (its first post there, ``FinishedJob.posted_ids``): the
    one message of it a delivery after a restart knows. None: none recorded (its response
    was private, or still "thinking…"), or the first is a later post (a /show's)."""
    if not job.posted_ids or job.interaction_created_at is None:
        return None
    first = job.posted_ids[0]
    made_after_s = discord.utils.snowflake_time(first).timestamp() - job.interaction_created_at
    return first if 0 <= made_after_s < FIRST_ANSWER_WINDOW_S else None


def _progress_message(job: FinishedJob, watched: _Watched | None) -> int | None:
    """The job's public progress message in its channel, the one to say where its outcome
    went: the one ``watched`` shows (None: deleted, or ephemeral), else, for a restart's
    delivery, the original response the journal recorded."""
    if watched is not None:
        shown = None if watched.deleted else watched.message
        return None if shown is None or shown.flags.ephemeral else shown.id
    progress_id = _original_response_recorded(job)
    if progress_id is None and job.interaction_created_at is not None:
        # A restart's delivery of a job whose response was never edited: "thinking…".
        log.info(
            "job %s: its interaction's response is left as it was (none of its messages is "
            "known to edit)",
            job.job_id,
        )
    return progress_id


def _response_known(job: FinishedJob, watched: _Watched | None) -> int | None:
    """The job's interaction's original response in its channel as far as Easel knows it:
    the one ``watched`` edited (deleted since or not), else the one the journal recorded;
    None: none (ephemeral, or "thinking…")."""
    if watched is not None and watched.message is not None:
        return None if watched.message.flags.ephemeral else watched.message.id
    return _original_response_recorded(job)


def _shows_no_outcome(job: FinishedJob, progress_id: int, read_without_it: set[int]) -> bool:
    """Whether the progress message ``progress_id`` may be edited without replacing the
    job's outcome: no try ran (``FinishedJob.post_attempted_at``), or the look for an earlier
    try's post read it and found none of the job there (``read_without_it``). A try's edit
    through a live token may have landed there, its answer lost; where the look could not
    read it (no Read Message History), Discord would still let Easel edit it."""
    return job.post_attempted_at is None or progress_id in read_without_it


class _ProgressDeleted(Exception):
    """The job's public progress message, ``message_id`` (None: not known, "thinking…"), was
    deleted in its channel while its token lived: by a moderator, or by its maker (Discord
    does not say which). Its deletion withdrew the job (``History.result_posted``, from its
    first edit on); its result is posted nowhere, not even to its maker (a withdrawn job's
    pictures are shown to no one)."""

    def __init__(self, message_id: int | None) -> None:
        super().__init__(message_id)
        self.message_id = message_id


class _NowhereToBeHad(Exception):
    """A result made in a thread Discord hides from Easel could not go to its maker's direct
    messages either (closed to Easel), nor, where its pictures stay in the server, the notice
    that names it: no post, button or /show brings it back, and its maker is told nowhere,
    so it is withheld and refunded (``UNSEEN_AND_DMS_CLOSED``)."""


class _ChannelDeleted(Exception):
    """The channel or thread the job was made in is gone (its deletion may have come while
    Easel was offline, or before the job had a post there): posted nowhere, as its deletion
    withdraws what was posted there, and never tried again."""


def _server_named(guild: discord.Guild | None, *, left: bool) -> str:
    """A server as a DM names it: its name as typed (markdown escaped); when Easel does not
    know it, what is known: that Easel is no longer in it (``left``), else that its name is
    not known now (Discord did not answer for it)."""
    if guild is not None:
        return discord.utils.escape_markdown(guild.name)
    return "a server Easel is no longer in" if left else "a server Easel cannot name right now"


def _went_privately(job: FinishedJob, *, delivered: bool | None = True) -> str:
    """What the public progress message of a job made private since its submit says: its
    result went to its maker alone, or (not ``delivered``: their direct messages closed, or
    the pictures kept in the server) where it is to be had; None: it is being sent to them
    (what it says until the send is done, true whatever its outcome)."""
    if delivered is None:
        return f"Job `{job.job_id}` ended; its result is being sent to its maker alone."
    if not delivered:
        return f"Job `{job.job_id}` ended; `/show {job.job_id}` brings its result back."
    return f"Job `{job.job_id}` ended; its result went to its maker alone."


def _token_gone(error: discord.HTTPException) -> bool:
    """Whether the interaction's webhook refused a call for its token (``_GONE_TOKEN_CODES``),
    or with any 401: an interaction's webhook carries no bot token, so its 401 is never the
    bot's (``bot.jobs.queue.delivery`` would check the bot's token, then wait for it)."""
    return error.status == 401 or error.code in _GONE_TOKEN_CODES


def _counted(*, refunded: bool) -> str:
    return "It does not count against your quota." if refunded else "It counts against your quota."


def _log_direct_messages_closed(job: FinishedJob) -> None:
    log.warning(
        "job %s: the member's direct messages are closed to the bot; the result was not posted",
        job.job_id,
    )


class DiscordResults(ProgressMessages):
    """The queue's result sink and progress listener: edits the original response while its
    token lives, else posts in the channel mentioning the member (a private result: in the
    member's direct messages, never the channel)."""

    def __init__(
        self,
        client: discord.Client,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(client, wall_clock, monotonic)
        # The members banned, kicked or timed out in a server (unset: none known).
        self.stopped_members: StoppedMembers | None = None
        # Whether Easel was removed from a server (``EaselBot.removed_from``; unset: never).
        self.removed_from: Callable[[int], bool] | None = None
        # Whether Easel serves a server (``Settings.serves_server``; unset: every one).
        self.serves_server: Callable[[int], bool] | None = None
        # Gives a withheld job's quota back, its charge included (``JobQueue.refund_withheld``;
        # unset: none is refunded); whether it stands refunded.
        self.refund_withheld: Callable[[str], Awaitable[bool]] | None = None
        # The jobs whose progress message a restart's delivery turned into "posting…" with
        # its token expired, in this run (``_show_ended``), and where: no try's edit can have
        # made it their outcome since, so a retry points it to the result without reading it,
        # and a delivery given up says so there (``given_up``).
        self._posting_shown: dict[str, Pointer] = {}
        # Set once Easel begins to stop (``stopping``): no delivery waits for READY from then.
        self._stopping = asyncio.Event()
        # The one wait for Discord's READY that the queue's first starts and the deliveries
        # before it share (``_servers_known``): one bound, one warning should it not come.
        self._ready_wait: asyncio.Future[None] | None = None

    async def deliver(self, job: FinishedJob) -> int | Privately | None:
        """Post the job's outcome; the id of its message in the server's channel, the one
        post of it a moderator (or its maker's /forget-me) can delete there (``PRIVATELY``:
        its maker alone was shown it; None: posted nowhere)."""
        if job.withheld is not None:  # ended before its render, or withheld: refunded whole
            await self._withhold(job, job.withheld, refunded=True)
            return None
        if (left := await self._server_left_known(job)) is not None:
            # Ended before Easel was removed from its server, or before the operator left it
            # out of EASEL_ALLOWED_SERVERS (rendered, failed or cancelled): nothing new is
            # posted there, whatever the outcome, and no /show there brings it back. A result
            # is refunded and withdrawn; a failure or a cancel stands as it was charged.
            refunded = await (self._refunded(job) if job.succeeded else self._was_refunded(job))
            if job.succeeded and refunded:
                await self._withdraw_withheld(job, left)
            await self._withhold(job, left, refunded=refunded)
            return None
        if job.succeeded and await self._was_refunded(job):
            # Given back by a delivery cut short before the withdrawal recorded why (Easel
            # stopped, or a moderator's deletion withdrew it first): never posted, whatever
            # the rules of now, and its maker told it does not count. One withdrawn with a
            # deleted channel, or with another member's picture it was made from, records that
            # alone (its withdrawal keeps no why): told that.
            why = refunded_withdrawal(job) or WITHHELD_BECAUSE
            await self._withdraw_withheld(job, why)
            await self._withhold(job, why, refunded=True)
            return None
        if job.succeeded:
            try:
                job = await self._under_rules_of_now(job)
            except Withheld as withheld:
                refunded = withheld.refund and await self._refunded(job)
                if refunded and withheld.why is not None:
                    await self._withdraw_withheld(job, withheld.why)
                await self._withhold(job, withheld.why, refunded=refunded)
                return None
        # Composed once: the posted result and a comparison's copy by DM are the same picture.
        png = await asyncio.to_thread(result_png, job) if job.succeeded else None
        try:
            message_id, pointer = await self._post_result(job, png)
        except _ProgressDeleted as deleted:
            log.info("job %s: its progress message was deleted; not posted", job.job_id)
            # Withdrawn here too when no progress edit learned of the deletion first (a job
            # that ended before one: its "thinking…" deleted); a job the deletion stopped
            # (cancelled, refunded whole) or that failed is not charged.
            await self._progress_deleted(
                job.job_id, job.guild_id, job.channel_id, deleted.message_id
            )
            await self._tell_withheld(job, PROGRESS_DELETED, refunded=not job.succeeded)
            return None
        except _NowhereToBeHad:
            refunded = await self._refunded(job)
            if refunded:
                await self._withdraw_withheld(job, UNSEEN_AND_DMS_CLOSED)
            # Not told by DM: its DMs just refused the picture's notice.
            await self._withhold(job, UNSEEN_AND_DMS_CLOSED, refunded=refunded, tell=False)
            return None
        except _ChannelDeleted:
            log.info("job %s: its channel was deleted; not posted", job.job_id)
            # Withdrawn with its channel before the refund: a delivery retried after a crash
            # reads that withdrawal (the gate refunds it then, or ``_was_refunded`` tells its
            # reason) and posts nothing.
            await self._channel_deleted(job.guild_id, job.channel_id)
            refunded = not job.succeeded or await self._refunded(job)
            await self._tell_withheld(job, CHANNEL_DELETED, refunded=refunded)
            return None
        shown = True
        if isinstance(message_id, int) and self.history is not None:
            # Recorded before the copy by DM (seconds): a deletion meanwhile withdraws the job.
            # An erased job's post is the queue's to retract, once it records the delivery.
            # Withdrawn (its post deleted as it was posted) or erased: no copy goes by DM.
            shown = await self.history.result_posted(
                job.job_id, job.guild_id, job.channel_id, message_id
            )
        if shown and pointer is not None:
            # After it is recorded: a deletion of the result meanwhile withdraws the job.
            self.point_to_result(job.job_id, pointer)
        if shown and png is not None and await self._wants_copy(job):
            await self._send_copy(job, png)
        return message_id

    async def _under_rules_of_now(self, job: FinishedJob) -> FinishedJob:
        """The delivery gate: ``job`` as the server's rules of now let it be posted
        (``bot.policy.delivery``), or ``Withheld``; also a result rendered before its maker
        was banned, kicked or timed out in the server after it was submitted (the stop
        cancels only unfinished jobs), without telling them. A result restored at start-up
        waits for Discord's answer about its maker (``StoppedMembers.answer_awaited``): the
        queue waits for it out of the job's lane first (``start_waits_for``), so that the
        member's later results there post meanwhile; this wait holds on any other path."""
        stopped = self.stopped_members
        if stopped is not None and job.guild_id is not None:
            if stopped.answer_awaited(job.guild_id, job.user_id, job.job_id):
                await stopped.wait_for_answer(job.guild_id, job.user_id)
            if stopped.holds(job.guild_id, job.user_id, began_at=job.created_at):
                raise Withheld(None)
        return await under_rules_of_now(
            job,
            self.guild_policy,
            lambda: self._channel_age_restricted_now(job),
            lambda: self._pixels_withdrawn(job),
            lambda: self._thread_parent(job),
        )

    async def _pixels_withdrawn(self, job: FinishedJob) -> bool:
        assert job.guild_id is not None  # asked of a server's job only
        return self.history is not None and await self.history.pixels_withdrawn(
            job.job_id, job.guild_id
        )

    def start_waits_for(
        self, job_id: str, user_id: int, guild_id: int | None
    ) -> Callable[[], Awaitable[None]] | None:
        """For the queue's start gate (``bot.jobs.queue.StartGate``): a job restored at
        start-up waits for Discord's answer about its maker before ``why_not_started`` reads
        the stops (``StoppedMembers.answer_awaited``), and its result before its lane's turn
        to be posted."""
        stopped = self.stopped_members
        if stopped is None or not stopped.answer_awaited(guild_id, user_id, job_id):
            return None
        assert guild_id is not None  # awaited in a server only
        return lambda: stopped.wait_for_answer(guild_id, user_id)

    async def servers_known(self) -> None:
        """The queue's wait before each device's first job (``JobQueue.set_start_gate``):
        until Discord's READY has said which servers Easel is in (``_servers_known``), so that
        ``why_not_started`` ends a job restored at start-up of a server that removed Easel
        while it was offline rather than renders it. The jobs stay queued meanwhile, their
        messages showing their places. Easel stopping first cancels it."""
        if self.removed_from is not None and not self._client.is_ready():
            await self._servers_known_or_stop()

    def _server_unknown_yet(self, guild_id: int | None) -> bool:
        """Whether it is not known yet if Easel is still in server ``guild_id``: before
        Discord's READY has listed Easel's servers (``removed_from`` says no to each), for a
        server it does not know and serves."""
        return (
            guild_id is not None
            and self.removed_from is not None
            and not self._client.is_ready()
            and self._client.get_guild(guild_id) is None
            and (self.serves_server is None or self.serves_server(guild_id))
        )

    async def _servers_known(self) -> None:
        """Until Discord's READY has said which servers Easel is in, ``SERVER_WAIT_S`` at most
        from the first wait (then logged once, and each server read as one Easel is in: where
        it is not, Discord refuses the post, and the result is charged and its maker told by
        direct message, as where Easel may not post), or until Easel begins to stop."""
        if self._ready_wait is None:
            self._ready_wait = asyncio.ensure_future(self._ready_or_given_up())
        await asyncio.shield(self._ready_wait)

    async def _ready_or_given_up(self) -> None:
        waits = [
            asyncio.ensure_future(self._client.wait_until_ready()),
            asyncio.ensure_future(self._stopping.wait()),
        ]
        try:
            done, _ = await asyncio.wait(
                waits, timeout=SERVER_WAIT_S, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for wait in waits:
                wait.cancel()
        if not done:
            log.warning(
                "Discord's READY has not come within %g s of the start: jobs restored at "
                "start-up render and post without knowing whether Easel is still in their "
                "servers (where it is not, Discord refuses the post: the result is charged "
                "and its maker told by direct message, as where Easel may not post)",
                SERVER_WAIT_S,
            )

    async def _servers_known_unless_stopped(self, stopped: BaseException) -> None:
        """``_servers_known``, raising ``stopped`` where Easel stopped before READY."""
        await self._servers_known()
        if self._stopping.is_set() and not self._client.is_ready():
            raise stopped

    async def _servers_known_or_stop(self) -> None:
        """``_servers_known`` for a job's start or its result's turn: cancelled when Easel
        stops before READY, so the job stays journaled as it was, for the next start."""
        await self._servers_known_unless_stopped(
            asyncio.CancelledError("Easel stopped before Discord's READY")
        )

    async def why_not_started(self, job: FinishedJob) -> str | None:
        """The queue's start gate (``bot.jobs.queue.StartGate``): the rules of now that are
        cheap to read; the banned words are read at delivery only (a reader may be slow). A
        job whose maker was stopped in its server since it was journaled (one the stop's
        cancels missed: a cancel that raised, or one started before its cancel reached it)
        ends as those cancels end it, uncharged and answered "Cancelled", rather than renders
        to be withheld at delivery; noted for the stop's audit (``StoppedMembers``). A job
        of a server Easel was removed from (one ``on_guild_remove``'s cancels missed), or no
        longer serves (one the queue's start did not end, nor a check before queueing caught:
        a second line behind those, the Vary (Region) page's ``RegionOffers._check_served``
        among them), is refused too."""
        if (left := self._server_left(job)) is not None:
            return left
        stopped = self.stopped_members
        if stopped is not None and stopped.ends_at_start(
            job.guild_id, job.user_id, job.job_id, began_at=job.created_at
        ):
            return STOPPED_BEFORE_ITS_START
        try:
            await placed_under_rules_of_now(
                job,
                self.guild_policy,
                lambda: self._channel_age_restricted_now(job),
                lambda: self._thread_parent(job),
            )
        except Withheld as withheld:
            return withheld.why
        return None

    def stopping(self) -> None:
        """Easel begins to stop: a job's start or delivery waiting for Discord's READY waits
        no more, and is left for the next start (``_servers_known``)."""
        self._stopping.set()

    async def _server_left_known(self, job: FinishedJob) -> str | None:
        """``_server_left`` once Discord's READY has said which servers Easel is in: a
        restart's delivery of a server's job before it (``removed_from`` knows nothing yet)
        waits for it (``_servers_known``), so that one that removed Easel while it was offline
        is not charged and pointed "there". Easel stopping meanwhile ends the wait:
        TimeoutError, so that the queue tries it again at the next start, rather than the
        stop waiting for READY or posting it unknowing."""
        if self._server_unknown_yet(job.guild_id):
            await self._servers_known_unless_stopped(
                TimeoutError(f"job {job.job_id}: Easel stopped before Discord's READY")
            )
        return self._server_left(job)

    def _server_left(self, job: FinishedJob) -> str | None:
        """Why nothing of ``job`` is posted in its server any more: Easel was removed from it
        (known after Discord's READY: ``removed_from``), or EASEL_ALLOWED_SERVERS leaves it
        out now; None: neither."""
        if job.guild_id is None:
            return None
        if self.removed_from is not None and self.removed_from(job.guild_id):
            return EASEL_REMOVED
        if self.serves_server is not None and not self.serves_server(job.guild_id):
            return SERVER_NOT_SERVED
        return None

    async def _withdraw_withheld(self, job: FinishedJob, why: str) -> None:
        """Given back, so never shown later either (/show, buttons): withdrawn as Easel's
        doing, with ``why``. After the refund, before telling its maker: a delivery retried
        after a crash from here on reads ``why`` back (``FinishedJob.withheld``) and tells
        the same, uncharged."""
        if self.history is not None:
            await self.history.withhold_job(job.job_id, why)

    async def _cancelled(self, job: FinishedJob) -> str:
        """What a cancelled job's post says: its maker's own cancel, or a moderator's stop,
        said as such (never naming the moderator) with whether it counts against their
        quota."""
        if stopped_by_moderator(job):
            why = MODERATOR_STOPPED
        elif stopped_by_sanction(job):
            why = SANCTION_STOPPED
        else:
            return f"<@{job.user_id}> Cancelled (job `{job.job_id}`); no pictures were charged."
        counted = _counted(refunded=await self._was_refunded(job))
        return f"<@{job.user_id}> Stopped (job `{job.job_id}`): {why}. {counted}"

    async def _was_refunded(self, job: FinishedJob) -> bool:
        return self.history is not None and await self.history.was_refunded(job.job_id)

    async def _refunded(self, job: FinishedJob) -> bool:
        return self.refund_withheld is not None and await self.refund_withheld(job.job_id)

    async def _channel_age_restricted_now(self, job: FinishedJob) -> bool:
        """Whether the job's channel is age-restricted now (one Easel cannot see counts as
        one: nothing is posted there, and its DM fallback keeps such pictures in the server).
        A delivery may wait for Discord's answer longer than a click."""
        assert job.guild_id is not None  # asked of a server's job only
        return await made_age_restricted(
            self._client,
            job.guild_id,
            job.channel_id,
            restricted_when_made=False,
            timeout_s=CHANNEL_CHECK_TIMEOUT_S,
        )

    async def _thread_parent(self, job: FinishedJob) -> int | None:
        """The channel of the thread the job was made in (None: not a thread, or not known):
        a thread is enabled with its channel. Journaled at submit (Discord may not show Easel
        the thread: a private one it was not added to); a job journaled before 0041 asks."""
        if job.thread_parent_id is not None:
            return job.thread_parent_id
        if job.guild_id is None or job.channel_id is None:
            return None
        return await thread_parent_of(
            self._client, job.guild_id, job.channel_id, CHANNEL_CHECK_TIMEOUT_S
        )

    async def _withhold(
        self, job: FinishedJob, why: str | None, *, refunded: bool, tell: bool = True
    ) -> None:
        """A result the delivery gate refused is posted nowhere, nor sent by DM. Its progress
        message, while its token lives and unless it is known deleted, says that it ended, and
        shows nothing of it; its maker is told ``why`` by DM (None, or not ``tell``: not told),
        and whether it was ``refunded``."""
        log.info("job %s: the result is not posted (%s)", job.job_id, why or "maker stopped")
        watched = self._watched.pop(job.job_id, None)
        if watched is not None:
            await watched.settle()  # never let a late progress edit show a preview
        if why is not None and tell:
            await self._tell_withheld(job, why, refunded=refunded)
        # Withdrawn alone: its own message (the progress message) was deleted.
        deleted = (watched is not None and watched.deleted) or (
            job.withdrawn and not job.withdrawn_with_source
        )
        if deleted or not self._token_alive(job):
            return
        try:
            await self._webhook(job).edit_message(
                ORIGINAL_RESPONSE,
                content=f"Job `{job.job_id}` ended; its result is not posted.",
                attachments=[],
                allowed_mentions=discord.AllowedMentions.none(),
                view=None,
            )
        except discord.HTTPException as error:
            log.warning("job %s: its progress message stays as it was (%s)", job.job_id, error)

    async def _tell_withheld(self, job: FinishedJob, why: str, *, refunded: bool) -> None:
        """To the maker by DM: which job was not posted, why (never a banned word, nor the
        picture or prompt), and whether it still counts against their quota. The jobs a start
        ended for servers left out of EASEL_ALLOWED_SERVERS (up to a member's whole queue, in
        any of those servers) are named together, one DM a member (``_named_together``)."""
        listed: list[tuple[str, int]] = []
        if why == SERVER_NOT_SERVED and refunded and job.guild_id is not None:
            named = await self._named_together(job)
            if named is None:
                return  # named in a DM sent already, about it or another of its maker's jobs
            listed = named
        if len(listed) > 1:
            notice = await self._unserved_notice(listed)
        else:
            guild_id = job.guild_id
            where = "direct messages" if guild_id is None else await self._server_name(guild_id)
            counted = _counted(refunded=refunded)
            notice = f"Your job `{job.job_id}` in {where} was not posted: {why}. {counted}"
        try:
            await self._tell_maker(job, notice)
        except discord.HTTPException as error:  # extra: the result stays withheld
            log.warning("job %s: its maker is not told why (%s)", job.job_id, error)
            if listed and self.history is not None:  # the others named by their deliveries
                await self.history.unserved_listing_failed(job.job_id)
            return
        if listed and self.history is not None:
            await self.history.unserved_listing_told(job.job_id)

    async def _named_together(self, job: FinishedJob) -> list[tuple[str, int]] | None:
        """The jobs, each with its server, that the DM about ``job`` (withheld for its server
        left out) names: it, and its maker's other jobs in any server that the queue's start
        ended so and that are not posted yet, ``NAMED_IN_ONE_DM`` at most (the rest in the DMs
        of their own deliveries). Recorded in the database before the DM is sent
        (``History.unserved_listing``), and marked told once it went: a delivery after a
        restart before that sends the same DM again (its nonce the job's: one message), and
        no other delivery names them; forgotten when Discord fails that DM otherwise than for
        DMs closed (the others' deliveries list them again). None: a DM sent already names
        ``job``; empty: none is recorded (the job is not journaled)."""
        if self.history is None:
            return []
        return await self.history.unserved_listing(
            job.job_id, job.user_id, SERVER_NOT_SERVED, NAMED_IN_ONE_DM, SERVERS_IN_ONE_DM
        )

    async def _unserved_notice(self, listed: list[tuple[str, int]]) -> str:
        """The DM naming ``listed``'s jobs, by their servers in the order they come."""
        by_server: dict[int, list[str]] = {}
        for job_id, guild_id in listed:
            by_server.setdefault(guild_id, []).append(job_id)
        places = [
            ", ".join(f"`{job_id}`" for job_id in job_ids)
            + f" in {await self._server_name(guild_id)}"
            for guild_id, job_ids in by_server.items()
        ]
        jobs = "; ".join(places)
        return f"Your jobs {jobs} were not posted: {_unserved_jobs(len(by_server))}."

    async def _server_name(self, guild_id: int) -> str:
        """``_server_named`` for a DM: before Discord's READY (the queue's start delivers
        before it) the gateway has described no server yet, and one cached unavailable is
        one Easel is in that it has not described (READY's nameless placeholder until that
        server's GUILD_CREATE, or its outage), so its name is asked of Discord, and is not
        known when Discord does not answer; after READY, one not cached is a server Easel is
        not in (asked, a 403: Discord bans an IP for too many of those)."""
        cached = self._client.get_guild(guild_id)
        if cached is not None and not cached.unavailable:
            return _server_named(cached, left=False)
        left = cached is None and self._client.is_ready()
        if not left:
            with contextlib.suppress(discord.HTTPException):  # not named
                return _server_named(await self._client.fetch_guild(guild_id), left=False)
        return _server_named(None, left=left)

    async def retract(self, job: FinishedJob, message_id: int) -> None:
        """Delete the result just posted as ``message_id``: its maker's /forget-me erased the
        job meanwhile, so nothing else would. Through the interaction's webhook while its
        token lives (the edited original response: it works where the bot user may not view
        the channel), else, or when the result went to the channel after all, the channel's.
        Not one whose deletion Easel heard (a moderator's, which withdrew the job, a moment
        before the erase). A server's post: its delete waits in the database since its
        record found the job gone, or the erase unlinked it (``History.result_posted``), and
        one refused or failed here is tried again by /forget-me's sweep
        (``delete_erased_post``); a direct message's is tried once."""
        if job.channel_id is None:
            return  # nowhere Easel can name it (a job stored without its channel)
        post = PostedMessage(job.channel_id, message_id)
        await delete_erased_post(
            self.history, job.job_id, post, lambda: self._delete_posted(job, post)
        )

    async def _delete_posted(self, job: FinishedJob, post: PostedMessage) -> None:
        """``retract``'s delete of ``post``; raises as Discord refuses or fails it."""
        if (
            self.history is not None
            and job.guild_id is not None
            and self.history.message_deleted_lately(job.guild_id, post.channel_id, post.message_id)
        ):
            return
        if self._token_alive(job) and await self._deleted_through_webhook(job, post.message_id):
            return
        channel = self._client.get_partial_messageable(post.channel_id)
        await channel.get_partial_message(post.message_id).delete()

    def given_up(self, job_id: str, why: str) -> None:
        """The job's delivery is given up (``why``: what kept its outcome from being posted):
        its progress message, kept for the next try (``_post_result``), goes; one a restart's
        delivery turned into "posting…" says instead that its outcome was not posted."""
        self._watched.pop(job_id, None)
        if (shown := self._posting_shown.pop(job_id, None)) is not None:
            not_posted = f"Job `{job_id}` ended; its outcome could not be posted ({why})."
            self.point_to_result(job_id, dataclasses.replace(shown, text=not_posted))

    async def _deleted_through_webhook(self, job: FinishedJob, message_id: int) -> bool:
        """False when the token or the message is not the webhook's (a result posted in the
        channel because the token was gone at delivery)."""
        try:
            await self._webhook(job).delete_message(message_id)
        except discord.HTTPException as error:
            if not _token_gone(error):
                raise
            return False
        return True

    def _webhook(self, job: FinishedJob) -> discord.Webhook:
        """The interaction's webhook; only for a job whose token lives (``_token_alive``)."""
        assert job.application_id is not None and job.interaction_token is not None
        return interaction_webhook(self._client, job.application_id, job.interaction_token)

    async def _send_copy(self, job: FinishedJob, png: bytes) -> None:
        """The copy by DM is extra: failing to send it never fails the posted result. A
        comparison's copy is its labelled grid ``png`` (its cells can outnumber a message's
        10 files); other results' copies are their stored pictures."""
        pictures: list[CopiedPicture]
        count = len(job.images)
        if is_comparison(job.request):
            described = result_description(job.job_id, count, comparison=True)
            pictures = [(png, f"easel-{job.job_id}", described)]
        else:
            pictures = [
                (
                    image.path,
                    f"easel-{job.job_id}-{idx}",
                    picture_description(job.job_id, idx, count),
                )
                for idx, image in enumerate(job.images)
            ]
        try:
            # Easel's own pace, not the member's: on the default pool, outside their line.
            files = await asyncio.to_thread(copy_files, pictures, job.spoiler)
            # The job id in the nonce: a restart that delivers again shows one copy.
            sent = await send_copy(
                self._client,
                job.user_id,
                f"{caption(job)}\nA copy, as your settings ask (`/settings results_by_dm`).",
                files,
                view=copy_view(job.job_id),
                nonce=f"{job.job_id}dm",
            )
        except discord.HTTPException as error:
            log.warning("job %s: the copy by DM failed (%s)", job.job_id, error)
            return
        if sent is None:
            log.warning("job %s: no copy by DM, the member's DMs are closed", job.job_id)
            return
        copied = PostedMessage(sent.channel.id, sent.id)
        await link_copy(self.history, job.job_id, job.guild_id, copied, sent.delete)

    async def _private_now(self, job: FinishedJob) -> bool:
        """Whether the maker of a server's job has their results shown to them alone now (read
        from memory, as the copy by DM is)."""
        if self.member_settings is None or job.guild_id is None:
            return False
        return (await self.member_settings.get(job.user_id)).private_results

    async def _wants_copy(self, job: FinishedJob) -> bool:
        """The member asked for copies by DM, and the result itself did not go there."""
        if self.member_settings is None or job.guild_id is None:
            return False
        personal = await self.member_settings.get(job.user_id)
        if (job.private or personal.private_results) and not self._token_alive(job):
            return False  # an expired private result was itself sent to their DMs
        if not personal.results_by_dm:
            return False
        # Posted where it would be without the setting, and the member is not told: the
        # setting's own description says these pictures stay in the server.
        return not kept_in_the_server(await self._why_kept_in_the_server(job))

    async def _why_kept_in_the_server(self, job: FinishedJob) -> str | None:
        if self.guild_policy is None:
            return None if job.guild_id is None else "the servers' policies are not known"
        return await why_kept_in_the_server(
            self._client,
            self.guild_policy,
            job.guild_id,
            job.channel_id,
            restricted_when_made=job.age_restricted,
            thread_parent_id=job.thread_parent_id,
        )

    def _token_alive(self, job: FinishedJob) -> bool:
        return (
            job.application_id is not None
            and job.interaction_token is not None
            and job.interaction_created_at is not None
            and self._alive(job.job_id, job.interaction_created_at)
        )

    async def _post_result(
        self, job: FinishedJob, png: bytes | None
    ) -> tuple[int | Privately | None, Pointer | None]:
        """Post the result (``png``: its picture; None: it failed or was cancelled); where it
        went (``_Placed.message_id``), and what the progress message it left behind is to say
        when it went elsewhere (a new message there, or a DM)."""
        watched = self._watched.pop(job.job_id, None)
        if watched is not None:
            # Put back for a retry when this fails: ``replace_thinking`` sends it no more.
            watched.ended = True
            await watched.settle()  # never let a late progress edit overwrite the result
            if watched.restored_id is not None:  # this run's places only: a restart's delivery
                watched = None
        try:
            placed = await self._posted(job, png, watched)
        except Exception as error:
            if watched is not None and not isinstance(error, _ProgressDeleted | _ChannelDeleted):
                self._watched.setdefault(job.job_id, watched)  # for the retry, and its pointer
            raise
        self._posting_shown.pop(job.job_id, None)
        progress_id = placed.progress_id
        if placed.pointer is None or progress_id is None or job.guild_id is None:
            return placed.message_id, None
        assert job.channel_id is not None  # a progress message is the channel path's
        return placed.message_id, Pointer(job.guild_id, job.channel_id, progress_id, placed.pointer)

    async def _posted(
        self, job: FinishedJob, png: bytes | None, watched: _Watched | None
    ) -> _Placed:
        """``_post_result``'s post (``watched``: the progress message this run of Easel
        edited; None after a restart): where it went. Private under its maker's setting of
        now (``/settings private_results``): a job submitted in the open goes to them alone
        once they asked for that, its public response showing nothing of it, and is journaled
        private before it is posted (the setting's save did that unless the job was journaled
        after it); one private once stays so."""
        # The interaction's response is in the channel: submitted in the open.
        response_public = not job.private or job.private_since_submit
        private = job.private or await self._private_now(job)
        if private and not job.private and self.history is not None:
            await self.history.made_private(job.job_id)
        progress_deleted = watched is not None and watched.deleted
        # Spelled out, not left to the client's default: only the maker is ever notified.
        mentions = discord.AllowedMentions(
            everyone=False, roles=False, replied_user=False, users=[discord.Object(job.user_id)]
        )
        view: discord.ui.View | None = None
        described = ""  # no picture: nothing to describe
        if png is not None:
            content = caption(job)
            # A comparison's cells are not a grid of choices: Delete alone under it.
            comparison = is_comparison(job.request)
            described = result_description(job.job_id, len(job.images), comparison=comparison)
            view = (
                copy_view(job.job_id)
                if comparison
                else job_view(job.job_id, job.request, len(job.images))
            )
        elif job.error == "cancelled":
            content = await self._cancelled(job)
        else:
            # The reason may quote what the member typed: escaped and bounded like a prompt.
            # A failure's reason names the job as its reference already: said once.
            reason = quoted(job.error or "", MAX_CAPTION)
            named = "" if job.job_id in reason else f" (job `{job.job_id}`)"
            content = f"<@{job.user_id}> ❌ {reason}{named}"
        # Fitted to each place it goes: the interaction's, the server's or a DM's upload limit.
        post = ResultPost(job.job_id, content, png, job.spoiler, described)
        if self._token_alive(job):
            if progress_deleted and response_public:
                # A progress edit found it deleted: not edited again. Judged again (a channel
                # deletion that edit learned of is remembered).
                raise await self._message_deleted(job, _response_known(job, watched))
            try:
                if private and response_public:  # made private since its submit
                    await self._followed_up_privately(job, post, view)
                    return _Placed(PRIVATELY)
                edited = await post.send(
                    job.filesize_limit or SMALLEST_UPLOAD_LIMIT,
                    lambda text, files: self._webhook(job).edit_message(
                        ORIGINAL_RESPONSE,
                        content=text,
                        attachments=files,
                        allowed_mentions=mentions,
                        view=view,
                    ),
                )
                # A private result's original response is ephemeral: in no channel.
                return _Placed(PRIVATELY if private else edited.id)
            except discord.HTTPException as error:
                if error.code == UNKNOWN_CHANNEL:
                    raise _ChannelDeleted from error
                if error.code == UNKNOWN_MESSAGE and response_public:
                    # The token lives, the message does not: deleted in the channel, or with it.
                    raise await self._message_deleted(job, _response_known(job, watched)) from error
                # Clocks disagree, a private response is gone, its thread is archived (an
                # edit there is refused; a post unarchives it), or Discord refused the edit
                # (403): post it as a message instead, in the channel or else by DM, as where
                # Easel may not post.
                if (
                    not _token_gone(error)
                    and error.code != THREAD_ARCHIVED
                    and not isinstance(error, discord.Forbidden)
                ):
                    raise
                log.warning(
                    "job %s: the interaction's response cannot be edited (%s); posting it",
                    job.job_id,
                    error,
                )
        if private:  # never the channel: the member asked to see it alone
            sent_to = await self._post_directly(job, post, mentions, view)
            placed = None if sent_to is None else PRIVATELY
            if not response_public:
                return _Placed(placed)
            # Made private since: its public progress message says so, showing nothing of it.
            went = _went_privately(job, delivered=sent_to is not None)
            return _Placed(placed, went, _progress_message(job, watched))
        if job.channel_id is None:
            return _Placed(None)
        channel = self._client.get_partial_messageable(job.channel_id)
        progress_id = _progress_message(job, watched)
        read_without_it: set[int] = set()
        deleted: set[int] = set()
        try:
            posted = await earlier_post(self._client, channel, job, read_without_it, deleted)
            if progress_id in deleted:
                # Gone, its deletion perhaps unheard (made while Easel was offline, after a
                # try): judged as a live token's edit judges it, before anything is posted.
                raise await self._message_deleted(job, progress_id)
            shows_no_outcome = job.job_id in self._posting_shown or (
                progress_id is not None and _shows_no_outcome(job, progress_id, read_without_it)
            )
            if progress_id is not None and not shows_no_outcome:
                log.info(
                    "job %s: its progress message is left as it was (an earlier try's edit may "
                    "have made it the outcome, and it was not read)",
                    job.job_id,
                )
                progress_id = None
            if posted is None:
                if watched is None and progress_id is not None:
                    await self._show_ended(job, channel, progress_id)
                posted = await post.send(
                    channel_upload_limit(self._client, job.guild_id),
                    lambda text, files: self._post(channel, job, text, files, mentions, view),
                )
        except discord.NotFound as error:
            if error.code == UNKNOWN_CHANNEL:
                raise _ChannelDeleted from error
            raise
        except discord.HTTPException as error:
            # The bot may not post there (any more), or the thread is locked and archived: the
            # member gets it in a direct message.
            if not isinstance(error, discord.Forbidden) and error.code != THREAD_ARCHIVED:
                raise
            log.warning("job %s: cannot post in the channel (%s); sending a DM", job.job_id, error)
            sent_to = await self._post_directly(job, post, mentions, view)
            # An interaction's answer needs no Send Messages: /show posts it here.
            went = (
                f"its result went to its maker's direct messages: {sent_to}"
                if sent_to is not None
                else f"Easel may not post its result here; `/show {job.job_id}` here brings it back"
            )
            placed = None if sent_to is None else PRIVATELY
            return _Placed(placed, f"Job `{job.job_id}` ended; {went}", progress_id)
        link = f"https://discord.com/channels/{job.guild_id}/{job.channel_id}/{posted}"
        pointer = f"Job `{job.job_id}` ended; its result is posted here: {link}"
        return _Placed(posted, pointer, progress_id)

    async def _followed_up_privately(
        self, job: FinishedJob, post: ResultPost, view: discord.ui.View | None
    ) -> None:
        """A job made private since its submit, while its token lives: its public response
        says that it ended and that its result is being sent to its maker (its preview, prompt
        and Cancel gone), then the result goes to them alone, as an ephemeral follow-up, and
        only once it went does the response say so (a send that fails leaves it saying what
        is still true, until a later try, or the direct message tried next, says where the
        result went). Raises as
        the first edit and the send do (a deleted response: Unknown Message, before anything
        is sent); the last edit's failure is logged only: the result is delivered."""
        webhook = self._webhook(job)
        mentions = discord.AllowedMentions.none()
        await webhook.edit_message(
            ORIGINAL_RESPONSE,
            content=_went_privately(job, delivered=None),
            attachments=[],
            allowed_mentions=mentions,
            view=None,
        )
        # A new message, not an edit of the public response, and webhooks take no nonce: one
        # Discord posted and answered 5xx, sent again by discord.py, reaches the member twice
        # (to them alone; docs/security.md, AUD8 L5).
        await post.send(
            job.filesize_limit or SMALLEST_UPLOAD_LIMIT,
            lambda text, files: webhook.send(
                text,
                files=files,
                ephemeral=True,
                allowed_mentions=mentions,
                view=view or discord.utils.MISSING,
                wait=True,
            ),
        )
        try:
            await webhook.edit_message(
                ORIGINAL_RESPONSE, content=_went_privately(job), allowed_mentions=mentions
            )
        except DISCORD_FAILED as failed:
            log.warning(
                "job %s: its response was not told where its result went (%s)", job.job_id, failed
            )

    async def _show_ended(
        self, job: FinishedJob, channel: discord.PartialMessageable, progress_id: int
    ) -> None:
        """Before a restart's delivery posts in the channel: the job's progress message, which
        only the journal knows now, says that it ended, its Cancel gone. A deletion of it that
        Easel did not hear (made while Easel was offline) is learned here, before the outcome
        is public, and raised as a live token's edit raises it (``_message_deleted``): nothing
        is posted. Other failures leave it as it was (the pointer is tried after the post)."""
        posting = f"Job `{job.job_id}` ended; posting…"
        try:
            await self._edit_progress_message(channel, progress_id, posting)
            # Not while its token lives: a retry's edit through it may land there.
            if job.guild_id is not None and not self._token_alive(job):
                shown = Pointer(job.guild_id, channel.id, progress_id, posting)
                self._posting_shown[job.job_id] = shown
        except discord.NotFound as error:
            if error.code == UNKNOWN_CHANNEL:
                raise _ChannelDeleted from error
            if error.code == UNKNOWN_MESSAGE:
                raise await self._message_deleted(job, progress_id) from error
            log.warning("job %s: its progress message stays as it was (%s)", job.job_id, error)
        except (discord.HTTPException, TimeoutError) as error:
            log.warning("job %s: its progress message stays as it was (%s)", job.job_id, error)

    async def _message_deleted(
        self, job: FinishedJob, message_id: int | None
    ) -> _ProgressDeleted | _ChannelDeleted:
        """The job's public message ``message_id`` (None: not known) is gone: with its channel
        or thread, or alone
        (``_went_with_its_channel``, as a progress edit asks it). A lookup Discord did not
        answer decides nothing: ``TimeoutError``, so the delivery is tried again (a failure that
        may pass), never read as a moderator's deletion that withdraws the job's twins."""
        went_with_its_channel = await self._went_with_its_channel(
            job.job_id, job.guild_id, job.channel_id
        )
        if went_with_its_channel is None:
            raise TimeoutError(f"job {job.job_id}: its channel's lookup was not answered")
        if went_with_its_channel:
            return _ChannelDeleted()
        return _ProgressDeleted(message_id)

    async def _post_directly(
        self,
        job: FinishedJob,
        post: ResultPost,
        mentions: discord.AllowedMentions,
        view: discord.ui.View | None,
    ) -> str | None:
        """Post in the member's direct messages; when those are closed to the bot, nowhere
        (logged: `/show` still brings the result back; not one made in a thread hidden from
        Easel, whose result is then ``_NowhereToBeHad``). A server's job gets no buttons
        there, since a click outside its server is refused (one made in a thread hidden from
        Easel is told that they and /show work there once Easel is added to it). A job whose
        pictures stay in the server gets a notice there instead, which shows nothing of the
        job (one of a hidden thread whose notice did not go either: ``_NowhereToBeHad``). The
        link to the post (None: not posted there)."""
        kept_because = await self._why_kept_in_the_server(job)
        if kept_in_the_server(kept_because):
            assert kept_because is not None  # kept for a reason
            log.warning(
                "job %s: %s; only a notice sent to direct messages (`/show` in an "
                "age-restricted channel of the server brings it back)",
                job.job_id,
                kept_because,
            )
            told = await self._notify_directly(job, kept_because)
            if not told and kept_because == HIDDEN_AGE_RESTRICTED and post.png is not None:
                raise _NowhereToBeHad  # no notice of it went either: nothing brings it back
            return None  # the result itself was posted nowhere
        if kept_because == EASEL_CANNOT_SEE:
            # Its maker's own picture, made outside an age-restricted channel: this copy is
            # the one they can have until Easel is added to that thread.
            log.warning("job %s: %s; sent to direct messages", job.job_id, EASEL_CANNOT_SEE)
        if job.guild_id is not None and view is not None:
            view = None
            there = _UNSEEN_THERE if kept_because == EASEL_CANNOT_SEE else _BUTTONS_THERE
            post = post.noted(f"\n{there.format(job.job_id)}")

        async def post_there(direct: discord.DMChannel) -> str:
            # A try that landed there may have lost its answer, as in a channel.
            if (posted := await earlier_post(self._client, direct, job)) is None:
                posted = await post.send(
                    DIRECT_MESSAGE_UPLOAD_LIMIT,
                    lambda text, files: self._post(direct, job, text, files, mentions, view),
                )
            # A server's job: a moderator's withdrawal deletes it there too.
            copied = PostedMessage(direct.id, posted)
            delete = direct.get_partial_message(posted).delete
            await link_copy(self.history, job.job_id, job.guild_id, copied, delete)
            return f"https://discord.com/channels/@me/{direct.id}/{posted}"

        link = await in_direct_messages(self._client, job.user_id, post_there)
        if link is None:
            _log_direct_messages_closed(job)
            if kept_because == EASEL_CANNOT_SEE and post.png is not None:
                raise _NowhereToBeHad
        return link

    async def _notify_directly(self, job: FinishedJob, kept_because: str) -> bool:
        """Tell the member by DM that a job kept in its server has ended: no picture, prompt
        or reason, only its id and where to see it; whether it went."""
        assert job.guild_id is not None  # a job of direct messages is kept nowhere
        guild = self._guild_of(job)
        server = await self._server_name(job.guild_id)  # asked of Discord before READY
        # An age-restricted channel only where the server keeps the picture in one: not for a
        # channel Discord did not describe, nor a server Easel no longer sees.
        show_where = (
            "in an age-restricted channel of the server"
            if guild is not None and kept_because in (MADE_AGE_RESTRICTED, AGE_RESTRICTED_THERE)
            else "there"
        )
        if job.succeeded and await self._hidden_from_easel(job, guild, kept_because):
            # /show refuses a job of a channel Easel cannot see, wherever it is asked.
            notice = (
                f"Your job `{job.job_id}` in {server} is ready, but Easel cannot see the thread "
                f"it was made in: add Easel to that thread, then `/show {job.job_id}` there "
                "brings it back."
            )
        elif job.succeeded:
            notice = (
                f"Your job `{job.job_id}` in {server} is ready; `/show {job.job_id}` "
                f"{show_where} brings it back."
            )
        else:
            ended = "was cancelled" if job.error == "cancelled" else "failed"
            notice = f"Your job `{job.job_id}` in {server} {ended}; `/history` there lists it."
        return await self._tell_maker(job, notice)

    async def _hidden_from_easel(
        self, job: FinishedJob, guild: discord.Guild | None, kept_because: str
    ) -> bool:
        """Whether Discord hides the job's channel from Easel (asked of it when the cache
        lacks it); not when it does not answer, nor asked again when it answered, or did not,
        ``why_kept_in_the_server`` (``kept_because``) a moment ago."""
        if guild is None or job.guild_id is None or job.channel_id is None:
            return False
        if kept_because == HIDDEN_AGE_RESTRICTED:
            return True
        if kept_because in (AGE_RESTRICTED_THERE, CHANNEL_UNCHECKED):
            return False  # Discord showed Easel the channel (or that it is gone), or did not answer
        with contextlib.suppress(*CHANNEL_CHECK_FAILED):
            try:
                await guild_channel(
                    self._client, guild, job.guild_id, job.channel_id, CHANNEL_CHECK_TIMEOUT_S
                )
            except HiddenFromEasel:
                return True
        return False

    def _guild_of(self, job: FinishedJob) -> discord.Guild | None:
        return None if job.guild_id is None else self._client.get_guild(job.guild_id)

    async def _tell_maker(self, job: FinishedJob, notice: str) -> bool:
        """``notice`` to the job's maker by DM (the job id as its nonce); whether it went (their
        DMs closed: logged)."""

        async def send(direct: discord.DMChannel) -> discord.Message:
            return await direct.send(
                notice, allowed_mentions=discord.AllowedMentions.none(), nonce=job.job_id
            )

        if await in_direct_messages(self._client, job.user_id, send) is None:
            _log_direct_messages_closed(job)
            return False
        return True

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
