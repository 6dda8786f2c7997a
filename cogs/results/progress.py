"""A job's progress before its result: the queue position (shown again as it moves, at a low
rate), then the percent with the newest preview, edited into the interaction's response at most
once per interval, with Cancel. Once its token ends, a public message's place is still shown
again through its channel (after a restart too), while Discord allows edits of it, and a
private one says first that its place is shown no more. A public progress message is one of
its job's posts (``History.result_posted``): deleting it withdraws the job, and its result
is posted nowhere; one gone with its channel or thread withdraws what that deletion withdraws
(``ProgressMessages._went_with_its_channel``)."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

import discord

from bot.alt_text import PREVIEW_DESCRIPTION
from bot.engines import PROGRESS_EDIT_INTERVAL_S
from bot.history import History
from bot.jobs.queue import JobState
from bot.policy.delivery import PreviewShown, preview_shown
from bot.policy.guild import GuildPolicy, NsfwPolicy
from bot.policy.member_settings import MemberSettings
from cogs.common import ORIGINAL_RESPONSE, queue_of
from cogs.contexts import received_at
from cogs.results.buttons import UNKNOWN_CHANNEL, CancelButton
from cogs.visibility import is_age_restricted
from cogs.withdrawals import UNKNOWN_MESSAGE
from cogs.wording import STOPPING_BESIDE_OTHERS
from inference.types import StepProgress

log = logging.getLogger(__name__)

# Discord accepts edits through an interaction token for 15 minutes; leave a safety margin.
INTERACTION_TOKEN_LIFETIME_S = 14 * 60
# A receipt is kept this long, past its job's delivery (a /forget-me's retraction of the post
# judges its token after it): one number a job, so that no other's prunes a live one.
RECEIPTS_KEPT_S = 24 * 3600.0
_UNFINISHED = frozenset({"queued", "running"})
# Asking Discord about a job's channel (still there, age-restricted) for a delivery or a
# progress edit: no click waits on it.
CHANNEL_CHECK_TIMEOUT_S = 10.0
# A queued job's place is looked at again this often while its token lives, and shown again
# when it moved by PLACE_MOVE_SHOWN of itself or more, or came into or left the counted
# places, or when its wait did, at the same place too (by PLACE_MOVE_SHOWN of itself, or into
# another minute: the jobs ahead ran longer or shorter than estimated); at most
# PLACE_EDITS_PER_S such edits go out a second across the bot, so a deep queue never floods
# Discord (those left over go first a second later).
PLACE_REFRESH_S = 60.0
PLACE_MOVE_SHOWN = 0.1
PLACE_EDITS_PER_S = 5
# A private (ephemeral) place message can be edited only through its token: this long before
# the token ends, its last edit says that its place is shown no more, and where the result goes.
PLACE_LAST_WORD_S = 60.0
# Place edits through a channel (past their tokens), at most one per CHANNEL_PLACE_EDIT_GAP_S
# in each channel, within PLACE_EDITS_PER_S: the bot's budget never lands on one channel's
# bucket, where it would hold a delivery's edits behind 429s. None once the message is
# CHANNEL_PLACE_EDITS_UNTIL_AGE_S old: Discord allows few edits of a message older than an
# hour (refusing more with OLD_MESSAGE_EDITS_SPENT, which stops them too), which the pointer
# to its result keeps for itself.
CHANNEL_PLACE_EDIT_GAP_S = 1.0
# uvloop's timers may wake a pass a fraction of a millisecond before the gap has passed.
_TIMER_SLACK_S = 0.05
CHANNEL_PLACE_EDITS_UNTIL_AGE_S = 50 * 60
OLD_MESSAGE_EDITS_SPENT = 30046


@dataclass(frozen=True)
class Pointer:
    """A job's public progress message in its server's channel (``progress_id``), and what
    it says once the job's outcome went elsewhere (``ProgressMessages.point_to_result``)."""

    guild_id: int
    channel_id: int
    progress_id: int
    text: str


class ProgressMessages:
    """The queue's progress listener: the queue position and then the progress of each job
    whose response is still editable, one edit at a time."""

    def __init__(
        self,
        client: discord.Client,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        # The tokens of this run's interactions are judged on the monotonic clock from their
        # receipt (``_received_at``): a host's wall clock set wrong would judge them dead from
        # the start, or alive past their end; a restored one's on the wall clock, the one its
        # journal knows. A test moves both with Discord's (``monotonic`` drives the edits'
        # pacing too).
        self.wall_clock = wall_clock
        self.monotonic = monotonic
        # When this process received each job's interaction, RECEIPTS_KEPT_S at most.
        self._received_at: dict[str, float] = {}
        self._watched: dict[str, _Watched] = {}
        # The pointer edits in flight (``point_to_result``), kept from the garbage collector.
        self._pointers: set[asyncio.Task[None]] = set()
        # Set by the composition root: where a job's public messages are recorded (unset:
        # nowhere, and deleting one withdraws nothing).
        self.history: History | None = None
        # Set by the composition root: whose results are private or also go to their direct
        # messages, and the servers' rules (unset: previews follow their submit's alone, and
        # no server's job goes to direct messages).
        self.member_settings: MemberSettings | None = None
        self.guild_policy: GuildPolicy | None = None
        self.place_refresh_s = PLACE_REFRESH_S  # a test may lower it
        # Shows queued jobs' places again while any is shown (``_refresh_places``).
        self._place_refresh: asyncio.Task[None] | None = None
        self._closed = False  # no refresh starts after ``close``
        # When each channel's latest place edit through it went out (``_show_places_again``),
        # for CHANNEL_PLACE_EDIT_GAP_S.
        self._channel_edited_at: dict[int, float] = {}

    async def show_queued(
        self, job_id: str, interaction: discord.Interaction[Any], *, spoiler: bool, private: bool
    ) -> None:
        """Replace "thinking…" with the queue position (or "Rendering") and a Cancel button,
        then follow progress (previews spoilered like the result, or hidden, under the rules
        of now: ``_previews_now``; a ``private`` job's response is ephemeral, so are they).
        Returns once "thinking…" is replaced: Discord turns the first follow-up of a deferred
        response into that response, so a private follow-up sent before (a --repeat's notice)
        would have taken its place, publicly."""
        self._received(job_id, interaction)  # before any wait: its delivery may judge the token
        shown_now = await self._previews_now(job_id, interaction, private=private)
        state = await queue_of(interaction).state(job_id)
        # No await between this check and the registration: deliver() either already ran
        # (the job has ended, nothing to follow) or will find the entry and wait for our edit.
        if state is None or state.status not in _UNFINISHED:
            return
        created_at = interaction.created_at.timestamp()
        guild_id, channel_id = interaction.guild_id, interaction.channel_id

        async def deleted(message_id: int | None) -> None:
            if not private and guild_id is not None:  # one dismissed privately withdraws nothing
                await self._progress_gone(job_id, guild_id, channel_id, message_id)

        async def landed(progress: discord.WebhookMessage) -> None:
            # Whichever edit lands first (a failed first one leaves "thinking…" until a later
            # one or ``replace_thinking``): a public one is the job's post from then on.
            # Still there: /forget-me erases nothing while one of its maker's jobs is unfinished.
            if self.history is not None and not progress.flags.ephemeral:
                await self.history.result_posted(job_id, guild_id, channel_id, progress.id)

        watched = _Watched(
            interaction.followup,
            lambda: self._alive(job_id, created_at),
            spoiler,
            on_deleted=deleted,
            on_landed=landed,
            shown_now=shown_now,
            channel=None if channel_id is None else self._channel(channel_id),
            last_minute=self._last_minute(job_id, created_at) if private else None,
            wall_clock=lambda: self.wall_clock(),
        )
        self._watched[job_id] = watched
        if state.position is None:  # already rendering: progress edits follow
            watched.schedule(RENDERING, _cancel_view(job_id))
        else:
            watched.schedule(queued_text(state), _cancel_view(job_id))
            watched.place_shown = state
        if private or state.position is not None:  # a private one's last word comes from there
            self._follow_places(queue_of(interaction).queued_places)
        watched.last_edit = watched.place_checked_at = self.monotonic()
        # Not ``settle``: while Discord is slow, ticks keep the edits going until the render's end.
        await watched.first_edit_done.wait()

    async def _previews_now(
        self, job_id: str, interaction: discord.Interaction[Any], *, private: bool
    ) -> Callable[[], Awaitable[PreviewShown]] | None:
        """How a server's job's previews may be shown, read again at each edit from the
        settings kept in memory (``preview_shown``): its server's NSFW policy and banned words
        (those of now against those of its submit), and whether the job, whose response is
        public, was made private since by its maker's /settings (for good: seen once, kept).
        None: no server's rules apply (direct messages, or none known)."""
        policy, members, guild_id = self.guild_policy, self.member_settings, interaction.guild_id
        if policy is None or guild_id is None:
            return None
        user_id = interaction.user.id
        banned_at_submit = await policy.banned_words_where(guild_id)
        made_age_restricted = is_age_restricted(interaction.channel)
        history = self.history

        async def made_private() -> bool:
            # Their setting of now (memory), else the job's stored privacy (one read): private
            # results turned on and off again between two edits made it private all the same.
            if members is not None and (await members.get(user_id)).private_results:
                return True
            return history is not None and await history.is_private(job_id)

        private_since = False

        async def now() -> PreviewShown:
            nonlocal private_since
            private_since = private_since or (not private and await made_private())
            return preview_shown(
                nsfw_policy=NsfwPolicy((await policy.settings(guild_id)).nsfw_policy),
                made_age_restricted=made_age_restricted,
                banned_since=not await policy.banned_words_where(guild_id) <= banned_at_submit,
                private_since=private_since,
            )

        return now

    async def replace_thinking(self, job_id: str) -> bool:
        """Whether the job's reply shows its place or progress: when none of its edits landed
        yet (a failed first edit leaves "thinking…" until the render's progress), its newest
        text is sent again, through its one-at-a-time edits, and waited for. False also when
        the job is not followed here, or ended (its delivery edits the reply, or a retry of it
        will: "Queued" and Cancel would replace its outcome)."""
        watched = self._watched.get(job_id)
        if watched is None or watched.ended:
            return False
        if watched.message is None:
            watched.send_again()
            await watched.settle()
        return watched.message is not None

    async def _progress_gone(
        self, job_id: str, guild_id: int, channel_id: int | None, message_id: int | None
    ) -> None:
        """An edit of the job's public progress message ``message_id`` (None: not known,
        "thinking…"), while its token lives, found it gone from its server's channel: with
        that channel or thread, the job goes as its deletion withdraws the jobs there
        (refunded, no twin; Easel may not have heard of it yet, or ever: a channel hidden from
        Easel), else as its message's deletion withdraws it. When Discord does not say which,
        nothing is withdrawn here: its delivery asks again."""
        went_with_its_channel = await self._went_with_its_channel(job_id, guild_id, channel_id)
        if went_with_its_channel is None:
            return
        if went_with_its_channel:
            for withdrawn in await self._channel_deleted(guild_id, channel_id):
                log.info("job %s withdrawn: its channel was deleted in Discord", withdrawn)
        else:
            await self._progress_deleted(job_id, guild_id, channel_id, message_id)

    async def _progress_deleted(
        self, job_id: str, guild_id: int | None, channel_id: int | None, message_id: int | None
    ) -> None:
        """The job's public progress message ``message_id`` (None: not known) was deleted
        alone (``_went_with_its_channel``): the job is withdrawn as Easel hearing of that
        deletion withdraws it, its post unlinked (``History.withdraw_job``), and by its id
        where it was not recorded as its post (deleted before its first edit: "thinking…")."""
        if self.history is None:
            return
        deleted = None
        if guild_id is not None and channel_id is not None and message_id is not None:
            deleted = guild_id, channel_id, message_id
        for withdrawn in await self.history.withdraw_job(job_id, deleted):
            log.info("job %s withdrawn: its progress message was deleted in Discord", withdrawn)

    async def _went_with_its_channel(
        self, job_id: str, guild_id: int | None, channel_id: int | None
    ) -> bool | None:
        """The job's public message in a server is gone (Unknown Message): whether it went with
        its channel or thread (that or the thread's channel deleted lately as Easel heard it,
        or Discord answers Unknown Channel), which withdraws no twin and is refunded, rather
        than alone (a moderator's or its maker's deletion: the channel is there, or hidden
        from Easel). None: Discord did not answer (an error, or none in time): a progress edit
        decides nothing, and a delivery is tried again.
        The one judge of both, for a progress edit and for a delivery."""
        if guild_id is None or channel_id is None:
            return False
        if self.history is not None and self.history.channel_deleted_lately(guild_id, channel_id):
            return True
        try:
            async with asyncio.timeout(CHANNEL_CHECK_TIMEOUT_S):
                await self._client.fetch_channel(channel_id)
        except discord.NotFound as error:
            return error.code == UNKNOWN_CHANNEL
        except discord.Forbidden:  # an answer: the channel is there, hidden from Easel
            return False
        except (discord.HTTPException, TimeoutError) as error:
            log.warning("job %s: its channel was not read (%s)", job_id, error)
            return None
        return False

    async def _channel_deleted(self, guild_id: int | None, channel_id: int | None) -> list[str]:
        """The channel or thread a job was made in is gone: the jobs posted or made there are
        withdrawn (returned) as its deletion's event withdraws them, stopped and refunded if
        unfinished (``History.withdraw_deleted_channel``)."""
        if self.history is None or guild_id is None or channel_id is None:
            return []
        return await self.history.withdraw_deleted_channel(guild_id, channel_id)

    def progress(self, job_id: str, step: StepProgress) -> None:
        """The queue's progress listener: at most one edit per interval per job, while its
        token lives, and until a private one said its last word; in its token's last minute,
        each says that it stops showing soon (``_last_word``)."""
        watched = self._watched.get(job_id)
        if watched is None or watched.last_word_said or not watched.token_alive():
            return
        if step.preview is not None:
            watched.preview = step.preview  # shown with the next edit
        now = self.monotonic()
        if now - watched.last_edit < PROGRESS_EDIT_INTERVAL_S:
            return
        watched.last_edit = now
        text = f"🎨 Rendering — {step.fraction:.0%} (step {step.step}/{step.total_steps})."
        if watched.last_word_due():
            watched.show_progress_ends(
                watched.last_word(job_id, text, PROGRESS_ENDS_SOON), _cancel_view(job_id)
            )
        else:
            watched.place_shown = None
            watched.schedule(text, _cancel_view(job_id))

    def stopped_in_batch(self, job_id: str, charged: bool) -> None:
        """The queue's stopped listener: the job was stopped while its batch renders on for
        others' pictures (``CancelOutcome.STOPPED_IN_BATCH``). Its message says so at once,
        its preview and its Cancel gone, and shows no more progress; the notice of its end
        follows as soon as that end is written (``JobQueue._stopped_in_batch``), not once the
        batch ends."""
        watched = self._watched.get(job_id)
        if watched is None or not watched.editable():
            return
        watched.previews_stopped = True
        watched.say_last_word(
            STOPPED_IN_BATCH if charged else STOPPED_FREE, discord.ui.View(timeout=None)
        )

    def point_to_result(self, job_id: str, pointer: Pointer) -> None:
        """The job's outcome went elsewhere than its public progress message (a new message
        in the channel: its token expired first; the member's direct messages: the channel
        refused it): that message, still "Queued" or "Rendering" with a live Cancel, says
        where instead, in the background (cosmetic: the delivery waits for none of it)."""
        task = asyncio.ensure_future(self._point_to_result_logged(job_id, pointer))
        self._pointers.add(task)
        task.add_done_callback(self._pointers.discard)

    async def _point_to_result(self, job_id: str, pointer: Pointer) -> None:
        """Tried once."""
        channel = self._client.get_partial_messageable(pointer.channel_id)
        try:
            await self._edit_progress_message(channel, pointer.progress_id, pointer.text)
        except (discord.HTTPException, TimeoutError) as error:  # extra: the outcome went out
            log.warning("job %s: its progress message stays as it was (%s)", job_id, error)
            if isinstance(error, discord.NotFound) and error.code == UNKNOWN_MESSAGE:
                # Deleted, as a progress edit would have found it (its event may be lost).
                await self._progress_gone(
                    job_id, pointer.guild_id, pointer.channel_id, pointer.progress_id
                )

    @staticmethod
    async def _edit_progress_message(
        channel: discord.PartialMessageable,
        progress_id: int,
        text: str,
        view: discord.ui.View | None = None,
    ) -> None:
        """``text`` in place of the public progress message ``progress_id``, its preview gone,
        and its Cancel unless ``view`` is given: through the channel, as a bot may edit its
        public interaction responses once their token expired (a restart's delivery knows no
        other way). Raises as the edit does, or ``TimeoutError`` when Discord does not answer
        in time."""
        async with asyncio.timeout(CHANNEL_CHECK_TIMEOUT_S):
            await channel.get_partial_message(progress_id).edit(
                content=text,
                attachments=[],
                view=view,
                allowed_mentions=discord.AllowedMentions.none(),
            )

    async def _point_to_result_logged(self, job_id: str, pointer: Pointer) -> None:
        """``_point_to_result``, whose other errors (a refused withdrawal write, a closed
        session) are logged with the job, not left to asyncio's "never retrieved"."""
        try:
            await self._point_to_result(job_id, pointer)
        except Exception:
            log.exception("job %s: its progress message could not point to its result", job_id)

    def follow_restored(
        self,
        posts: Collection[tuple[str, int, int]],
        queued_places: Callable[[Collection[str]], dict[str, JobState]],
        private_tokens: Collection[tuple[str, int, str, float]] = (),
    ) -> None:
        """After a restart: the public progress messages of the jobs restored queued (job,
        channel, message: ``JobQueue.queued_progress_posts``) show their places again as they
        move, edited through their channels (the tokens were the last run's): from the place
        each has now, the first edit when it moves enough, as for any other. Not those no
        longer queued (rendering, ended meanwhile, or waiting for Discord's answer about their
        maker): nothing follows them after now. A private job's message can be edited through
        its token alone (``private_tokens``: job, application, token, when made, from
        ``JobQueue.queued_private_tokens``): one still alive on the wall clock, the one the
        journal knows, is followed as this run's, and says its last word (``_last_word``); the
        last run's said it, or froze."""
        places = queued_places([*(job_id for job_id, *_ in posts), *(t[0] for t in private_tokens)])
        restored: dict[str, _Watched] = {}
        for job_id, channel_id, message_id in posts:
            restored[job_id] = _Watched.restored(
                message_id, self._channel(channel_id), wall_clock=lambda: self.wall_clock()
            )
        for job_id, application_id, token, created_at in private_tokens:
            if self._alive(job_id, created_at):
                restored[job_id] = self._restored_privately(
                    job_id, interaction_webhook(self._client, application_id, token), created_at
                )
        followed = False
        for job_id, watched in restored.items():
            state = places.get(job_id)
            if state is None or job_id in self._watched:
                continue
            watched.place_shown = state
            watched.first_edit_done.set()  # no "thinking…" to replace
            self._watched[job_id] = watched
            followed = True
        if followed:
            self._follow_places(queued_places)

    def _restored_privately(
        self, job_id: str, webhook: discord.Webhook, created_at: float
    ) -> _Watched:
        """A private job's place as a restart found it, edited through its token (made at
        ``created_at``), which the wall clock judges (no receipt of this run's)."""
        watched = _Watched(
            webhook,
            lambda: self._alive(job_id, created_at),
            False,
            on_deleted=_nothing,  # one dismissed privately withdraws nothing
            on_landed=_landed_nowhere,
            last_minute=self._last_minute(job_id, created_at),
            wall_clock=lambda: self.wall_clock(),
        )
        # The rules its previews were shown under are the last run's: none is shown.
        watched.previews_stopped = True
        return watched

    def _follow_places(
        self, queued_places: Callable[[Collection[str]], dict[str, JobState]]
    ) -> None:
        """Show queued jobs' places again as they move (``_refresh_places``), unless already
        or closed (a command still being answered during the stop may show a place)."""
        if self._closed:
            return
        if self._place_refresh is None or self._place_refresh.done():
            self._place_refresh = asyncio.ensure_future(self._refresh_places(queued_places))

    async def _refresh_places(
        self, queued_places: Callable[[Collection[str]], dict[str, JobState]]
    ) -> None:
        """Show queued jobs' places again (``_show_places_again``) every second at most, at
        most PLACE_EDITS_PER_S edits a second; ends once no live message shows a place."""
        while True:
            tick_s = min(1.0, self.place_refresh_s)
            await asyncio.sleep(tick_s)
            edits_allowed = max(1, round(PLACE_EDITS_PER_S * tick_s))
            try:
                if not self._show_places_again(queued_places, edits_allowed):
                    return
            except Exception:  # cosmetic: the next queued job shown starts them again
                log.exception("queued jobs' places are shown again no more")
                return

    def _show_places_again(
        self, queued_places: Callable[[Collection[str]], dict[str, JobState]], edits_allowed: int
    ) -> bool:
        """The queued jobs whose place was last looked at ``place_refresh_s`` ago or more,
        while their message may be edited (``_Watched.editable``), are looked at again, in one
        fair order for all (``JobQueue.queued_places``), the longest unlooked at first; up to
        ``edits_allowed`` of those that moved enough (``_moved_enough``) are shown again, one
        per channel per CHANNEL_PLACE_EDIT_GAP_S of those edited through their channel, the
        rest first next time. Private messages whose token ends soon go first, with their last
        word (``_last_word``), looked at whenever: a queued one's place, said last; a rendering
        one's progress, which goes on with the same tail (``progress``) until its token ends.
        Whether an editable message shows a place, or is private and has not said that yet."""
        editable = [
            (job_id, watched) for job_id, watched in self._watched.items() if watched.editable()
        ]
        showing = [item for item in editable if item[1].place_shown is not None]
        now = self.monotonic()
        ending = [
            item
            for item in editable
            if item[1].last_word_due()
            and (not item[1].progress_ends_shown or item[1].place_shown is not None)
        ]
        ending_ids = {job_id for job_id, _ in ending}
        due = sorted(
            (
                item
                for item in showing
                if now - item[1].place_checked_at >= self.place_refresh_s
                and item[0] not in ending_ids
            ),
            key=lambda item: item[1].place_checked_at,
        )
        looked_at = [job_id for job_id, _ in [*ending, *due]]
        places = queued_places(looked_at) if looked_at else {}
        for job_id, watched in ending[:edits_allowed]:
            edits_allowed -= 1
            if (state := places.get(job_id)) is not None:
                last = watched.last_word(job_id, queued_text(state), PLACE_SHOWN_NO_MORE)
                watched.say_last_word(last, _cancel_view(job_id))
            else:  # out of the queue: rendering, or about to
                progress = watched.newest_text if watched.place_shown is None else None
                watched.show_progress_ends(
                    watched.last_word(job_id, progress or RENDERING, PROGRESS_ENDS_SOON),
                    _cancel_view(job_id),
                )
        self._channel_edited_at = {
            channel_id: at
            for channel_id, at in self._channel_edited_at.items()
            if now - at < CHANNEL_PLACE_EDIT_GAP_S - _TIMER_SLACK_S
        }
        for job_id, watched in due:
            state = places.get(job_id)
            if state is None:  # rendering, or held out of the queue: no place to show
                continue
            shown = watched.place_shown
            if shown is not None and _moved_enough(shown, state):
                if not edits_allowed:
                    break
                if (channel_id := watched.channel_to_edit()) is not None:
                    if channel_id in self._channel_edited_at:
                        continue  # its channel's turn comes: looked at first then
                    self._channel_edited_at[channel_id] = now
                edits_allowed -= 1
                watched.place_shown = state
                watched.schedule(queued_text(state), _cancel_view(job_id))
            watched.place_checked_at = now
        return bool(showing) or any(
            watched.has_last_word and not watched.progress_ends_shown for _, watched in editable
        )

    async def close(self) -> None:
        """Cancel the pointer edits in flight and the places' refresh, and wait for them: none
        may run once the client or the database closes."""
        self._closed = True
        tasks = [*self._pointers, *([self._place_refresh] if self._place_refresh else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _received(self, job_id: str, interaction: discord.Interaction[Any]) -> None:
        """Note when this process received the job's interaction (``received_at``; none:
        not from the gateway, judged on the wall clock), kept RECEIPTS_KEPT_S, past its
        delivery: a retraction of its post judges its token by it. Its defer was accepted, so
        Discord made it at most 3 s before: within the margin of INTERACTION_TOKEN_LIFETIME_S."""
        received = received_at(interaction)
        if received is None:
            return
        now = self.monotonic()
        # In the order received, near enough: the oldest first.
        while self._received_at:
            oldest, at = next(iter(self._received_at.items()))
            if now - at < RECEIPTS_KEPT_S:
                break
            del self._received_at[oldest]
        self._received_at[job_id] = received

    def _token_age_s(self, job_id: str, interaction_created_at: float) -> float:
        """How old the job's interaction token is (``token_age_s``): a restored job's on the
        wall clock."""
        return token_age_s(
            self._received_at.get(job_id), interaction_created_at, self.monotonic, self.wall_clock
        )

    def _alive(self, job_id: str, interaction_created_at: float) -> bool:
        return self._token_age_s(job_id, interaction_created_at) < INTERACTION_TOKEN_LIFETIME_S

    def token_alive_of(self, interaction: discord.Interaction[Any]) -> bool:
        """Whether Easel still answers through ``interaction``'s token (one of no job's: a
        /forget-me's), judged as a job's is, on these clocks (a test moves them)."""
        age_s = token_age_s(
            received_at(interaction),
            interaction.created_at.timestamp(),
            self.monotonic,
            self.wall_clock,
        )
        return age_s < INTERACTION_TOKEN_LIFETIME_S

    def _channel(self, channel_id: int) -> Callable[[], discord.PartialMessageable]:
        return lambda: self._client.get_partial_messageable(channel_id)

    def _token_ends_soon(self, job_id: str, interaction_created_at: float) -> bool:
        """Whether the token lives, for less than PLACE_LAST_WORD_S more."""
        age_s = self._token_age_s(job_id, interaction_created_at)
        return (
            INTERACTION_TOKEN_LIFETIME_S - PLACE_LAST_WORD_S <= age_s < INTERACTION_TOKEN_LIFETIME_S
        )

    def _last_minute(self, job_id: str, interaction_created_at: float) -> LastMinute:
        return LastMinute(
            lambda: self._token_ends_soon(job_id, interaction_created_at),
            interaction_created_at + INTERACTION_TOKEN_LIFETIME_S,
        )


def token_age_s(
    received: float | None,
    interaction_created_at: float,
    monotonic: Callable[[], float],
    wall_clock: Callable[[], float],
) -> float:
    """How old an interaction's token is: since this process ``received`` it, on the
    ``monotonic`` clock (a host's wall clock set wrong would judge it dead from the start, or
    alive past its end); else (None: not this run's) on the wall clock, from when Discord
    made it."""
    if received is not None:
        return monotonic() - received
    return wall_clock() - interaction_created_at


@dataclass(frozen=True)
class LastMinute:
    """A private message's token's last minute: whether it came (``due``, judged as its
    token is), and when the token ends by Discord's clock (``ends_at``: its interaction's
    time, from its snowflake, on), which its last word states."""

    due: Callable[[], bool]
    ends_at: float


RENDERING = "🎨 Rendering…"
STOPPED_IN_BATCH = f"⏹️ Stopped: {STOPPING_BESIDE_OTHERS}"
STOPPED_FREE = "⏹️ Stopped; nothing of it is posted, and nothing is charged."


def queued_text(state: JobState) -> str:
    """A queued job's message: its place and when it should be finished."""
    eta = f", {done_in}" if (done_in := state.done_in()) is not None else ""
    return f"⏳ Queued — {state.place()}{eta}."


# What a private job's message says in its token's last minute (``_last_word``): a queued
# one's place is shown no more; a rendering one's progress goes on until the token ends.
PLACE_SHOWN_NO_MORE = "Its place is shown here no more."
PROGRESS_ENDS_SOON = "Its progress shows here until {ends}."


def _last_word(job_id: str, shown: str, ending: str, ends_at: float) -> str:
    """A private job's message in its token's last minute: what it ``shown``s (its place, or
    its progress), that this ``ending``s, and where its result comes, as its delivery sends it
    (``DiscordResults``): here while the token lives as its delivery starts, until ``ends_at``
    (a Discord timestamp, true at each edit: the member's own clock reads it); then to its
    maker's direct messages when they are open, a notice alone where its server keeps its
    pictures; ``/show`` brings it back."""
    ends = f"<t:{int(ends_at)}:T>"  # down to the second: never later than the token's end
    return (
        f"{shown}\n{ending.format(ends=ends)} Its result comes here if it is posted before "
        f"{ends}, else to your direct messages if they are open (a notice alone where the "
        f"server keeps its pictures); `/show {job_id}` brings it back."
    )


def _moved_enough(shown: JobState, now: JobState) -> bool:
    """Whether a queued job's message moved enough since ``shown`` to be shown again: its
    place by PLACE_MOVE_SHOWN of itself or more, or across the last counted place either way
    (a job pushed back past it by promoted or put-back jobs must not keep an earlier place),
    or its wait (``_wait_moved``), a place past the count's included; never for a text
    that reads the same."""
    if queued_text(now) == queued_text(shown):
        return False
    if shown.at_least or now.at_least:
        return shown.at_least != now.at_least or _wait_moved(shown.eta_s, now.eta_s)
    assert shown.position is not None and now.position is not None  # both queued
    moved = abs(now.position - shown.position) >= PLACE_MOVE_SHOWN * (shown.position + 1)
    return moved or _wait_moved(shown.eta_s, now.eta_s)


def _wait_moved(shown_s: float | None, now_s: float | None) -> bool:
    """Whether a queued job's wait moved by PLACE_MOVE_SHOWN of the one shown or more, or
    into another whole minute (a long wait is shown again as each minute passes)."""
    if shown_s is None or now_s is None:
        return shown_s != now_s
    return abs(now_s - shown_s) >= PLACE_MOVE_SHOWN * shown_s or shown_s // 60 != now_s // 60


async def _nothing(message_id: int | None) -> None:
    return None


async def _landed_nowhere(message: discord.WebhookMessage) -> None:
    return None


def interaction_webhook(client: discord.Client, application_id: int, token: str) -> discord.Webhook:
    """An interaction's webhook, from its token: its follow-ups may be seen by its maker
    alone (ephemeral)."""
    webhook = discord.Webhook.partial(application_id, token, client=client)
    webhook.type = discord.WebhookType.application
    return webhook


def _cancel_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


class _Watched:
    """One job's progress message: one edit at a time, the newest text wins. Ticks that come
    while an edit is in flight overwrite one pending slot, so a slow Discord skips stale
    texts instead of sending each of them (and ``settle`` waits for at most one more).
    Edited through its interaction's webhook while its token lives; then, when it is in the
    open (``_public_id``), through ``channel``, until that refuses an edit or the message is
    CHANNEL_PLACE_EDITS_UNTIL_AGE_S old (on ``wall_clock``); else no more."""

    def __init__(
        self,
        followup: discord.Webhook | None,
        token_alive: Callable[[], bool],
        spoiler: bool,
        *,
        on_deleted: Callable[[int | None], Awaitable[None]],
        on_landed: Callable[[discord.WebhookMessage], Awaitable[None]],
        shown_now: Callable[[], Awaitable[PreviewShown]] | None = None,
        channel: Callable[[], discord.PartialMessageable] | None = None,
        last_minute: LastMinute | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._followup = followup  # None: its token is not this run's (``restored_id``)
        self.token_alive = token_alive
        self._channel = channel  # None: not known, or not to be edited through
        self._wall_clock = wall_clock
        # A private message's: when its last edit is due (its token ends soon), and what it says.
        self._last_minute = last_minute
        self.has_last_word = last_minute is not None
        self.last_word_said = False  # it said its place is shown no more: edited no more
        # It said until when its progress shows: said again with each edit.
        self.progress_ends_shown = False
        # Its message in its channel as the journal recorded it, for a job restored at
        # start-up (None: the one ``message`` is, once an edit landed).
        self.restored_id: int | None = None
        self.channel_refused = False  # an edit through ``channel`` was refused: no more
        # Its previews behind a spoiler as its result (``spoiler``), or stricter where the
        # rules of now say so (``shown_now``, read at each edit; None: not read).
        self._shown_at_least = PreviewShown.SPOILERED if spoiler else PreviewShown.OPEN
        self._shown_now = shown_now
        # How the preview the message shows was shown (None: it shows none).
        self._preview_shown: PreviewShown | None = None
        self._on_deleted = on_deleted
        self._on_landed = on_landed  # awaited once, with the first edit that lands
        self._edits: asyncio.Task[None] | None = None
        # The newest text not sent yet, with its buttons; taken by the running edits.
        self._pending: tuple[str, discord.ui.View] | None = None
        self._newest: tuple[str, discord.ui.View] | None = None  # sent or not
        self.message: discord.WebhookMessage | None = None  # as the latest edit left it
        # Set once the first text was sent or dropped: "thinking…" is replaced (or never is).
        self.first_edit_done = asyncio.Event()
        self.deleted = False  # in Discord, by a moderator (or its maker): edited no more
        # Its job ended: its delivery owns the message (``send_again`` sends nothing).
        self.ended = False
        self.last_edit = float("-inf")
        # The queued state its message shows (None: not a place), and when it was last
        # looked at (``ProgressMessages._refresh_places``).
        self.place_shown: JobState | None = None
        self.place_checked_at = float("-inf")
        # The newest preview JPEG not shown yet (the engine makes them as often as we edit).
        self.preview: bytes | None = None
        # Its job was stopped (``ProgressMessages.stopped_in_batch``): no preview is shown,
        # the one shown goes with the next edit.
        self.previews_stopped = False

    @classmethod
    def restored(
        cls,
        message_id: int,
        channel: Callable[[], discord.PartialMessageable],
        wall_clock: Callable[[], float] = time.time,
    ) -> _Watched:
        """Job's progress message ``message_id`` as the journal recorded it at a restart: no
        token of this run, edited through ``channel`` alone."""
        watched = cls(
            None,
            lambda: False,
            False,
            on_deleted=_nothing,
            on_landed=_landed_nowhere,
            channel=channel,
            wall_clock=wall_clock,
        )
        watched.restored_id = message_id
        return watched

    def editable(self) -> bool:
        """Whether an edit may still reach its message (through its token, or its channel)."""
        if self.ended or self.deleted or self.last_word_said:
            return False
        return self.token_alive() or self._public_id() is not None

    def channel_to_edit(self) -> int | None:
        """The channel its next edit goes through (its token ended); None: its webhook's."""
        if self._channel is None or self.token_alive() or self._public_id() is None:
            return None
        return self._channel().id

    def _public_id(self) -> int | None:
        """Its message in its channel, to be edited through that: one in the open as its
        latest edit left it, or as the journal recorded it; None: none known (ephemeral, or
        not landed yet), no channel, the channel refused an edit, or the message is too old
        for more (CHANNEL_PLACE_EDITS_UNTIL_AGE_S: its snowflake says when it was made)."""
        if self._channel is None or self.channel_refused:
            return None
        if self.message is not None:
            message_id = None if self.message.flags.ephemeral else self.message.id
        else:
            message_id = self.restored_id
        if message_id is None:
            return None
        made_at = discord.utils.snowflake_time(message_id).timestamp()
        if self._wall_clock() - made_at >= CHANNEL_PLACE_EDITS_UNTIL_AGE_S:
            return None
        return message_id

    @property
    def newest_text(self) -> str | None:
        """The newest text scheduled, sent or not (None: none yet)."""
        return None if self._newest is None else self._newest[0]

    def last_word_due(self) -> bool:
        """Whether its token's last minute came (a private message's alone)."""
        return self._last_minute is not None and self._last_minute.due()

    def last_word(self, job_id: str, shown: str, ending: str) -> str:
        """What it says in its token's last minute (``_last_word``), once that is due."""
        assert self._last_minute is not None  # due for a private message alone
        return _last_word(job_id, shown, ending, self._last_minute.ends_at)

    def show_progress_ends(self, content: str, view: discord.ui.View) -> None:
        """``content`` says that its progress stops showing soon: its progress edits follow,
        saying it too, while its token lives; none shows a place."""
        self.place_shown, self.progress_ends_shown = None, True
        self.schedule(content, view)

    def say_last_word(self, content: str, view: discord.ui.View) -> None:
        """``content`` is the message's last edit: no place nor progress follows."""
        self.place_shown, self.last_word_said = None, True
        self.schedule(content, view)

    def schedule(self, content: str, view: discord.ui.View) -> None:
        """Edit the message to ``content``, with the newest preview if one came since."""
        self._pending = self._newest = content, view
        if self._edits is None or self._edits.done():
            self._edits = asyncio.ensure_future(self._send_pending())

    def send_again(self) -> None:
        """The newest text once more, unless an edit is in flight (it sends the newest) or
        the job ended."""
        if self.ended:
            return
        if self._newest is not None and (self._edits is None or self._edits.done()):
            self.schedule(*self._newest)

    async def _send_pending(self) -> None:
        while self._pending is not None:
            (content, view), self._pending = self._pending, None
            preview, self.preview = self.preview, None
            try:
                if self.deleted:
                    return
                if self.token_alive():  # judged now: it may have waited
                    await self._edit(content, view, preview)
                elif (public_id := self._public_id()) is not None:
                    await self._edit_in_channel(public_id, content, view)
                else:
                    return
            finally:
                self.first_edit_done.set()

    async def _edit_in_channel(self, message_id: int, content: str, view: discord.ui.View) -> None:
        """``content`` through its channel, without a preview (the rules it would be shown
        under are its webhook's edits'). Refused (403; 404: deleted, which its deletion's
        event tells; or no more edits of an old message: OLD_MESSAGE_EDITS_SPENT): edited no
        more, quietly; other failures leave it for the next edit."""
        assert self._channel is not None  # ``_public_id`` said so
        try:
            await ProgressMessages._edit_progress_message(
                self._channel(), message_id, content, view
            )
        except (discord.HTTPException, TimeoutError) as error:
            refused = isinstance(error, discord.Forbidden | discord.NotFound) or (
                isinstance(error, discord.HTTPException) and error.code == OLD_MESSAGE_EDITS_SPENT
            )
            if refused:
                self.channel_refused = True
                log.info("progress message %s: its channel refused an edit (%s)", message_id, error)
            else:
                log.warning(
                    "progress message %s: an edit through its channel failed (%s)",
                    message_id,
                    error or type(error).__name__,  # a TimeoutError says nothing
                )

    async def _previews_shown(self) -> PreviewShown:
        if self.previews_stopped:
            return PreviewShown.HIDDEN
        if self._shown_now is None:
            return self._shown_at_least
        try:
            return max(self._shown_at_least, await self._shown_now())
        except Exception:  # e.g. the database closing: no preview on an unread rule
            log.exception("the rules of now for a preview were not read; none is shown")
            return PreviewShown.HIDDEN

    async def _edit(self, content: str, view: discord.ui.View, preview: bytes | None) -> None:
        # Without a new preview the message keeps the one it shows, unless the rules of now
        # are stricter than those it was shown under: it goes (the next comes under them).
        shown = await self._previews_shown()
        attachments: list[discord.File] = []
        if preview is None and (self._preview_shown is None or shown <= self._preview_shown):
            attachments, shown_after = discord.utils.MISSING, self._preview_shown
        elif preview is None or shown is PreviewShown.HIDDEN:
            shown_after = None
        else:
            spoilered = shown is PreviewShown.SPOILERED
            attachments = [
                discord.File(
                    io.BytesIO(preview),
                    filename="preview.jpg",
                    spoiler=spoilered,
                    description=PREVIEW_DESCRIPTION,
                )
            ]
            shown_after = shown
        assert self._followup is not None  # its token lives: it is this run's
        try:
            message = await self._followup.edit_message(
                ORIGINAL_RESPONSE, content=content, view=view, attachments=attachments
            )
        except discord.HTTPException as error:
            if error.code == UNKNOWN_MESSAGE:
                self.deleted = True
                log.warning("the progress message was deleted; it is edited no more")
                await self._on_deleted(None if self.message is None else self.message.id)
            else:
                log.warning("progress edit failed (%s); the result will still be posted", error)
            return
        landed_first = self.message is None
        self.message, self._preview_shown = message, shown_after
        if landed_first:
            try:
                await self._on_landed(message)
            except Exception:
                # Its record only (a locked journal): the job's later edits still go out.
                log.exception("the progress message %s could not be recorded", message.id)

    async def settle(self) -> None:
        """Wait for the edit in flight and the newest pending text."""
        # Not from within the edit itself: its deletion's withdrawal can stop a queued job,
        # whose end is delivered at once, settling this message; that edit makes no more, and
        # waiting for it would be waiting for ourselves.
        if self._edits is not None and self._edits is not asyncio.current_task():
            await asyncio.wait([self._edits])
