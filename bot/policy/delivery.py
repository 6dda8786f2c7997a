"""The rules a finished job's result is posted under: the server's of when it is delivered,
not of when it was submitted. A job can wait in the queue (``--repeat``, ``--relax``), render,
or sit in the journal while Easel is offline; meanwhile a moderator may delete the picture it
was made from, ban a word, change the NSFW policy or take the channel off Easel's list. What
Easel posts meets the rules of now (pure: no discord, no torch)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from enum import IntEnum

from bot.jobs.queue import FinishedJob
from bot.policy.addons import allowed_addons_only
from bot.policy.guild import GuildList, GuildPolicy, engine_picks_model
from bot.policy.moderation import (
    NsfwPolicy,
    conditioning_texts,
    kept_in_age_restricted_channels,
    model_left_out,
    models_rendered,
)
from bot.policy.unavailable import quoted
from bot.user_errors import Reason, UserError
from inference.infotext import InfotextError, parse_infotext

# Why a result was not posted, as its maker is told (after "was not posted: "); none names a
# banned word: the maker may not have typed it (a drawn wildcard).
SOURCE_WITHDRAWN = "a moderator removed the picture it was made from"
# Stopped as a moderator withdrew it (``stopped_by_moderator``): which one is never said.
MODERATOR_STOPPED = "a moderator of the server stopped it"
# Stopped by a stop its maker was put under (``stopped_by_sanction``): not their own cancel.
# No moderator named: AutoMod times members out too, and a member found gone at start-up may
# have left on their own (Discord says only "Unknown Member").
SANCTION_STOPPED = (
    "Easel stopped it because you were timed out in the server or are no longer in it; you "
    "may submit it again once you can post there"
)
# Its own message deleted in the channel: by a moderator or by its maker (Discord does not say).
PROGRESS_DELETED = "its message in the channel was deleted"
CHANNEL_DELETED = "the channel or thread it was made in was deleted"
# Withdrawn with the job it was made from, whose channel or thread was deleted (its own may
# live: a Vary of a picture posted there, made elsewhere).
SOURCE_CHANNEL_DELETED = "the picture it was made from was in a channel or thread that was deleted"
WORD_BANNED_SINCE = "its prompt uses a word the server has banned since it was submitted"
NOT_CHECKED = "its prompt could not be checked against the server's banned words of now"
CHANNEL_OFF = "Easel is no longer enabled in the channel it was made in"
# The same pixels as a picture a moderator removed in the server (made again: same settings).
SAME_PICTURE_REMOVED = "a moderator removed a picture with the same pixels from the server"
DIRECT_MESSAGES_OFF = "Easel no longer works in direct messages"
# Removed from the server (kicked, or the server deleted): nothing of it renders any more.
EASEL_REMOVED = "Easel is no longer in the server it was made in"
# A result of a thread Discord hides from Easel (a private one it was not added to), its
# maker's direct messages closed: no post, DM, button or /show brings it back (withdrawn:
# adding Easel to the thread now brings back nothing).
UNSEEN_AND_DMS_CLOSED = (
    "Easel cannot see the thread it was made in, and your direct messages are closed to Easel"
)
# Embeddings: one the job may read (a list kept or narrowed since), whether or not it does.
ADDON_LEFT_OUT_NOW = (
    "it may use a LoRA, embedding, VAE, upscaler or ControlNet the server no longer allows"
)
AGE_RESTRICTED_NOW = (
    "its pictures stay in age-restricted channels under the server's rules of now, and that "
    "channel is not one"
)
# Every prompt reader busy (a raid's long prompts): a delivery may wait where a click may not,
# asking again this often, this far apart; then it is withheld, never posted unread.
BUSY_TRIES = 30
BUSY_PAUSE_S = 1.0


def model_left_out_now(model: str) -> str:
    """Why a job is withheld whose model (or refiner, or a /compare cell's) the server's model
    list has left out since it was submitted: named, as the member may pick another."""
    return (
        f"its model {quoted(model)} is no longer on the server's list of allowed models (an "
        "admin changed the list since it was submitted)"
    )


class Withheld(Exception):
    """The result is posted nowhere; ``why``: the clause its maker is told privately (None:
    they are not told, e.g. a member banned from the server). ``refund``: not its maker's doing
    (the server's rules changed since its submit, Easel could not check them, or a channel or
    another member's picture it was made from was deleted, ``refunded_withdrawal``): its quota
    is given back, and the job withdrawn, so that no one is shown it later for free. A job
    withdrawn otherwise (its own message, or its maker's own picture it was made from,
    deleted) or a maker stopped stays charged."""

    def __init__(self, why: str | None, *, refund: bool = False) -> None:
        super().__init__(why or "withheld")
        self.why = why
        self.refund = refund


async def under_rules_of_now(
    job: FinishedJob,
    policy: GuildPolicy | None,
    here_age_restricted: Callable[[], Awaitable[bool]],
    pixels_withdrawn: Callable[[], Awaitable[bool]],
    thread_parent: Callable[[], Awaitable[int | None]] | None = None,
) -> FinishedJob:
    """``job``'s result as it may be posted now (``placed_under_rules_of_now``), or
    ``Withheld``: also when one of its pictures has the pixels of a server's job a moderator
    withdrew (``pixels_withdrawn()``, asked of a server's job only: its settings pasted again
    make the same picture; refunded, as its maker may not have known), or when what it was
    conditioned on renders a word banned since."""
    job = await placed_under_rules_of_now(job, policy, here_age_restricted, thread_parent)
    if job.guild_id is not None and await pixels_withdrawn():
        raise Withheld(SAME_PICTURE_REMOVED, refund=True)
    if policy is not None:
        await _check_banned_since(job, policy)
    return job


async def placed_under_rules_of_now(
    job: FinishedJob,
    policy: GuildPolicy | None,
    here_age_restricted: Callable[[], Awaitable[bool]],
    thread_parent: Callable[[], Awaitable[int | None]] | None = None,
) -> FinishedJob:
    """The rules of now that are cheap to read, also asked before a queued job renders:
    ``job`` behind a spoiler where the server spoilers its pictures now, or ``Withheld``: it
    was withdrawn (its own message or the picture it was made from deleted; its channel or
    that picture's deleted, or that picture another member's: refunded), Easel is no longer
    enabled in its channel (or in direct messages), it renders with a model the server's
    model list leaves out now (its refiner, a /compare's cells' included), it may use an
    add-on the server no longer allows (``addons.allowed_addons_only``), or its pictures must
    stay in age-restricted channels now and ``here_age_restricted()`` (its channel, asked
    only then) says that one is not. A thread's job is enabled with the channel
    ``thread_parent()`` names (asked only when the thread itself is not listed).
    ``policy`` None: the servers' rules are not known (tests), only the withdrawal is read."""
    if (refunded := refunded_withdrawal(job)) is not None:
        raise Withheld(refunded, refund=True)
    if job.withdrawn:
        raise Withheld(SOURCE_WITHDRAWN if job.withdrawn_with_source else PROGRESS_DELETED)
    if policy is None:
        return job
    try:
        await policy.check_channel(job.guild_id, job.channel_id)
    except UserError:
        off = DIRECT_MESSAGES_OFF if job.guild_id is None else CHANNEL_OFF
        parent = None if thread_parent is None or job.guild_id is None else await thread_parent()
        if parent is None:
            raise Withheld(off, refund=True) from None
        try:
            await policy.check_channel(job.guild_id, job.channel_id, parent)
        except UserError:
            raise Withheld(off, refund=True) from None
    if job.guild_id is not None:
        settings = await policy.settings(job.guild_id)
        allowed_models = settings.entries(GuildList.ALLOWED_MODEL)
        # The admission's rule (a /compare's cells' models were checked as it was planned);
        # no list allows every model, and the engine's pick is not listed then, but for a
        # faces pass's at its start (``_models_used``: kept for its delivery).
        if allowed_models or (job.request.mode == "faces" and not job.succeeded):
            left_out = model_left_out(await _models_used(job, policy), allowed_models)
            if left_out is not None:
                raise Withheld(model_left_out_now(left_out), refund=True)
        try:
            allowed_addons_only(job.request, await policy.addon_rules(job.guild_id))
        except UserError:
            raise Withheld(ADDON_LEFT_OUT_NOW, refund=True) from None
        nsfw_policy = NsfwPolicy(settings.nsfw_policy)
        kept_there = kept_in_age_restricted_channels(
            made_age_restricted=job.age_restricted, nsfw_policy=nsfw_policy
        )
        if kept_there and not await here_age_restricted():
            raise Withheld(AGE_RESTRICTED_NOW, refund=True)
        if nsfw_policy is NsfwPolicy.SPOILER and not job.spoiler:
            job = dataclasses.replace(job, spoiler=True)
    return job


class PreviewShown(IntEnum):
    """How a job's progress preview may be shown (the stricter, the larger)."""

    OPEN = 0
    SPOILERED = 1
    HIDDEN = 2


def preview_shown(
    *,
    nsfw_policy: NsfwPolicy,
    made_age_restricted: bool,
    banned_since: bool,
    private_since: bool,
) -> PreviewShown:
    """How a job's next preview may be shown under the rules of now, read at each edit (its
    result is judged at delivery; until then its previews follow the same rules): hidden
    where its maker turned private results on since its response went public
    (``private_since``), or where the server now renders in age-restricted channels only and
    it was not made in one (its result will be withheld); behind a spoiler where the server
    spoilers its pictures now, or banned a word since its submit (``banned_since``: it may
    render it, which only its delivery reads)."""
    kept_there = kept_in_age_restricted_channels(
        made_age_restricted=made_age_restricted, nsfw_policy=nsfw_policy
    )
    if private_since or (kept_there and not made_age_restricted):
        return PreviewShown.HIDDEN
    if banned_since or nsfw_policy is NsfwPolicy.SPOILER:
        return PreviewShown.SPOILERED
    return PreviewShown.OPEN


def refunded_withdrawal(job: FinishedJob) -> str | None:
    """Why ``job`` was withdrawn where that is refunded, as its maker is told: its channel or
    thread deleted (``channel_deletion``), or a moderator removed the picture it was made from
    and another member made that picture (its maker did nothing wrong; the same removal before
    its render ended stops it refunded whole). None: not so withdrawn; one made from its
    maker's own picture stays charged. Read from the recorded withdrawal, so a delivery
    retried after a crash tells the same."""
    if (deleted := channel_deletion(job)) is not None:
        return deleted
    if job.withdrawn and job.withdrawn_with_source and job.source_made_by_another:
        return SOURCE_WITHDRAWN
    return None


def stopped_by_moderator(job: FinishedJob) -> bool:
    """Whether a cancelled ``job`` was first stopped by a moderator (their Cancel,
    ``/easel-mod withdraw``, as recorded: ``FinishedJob.moderator_stopped``), itself, not
    with the picture it was made from nor with a channel. Its own message's deletion is not:
    Discord does not say who deleted it, its maker as likely as a moderator; nor a
    moderator's withdrawal after its maker's own cancel."""
    return job.moderator_stopped and not (job.withdrawn_with_source or job.withdrawn_with_channel)


def stopped_by_sanction(job: FinishedJob) -> bool:
    """Whether a cancelled ``job`` was first stopped by a stop its maker was put under (a ban,
    a kick, a timeout), not withdrawn (a deletion's stop is told as such)."""
    return job.imposed_stop and not job.withdrawn


def channel_deletion(job: FinishedJob) -> str | None:
    """Why ``job`` was withdrawn with a deleted channel or thread, as its maker is told: its
    own, or (made elsewhere) the one of the picture it was made from; None: it was not. Read
    from the recorded withdrawal, so a delivery retried after a crash tells the same."""
    if not job.withdrawn_with_channel:
        return None
    return SOURCE_CHANNEL_DELETED if job.withdrawn_with_source else CHANNEL_DELETED


async def _check_banned_since(job: FinishedJob, policy: GuildPolicy) -> None:
    """The server's banned words of now over what the job's pictures were conditioned on, as
    /show reads them (the verdict is kept per job until the words change). Readers busy are
    waited for (``BUSY_TRIES``); a text too long to read, or readers still busy, withhold it
    refunded, as a word banned since does; Easel shutting down fails the delivery (the next
    start delivers it)."""
    request = json.loads(job.request.to_json())
    # Its fix-faces prompt is drawn again by ``check_reuse``'s read, within its budget.
    texts = conditioning_texts(request, [image.infotext for image in job.images])
    for _ in range(BUSY_TRIES):
        try:
            await policy.check_reuse(job.guild_id, job.job_id, texts, withdrawn=False)
            return
        except UserError as refused:
            if refused.reason is Reason.CLOSED:
                raise
            if refused.reason is Reason.BANNED_WORD:
                raise Withheld(WORD_BANNED_SINCE, refund=True) from None
            if refused.reason is not Reason.BUSY:  # too long to read (UNCHECKED)
                raise Withheld(NOT_CHECKED, refund=True) from None
        await asyncio.sleep(BUSY_PAUSE_S)  # every reader busy: asked again
    # Given back, it is withdrawn like any refund: shown later (once readers are free) it
    # would be free pictures.
    raise Withheld(NOT_CHECKED, refund=True)


async def _models_used(job: FinishedJob, policy: GuildPolicy) -> list[str | None]:
    """``models_rendered``, and for a job that names no model (admitted while the server had
    no model list and no default) the one it renders with. Once it rendered, the one its
    pictures' infotext names (the engine's pick, on whichever machine rendered it; a creative
    upscale's names the pass's own model), so a model list made since governs it too; but a
    faces fix keeps its picture's infotext, model and all, so the engine's pick here is read
    for it. Before it renders (the start gate: no GPU time spent on a result to withhold),
    the engine's pick here: ``GuildPolicy.unnamed_model``, kept from the start for the
    delivery; None where a broker's workers render, each its own pick, so a faces fix naming
    no model is held by no list there."""
    request = job.request
    if job.succeeded and request.mode != "faces" and engine_picks_model(request):
        named = (_model_named_in(image.infotext) for image in job.images)
        return [*models_rendered(request), *named]
    # Kept from the start only for a faces fix: the one read back after it rendered.
    noted = not job.succeeded and request.mode == "faces"
    return await policy.models_before_render(job.job_id, request, starting=noted)


def _model_named_in(infotext: str) -> str | None:
    """The ``Model`` an infotext names (None: none, or one that cannot be read)."""
    try:
        model = parse_infotext(infotext)[2].get("Model")
    except InfotextError:
        return None
    return model if isinstance(model, str) else None
