"""Quota accounting around a job's life: admit (check + reserve), commit, refund.

The policy (which limits apply, what a refusal says) is ``bot.policy.quota``; the ledger rows are
``db.quotas``. This module joins them at the three moments the queue knows about.

The check before an interaction is acknowledged (``refusal_for``) reads the member's limits
and spending from memory: every write of the ledger or the limits goes through this module,
which updates what is kept in the same call, so no caller can forget to (a test checks that
nothing else calls a writing function of ``db.quotas``). That check is advisory: ``admit``
checks again in SQLite, in the transaction that reserves, and stays the authority. What it
knows without reading at all (who spent nothing in the current periods, which guilds set no
limit) is read once after the bot's start, in the background (``read_ahead``); the spenders
again at a period's start if they were too many (``_periods_from``).

A ``--relax`` job is free, so it is taken only while the member's unfinished jobs and their
pictures stay under ``bot.policy.quota``'s relax caps (read in SQLite, in that transaction
too); admins of the server included. Every job, free or not, is taken only while the member's
unfinished jobs in that server stay under the queue bound (``bot.policy.queue_bound``), read
in that transaction too (``unfinished_refusal``, both); the queue counts those jobs and their
pictures in memory for the check before the acknowledgement (``JobQueue.quota_refusal``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeAlias

import aiosqlite

from bot.images import picture_size
from bot.memo import MEMBERS_KEPT, READ_AHEAD_PAGE, Memo, ReadAhead
from bot.policy.queue_bound import QueueBoundRefusal, check_queue_bound
from bot.policy.quota import (
    Cost,
    Period,
    QuotaLimits,
    Refusal,
    RelaxRefusal,
    Unfinished,
    check,
    check_relax,
    period_start,
    resolve_limits,
)
from bot.user_errors import Reason
from db import guild_settings as settings_audit
from db import history as member_data
from db import jobs as journal
from db import quotas as ledger
from db.database import transaction
from inference.compare import cell_requests, is_comparison
from inference.control_units import OPTION_KEY as CONTROLNET_OPTION
from inference.face_options import FaceOptions
from inference.img2img_steps import Img2ImgSteps
from inference.prompt_work import PromptWork
from inference.samplers import calls_per_step
from inference.sizes import default_size
from inference.types import RenderInputError, RenderRequest
from inference.upscale import HiresOptions, UpscaleOptions, creative_tiles

log = logging.getLogger(__name__)

# A rough GPU cost used for the reservation only; the measured time replaces it at commit.
ESTIMATED_SECONDS_PER_STEP_512 = 0.08
# Each ControlNet adds about half a UNet's work to every step.
CONTROLNET_STEP_SHARE = 0.5
# Enlarging a picture (a model upscaler, or Lanczos) per 512x512 of its output: about a quarter
# of a diffusion step there (as rough as the step's figure).
ESTIMATED_ENLARGE_SECONDS_PER_512 = 0.02
# The side a request naming no size renders at when its model is not known (SD 1.5's): every
# caller that knows the model passes its own (``inference.memory.native_side``).
UNKNOWN_MODEL_SIDE = 512


# An input picture's width and height, in pixels.
InputSize: TypeAlias = tuple[int, int]


@dataclass(frozen=True)
class RenderSize:
    """What the size a job renders at is reckoned from where its request names none: its
    model's ``native_side`` (1024 for SDXL), and the ``input_size`` of the picture it edits,
    as read where that was decoded (None: it edits none, or its picture could not be read).
    Made once, where the job is: its estimate then reads no file (``estimated_cost``). A
    /compare across models holds each other model's native side too (``model_sides``, of
    ``compared_models``): each cell is reckoned at its own model's (``of_cell``)."""

    native_side: int = UNKNOWN_MODEL_SIDE
    input_size: InputSize | None = None
    model_sides: tuple[tuple[str, int], ...] = ()

    def of_cell(self, cell: RenderRequest) -> RenderSize:
        """What a /compare's ``cell`` is reckoned from: its model's native side, where that
        is another model than its request's (the native side kept when not known)."""
        side = dict(self.model_sides).get(cell.model or "")
        return self if side is None else dataclasses.replace(self, native_side=side)

    def pixels(self, request: RenderRequest) -> int:
        """The pixels the engine renders ``request`` at (``size``)."""
        width, height = self.size(request)
        return width * height

    def size(self, request: RenderRequest) -> tuple[int, int]:
        """The size the engine renders ``request`` at: a side it leaves out is the input
        picture's where it edits one (an edit's, /vary's: ``inference.sizes.default_size``, as
        the engine sizes it), else its model's native side shaped to its aspect at about that
        many pixels. An edit whose picture's size is not known (gone, unreadable) counts the
        native size."""
        if request.width is not None and request.height is not None:
            return request.width, request.height
        init_size = self.input_size if edits_a_picture(request) else None
        width, height = default_size(self.native_side, request.options.get("aspect"), init_size)
        return request.width or width, request.height or height


# A job whose model is not known here and whose picture's size is not at hand.
UNKNOWN_RENDER_SIZE = RenderSize()


def compared_models(request: RenderRequest) -> list[str]:
    """The models a /compare renders besides its request's (a model axis), whose native
    sides its ``RenderSize`` holds (``model_sides``); none for another request, or for a
    comparison the engine will refuse (its estimate is a plain render's)."""
    if not is_comparison(request):
        return []
    try:
        cells = cell_requests(request)
    except RenderInputError:
        return []
    return sorted({cell.model for cell in cells if cell.model and cell.model != request.model})


# Why a job is not taken: its member's limits, the relax caps or the queue bound.
Refused: TypeAlias = Refusal | RelaxRefusal | QueueBoundRefusal


class QuotaExceeded(Exception):
    """The member's limits or the queue bound refuse this job: ``message`` names the limit
    and when it resets, ``reason`` which it is (the dashboard and the metrics count them
    apart: a member with no limit can still meet the bound)."""

    def __init__(self, message: str, reason: Reason = Reason.QUOTA) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason

    @classmethod
    def of(cls, refusal: Refused) -> QuotaExceeded:
        reason = Reason.QUEUE if isinstance(refusal, QueueBoundRefusal) else Reason.QUOTA
        return cls(refusal.message, reason)


@dataclass(frozen=True)
class Member:
    """Who acts, where (None: a direct message), their roles there, and whether they manage
    that guild: admin power belongs to a member in one guild, never to a person everywhere."""

    user_id: int
    guild_id: int | None
    role_ids: Sequence[int] = ()
    is_admin: bool = False  # manages ``guild_id`` (Manage Server there)

    def __post_init__(self) -> None:
        if self.is_admin and self.guild_id is None:
            raise ValueError("a direct message has no admins: is_admin needs a guild_id")


def estimated_cost(request: RenderRequest, render_size: RenderSize = UNKNOWN_RENDER_SIZE) -> Cost:
    """The GPU time reserved for ``request`` before it runs, reckoned from the work the engine
    does for it, a 512x512 step costing ``ESTIMATED_SECONDS_PER_STEP_512``:

    - a render: its steps over its pictures at the size it renders them
      (``RenderSize.size``), each ControlNet adding ``CONTROLNET_STEP_SHARE``; a txt2img hires
      fix adds its second pass, its steps (``HiresOptions.pass_steps``: all of them, whatever
      the denoising) at its size; its prompts' rows and key length a picture as admission
      planned them (``PromptWork.per_picture``: an ``AND`` part adds half a plain picture's
      work, each 77-token chunk past the first ``CHUNK_ROW_SHARE`` of it);
    - a /compare: the sum of its cells (``cell_requests``), each at its own steps and its
      own model's native side (``RenderSize.of_cell``);
    - an upscale: enlarging, per pixel of its output (``ESTIMATED_ENLARGE_SECONDS_PER_512``:
      all a fast one does), plus, for a creative one, img2img's steps at its strength
      (``Img2ImgSteps.img2img``) over each native-size tile it re-details (``creative_tiles``),
      each step at its picture's prompts' work, as a render's (the tiles run that prompt);
    - fixing faces: one face pass a picture at its model's native side, square, as the
      engine inpaints it (a faces job does only that);
    - a render's, a creative upscale's tiles' and a face pass's steps twice for a
      second-order sampler (Heun, DPM2...: ``calls_per_step``).

    A request the engine will refuse (a bad option) is reckoned as a plain render; the member
    is refunded when it fails. Reads no file: ``render_size`` holds the size of the picture it
    takes, as read where that was decoded (else by ``input_picture_size``, off the loop)."""
    try:
        seconds = _work_seconds(request, render_size)
    except RenderInputError:
        seconds = _steps_seconds(request.steps, render_size.size(request)) * request.count
    return Cost(images=request.count, gpu_seconds=round(seconds, 3))


def _steps_seconds(steps: int, size: tuple[int, int]) -> float:
    """What ``steps`` diffusion steps of one picture of ``size`` cost."""
    return ESTIMATED_SECONDS_PER_STEP_512 * steps * size[0] * size[1] / 512**2


def _work_seconds(request: RenderRequest, render_size: RenderSize) -> float:
    """``estimated_cost``'s seconds; raises ``RenderInputError`` for options the engine
    refuses."""
    if is_comparison(request):
        cells = cell_requests(request)
        return sum(_work_seconds(cell, render_size.of_cell(cell)) for cell in cells)
    if request.mode == "upscale":
        seconds = _upscale_seconds(request, render_size)
    elif request.mode == "faces":  # a stored picture's faces only: no render of its own
        seconds = 0.0
    else:
        size = render_size.size(request)
        seconds = _steps_seconds(request.steps, size)
        txt2img = request.mode == "txt2img"  # the only mode the engine gives a hires pass
        hires = HiresOptions.from_options(request.options, *size) if txt2img else None
        if hires is not None:
            seconds += _steps_seconds(hires.pass_steps(request.steps), hires.size)
        units = len(request.options.get(CONTROLNET_OPTION) or [])
        seconds *= request.count * (1 + CONTROLNET_STEP_SHARE * units) * _step_work(request)
    # Fixing faces: one face pass a picture, inpainted at its model's native size (the
    # faces are counted when it runs).
    face_steps = FaceOptions.from_options(request.options).fix_steps(request.steps)
    if face_steps:
        calls = calls_per_step(request.sampler, request.schedule_type)
        native = render_size.native_side
        seconds += _steps_seconds(face_steps, (native, native)) * request.count * calls
    return seconds


def _step_work(request: RenderRequest) -> float:
    """What each step of ``request``'s pictures (or tiles) does, a plain prompt's one model
    call being 1: its prompts' rows and key length, times its sampler's calls a step (a
    second-order one's, Heun, DPM2..., two; ``RenderInputError`` for one the engine does not
    know)."""
    calls = calls_per_step(request.sampler, request.schedule_type)
    return PromptWork.of(request.options).per_picture() * calls


def batch_weight(request: RenderRequest, pictures: int) -> float:
    """What ``pictures`` of ``request`` weigh in their batch's measured time, shared by what
    each job of it would cost alone: each picture at its prompts' work (``PromptWork``: rows
    and key length), not at a partner's longer prompt its rows were padded to. Its render's
    end and a stop while the render goes on for the others share it alike."""
    return pictures * PromptWork.of(request.options).per_picture()


def _upscale_seconds(request: RenderRequest, render_size: RenderSize) -> float:
    """An upscale's enlarging, and a creative one's re-detailing in tiles; from its picture's
    size (the native size when that is not known)."""
    options = UpscaleOptions.from_options(request.options)
    native = render_size.native_side
    width, height = options.output_size(*(render_size.input_size or (native, native)))
    seconds = ESTIMATED_ENLARGE_SECONDS_PER_512 * width * height / 512**2
    if options.mode == "creative":
        tiles, _ = creative_tiles(width, height, native)
        left, top, right, bottom = tiles[0]
        steps = Img2ImgSteps.img2img(request.steps, options.strength).run
        tile = _steps_seconds(steps, (right - left, bottom - top))
        seconds += len(tiles) * tile * _step_work(request)  # the picture's prompt and sampler
    return seconds


def edits_a_picture(request: RenderRequest) -> bool:
    """Whether the engine sizes ``request`` from its input picture (an img2img or inpaint
    pass over one)."""
    return request.mode in ("img2img", "inpaint") and bool(request.init_image)


def costs_by_its_picture(request: RenderRequest) -> bool:
    """Whether ``request``'s cost is reckoned from its input picture's size: an edit's (its
    render's size), an upscale's (its output's)."""
    return edits_a_picture(request) or (request.mode == "upscale" and bool(request.init_image))


def input_picture_size(request: RenderRequest) -> InputSize | None:
    """The size of the picture ``request`` takes (``costs_by_its_picture``), from its header:
    a file read, for a thread (a job read back from the journal, which keeps only the
    picture's path). None: it takes none, or the picture is gone or unreadable (the engine
    refuses it then, refunded)."""
    if not costs_by_its_picture(request):
        return None
    assert request.init_image is not None  # costs_by_its_picture
    try:
        return picture_size(Path(request.init_image))
    except OSError:
        return None


def quota_cost(request: RenderRequest, render_size: RenderSize = UNKNOWN_RENDER_SIZE) -> Cost:
    """What the job counts against the member's limits: a relax job (``--relax``, the
    queue's lowest class) counts nothing; any other its estimate (``estimated_cost``)."""
    if request.options.get("relax"):
        return Cost(images=0, gpu_seconds=0.0)
    return estimated_cost(request, render_size)


async def limits_for(
    conn: aiosqlite.Connection, member: Member, dm_limits: QuotaLimits
) -> QuotaLimits:
    """The member's limits where they are: in a guild, its overrides (none for its admins);
    in direct messages, which no guild governs, the operator's ``dm_limits``."""
    if member.guild_id is None:
        return dm_limits
    found = await ledger.overrides_for(conn, member.guild_id, member.user_id, member.role_ids)
    return _resolved(member, found)


def _resolved(member: Member, found: ledger.LimitOverrides) -> QuotaLimits:
    return resolve_limits(
        is_admin=member.is_admin,
        user_override=QuotaLimits.from_mapping(found.user) if found.user else None,
        role_overrides=[QuotaLimits.from_mapping(role) for role in found.roles],
        guild_default=QuotaLimits.from_mapping(found.guild) if found.guild else None,
    )


async def refusal_for(
    conn: aiosqlite.Connection,
    member: Member,
    request: RenderRequest,
    now: float,
    dm_limits: QuotaLimits,
    render_size: RenderSize = UNKNOWN_RENDER_SIZE,
) -> Refusal | None:
    """Why this request does not fit the member's limits now, or None; reads only, and
    from memory when it can (see the module's docstring). The relax caps and the queue
    bound are the queue's to check (``unfinished_refusal``: it counts the member's
    unfinished jobs in memory). ``render_size``: what its size is reckoned from
    (``estimated_cost``).

    Memory can count too much (a reservation whose transaction rolled back), so a refusal is
    confirmed in SQLite before it is returned; were it ever to count too little, ``admit``
    still refuses, in the transaction that would reserve."""
    starts = _period_starts(now)
    kept = _periods_from(conn, starts)
    if member.guild_id is None:
        limits = dm_limits
    elif kept.sets_no_limit(member.guild_id):
        limits = _resolved(member, ledger.LimitOverrides(user=None, roles=[], guild=None))
    else:
        limits = await kept.limits.get(
            _limits_key(member), lambda: limits_for(conn, member, dm_limits)
        )
    key = (member.user_id, member.guild_id)
    spent = kept.nothing_spent(key, starts) or await kept.usage.get(
        key, lambda: _spending(conn, key, starts)
    )
    if spent.starts != starts:  # a period began since it was read
        kept.usage.drop(key)
        spent = await kept.usage.get(key, lambda: _spending(conn, key, starts))
    cost = quota_cost(request, render_size)
    if check(spent.by_period, limits, cost, now) is not None:
        # Read again next time too: what memory held may have been too much.
        kept.usage.drop(key)
        if member.guild_id is not None:
            kept.limits.drop(_limits_key(member))
        return await _refusal_in_ledger(conn, member, cost, now, dm_limits)
    return None


def unfinished_refusal(
    waiting: Unfinished, request: RenderRequest, jobs: int, max_queued: int
) -> RelaxRefusal | QueueBoundRefusal | None:
    """Why ``jobs`` more jobs of ``request`` (its ``count``: their pictures in all) do not
    fit beside the member's ``waiting`` ones, or None: a free (``--relax``) request's caps,
    then the queue bound (``max_queued``; 0: none)."""
    if request.options.get("relax") and (
        relax := check_relax(waiting, Unfinished(jobs, request.count))
    ):
        return relax
    return check_queue_bound(max_queued, waiting.jobs, jobs)


async def _unfinished(conn: aiosqlite.Connection, member: Member) -> Unfinished:
    """The member's jobs waiting or running in that server (or their DMs), and their
    pictures."""
    return Unfinished(*await journal.unfinished_of(conn, member.user_id, member.guild_id))


async def _refusal_in_ledger(
    conn: aiosqlite.Connection,
    member: Member,
    cost: Cost,
    now: float,
    dm_limits: QuotaLimits,
) -> Refusal | None:
    limits = await limits_for(conn, member, dm_limits)
    usage = await usage_by_period(conn, member.user_id, member.guild_id, now)
    return check(usage, limits, cost, now)


async def usage_by_period(
    conn: aiosqlite.Connection, user_id: int, guild_id: int | None, now: float
) -> dict[Period, ledger.Usage]:
    """The member's spending in the current day, week and month (one query)."""
    periods = list(Period)
    spent = await ledger.usage_since_each(
        conn, user_id, guild_id, [period_start(period, now) for period in periods]
    )
    return dict(zip(periods, spent, strict=True))


async def admit(
    conn: aiosqlite.Connection,
    job_id: str,
    member: Member,
    request: RenderRequest,
    now: float,
    dm_limits: QuotaLimits,
    *,
    max_queued: int = 0,
    render_size: RenderSize = UNKNOWN_RENDER_SIZE,
) -> Refused | None:
    """Reserve the job's estimated cost; or, when it does not fit (its limits, for a relax
    job the relax caps, the member's jobs waiting or running there past ``max_queued``: 0 is
    no bound), write nothing and say why. ``render_size``: what its size is reckoned from
    (``estimated_cost``).

    Returns rather than raises so the caller's transaction can commit: a refusal is an
    answer, not a failure (see ``db.database.transaction``)."""
    cost = quota_cost(request, render_size)
    refusal: Refused | None = await _refusal_in_ledger(conn, member, cost, now, dm_limits)
    relax = bool(request.options.get("relax"))
    if refusal is None and (relax or max_queued):
        waiting = await _unfinished(conn, member)  # read once for both checks
        refusal = unfinished_refusal(waiting, request, 1, max_queued)
    if refusal is None:
        reserved = await ledger.reserve(
            conn, job_id, member.user_id, member.guild_id, cost.images, cost.gpu_seconds, now
        )
        if reserved:
            # Kept even if the caller's transaction rolls back: memory then counts too much,
            # which ``refusal_for`` corrects before refusing anyone.
            # Room first: last period's spenders may be in the way.
            kept = _periods_from(conn, _period_starts(now))
            kept.reserved(job_id, _Reservation((member.user_id, member.guild_id), cost, now))
    return refusal


async def charge(
    conn: aiosqlite.Connection, job_id: str, gpu_seconds: float, images: int, now: float
) -> None:
    """Charge the measured cost (a relax job, reserved free, stays free: the ledger's rule).
    A job with no reservation is charged nothing (``_unreserved``)."""
    try:
        charged = await ledger.commit(conn, job_id, gpu_seconds, now, images=images)
    except ledger.NoReservation:
        _unreserved(job_id, "charged")
        return
    if charged is not None:
        _kept(conn).settled(job_id, Cost(images=charged.images, gpu_seconds=charged.gpu_seconds))


async def refund(conn: aiosqlite.Connection, job_id: str, now: float) -> None:
    """Release the job's reservation; a job with none has nothing to give back (``_unreserved``)."""
    try:
        refunded = await ledger.refund(conn, job_id, now)
    except ledger.NoReservation:
        _unreserved(job_id, "refunded")
        return
    if refunded:
        _kept(conn).settled(job_id, Cost(images=0, gpu_seconds=0.0))


def _unreserved(job_id: str, settled: str) -> None:
    """A job ends with no reservation in the ledger (one queued before schema 2 made the
    ledger): nothing to charge or give back, and the job ends as any other, not left running
    to render again at every start."""
    log.warning("job %s: no quota reservation in the ledger, so nothing was %s", job_id, settled)


async def refund_withheld(conn: aiosqlite.Connection, job_id: str, now: float) -> bool:
    """Give back what a job withheld by a rule changed since its submit cost its maker, its
    commit included (``db.quotas.refund_withheld``); whether it stands refunded (now or by an
    earlier delivery of it)."""
    refunded = await ledger.refund_withheld(conn, job_id, now)
    if refunded is not None and refunded.now:
        _kept(conn).given_back(job_id, (refunded.user_id, refunded.guild_id))
    return refunded is not None


async def set_limits(
    conn: aiosqlite.Connection,
    scope: ledger.LimitScope,
    guild_id: int,
    subject_id: int,
    limits: QuotaLimits | None,
    now: float,
    *,
    by: int | None = None,
) -> bool:
    """Store a limit override of ``guild_id`` (its default, a role's or a member's), or with
    ``limits`` None remove it (the next level applies again), and, changed by an admin ``by``,
    its audit row (a removal's new value NULL), in one transaction: a failure between them
    leaves neither. Whether anything changed (False: no such override to remove)."""
    kept = _kept(conn)
    try:
        async with transaction(conn):
            if limits is None:
                changed = await ledger.clear_limits(conn, scope, guild_id, subject_id)
                audited = None
            else:
                values = limits.as_mapping()
                await ledger.set_limits(conn, scope, guild_id, subject_id, values, now)
                changed = True
                audited = json.dumps({k: v for k, v in values.items() if v is not None})
            if by is not None and changed:
                await settings_audit.record_change(
                    conn, guild_id, by, f"quota:{scope.value}:{subject_id}", audited, now
                )
    finally:
        # After the transaction either way: a read meanwhile (on this connection) may have
        # kept limits it wrote, or then rolled back.
        kept.limited_guilds.add(guild_id)
        kept.limits.drop_where(lambda key: key[0] == guild_id)
    return changed


async def erase_member(
    conn: aiosqlite.Connection,
    user_id: int,
    *,
    asked_at: float,
    counted_since: float,
    anonymise_at: float,
    erased_batch: Callable[[member_data.ErasedJobs], Awaitable[None]],
    saved_up_to: float | None = None,
) -> member_data.ErasedData:
    """/forget-me's erase (``db.history.erase_user``), which rewrites the member's ledger rows
    (in batches: also when one fails after others were written)."""
    try:
        return await member_data.erase_user(
            conn,
            user_id,
            asked_at=asked_at,
            counted_since=counted_since,
            anonymise_at=anonymise_at,
            erased_batch=erased_batch,
            saved_up_to=saved_up_to,
        )
    finally:
        kept = _kept(conn)
        kept.usage.drop_where(lambda key: key[0] == user_id)
        kept.limits.drop_where(lambda key: key[1] == user_id)


async def anonymise_due(conn: aiosqlite.Connection, now: float) -> int:
    """Anonymise the ledger rows /forget-me left named until their periods ended."""
    anonymised = await ledger.anonymise_due(conn, now)
    if anonymised:  # run at each token sweep: most find none, and keep what is in memory
        _kept(conn).usage.drop_where(lambda _key: True)
    return anonymised


async def prune_settled(conn: aiosqlite.Connection, reserved_before: float) -> int:
    """Delete settled ledger rows reserved before ``reserved_before`` (``db.quotas``)."""
    pruned = await ledger.prune_settled(conn, reserved_before)
    _kept(conn).usage.drop_where(lambda _key: True)
    return pruned


# -- what ``refusal_for`` reads from memory ---------------------------------------------------

UsageKey = tuple[int, int | None]  # user, guild (None: direct messages)
LimitsKey = tuple[int, int, frozenset[int], bool]  # guild, user, roles, admin there


@dataclass(frozen=True)
class _Spending:
    starts: tuple[float, ...]  # the start of each Period when it was read
    by_period: dict[Period, ledger.Usage]

    def plus(self, change: Cost, at: float) -> _Spending:
        """With ``change`` added to every period that counts a job reserved ``at``."""
        by_period = {
            period: ledger.Usage(used.images + change.images, used.gpu_seconds + change.gpu_seconds)
            if at >= start
            else used
            for (period, used), start in zip(self.by_period.items(), self.starts, strict=True)
        }
        return dataclasses.replace(self, by_period=by_period)


@dataclass(frozen=True)
class _Reservation:
    member: UsageKey
    cost: Cost
    at: float


class _KeptQuotas:
    def __init__(self) -> None:
        self.limits: Memo[LimitsKey, QuotaLimits] = Memo(MEMBERS_KEPT)
        self.usage: Memo[UsageKey, _Spending] = Memo(MEMBERS_KEPT)
        # Reserved by this process and not settled yet: what a commit or refund replaces.
        self._open: dict[str, _Reservation] = {}
        # Every member with a reservation in the current periods, with their latest one's
        # time (``read_ahead``, then each reservation): one not among them, or whose latest
        # is older than the periods of a check, spent nothing in them, known without a read.
        self.spenders: ReadAhead[UsageKey] = ReadAhead()
        # Every guild that ever stored a limit override, once ``limits_read`` (``read_ahead``).
        self.limited_guilds: set[int] = set()
        self.limits_read = False
        # The spenders read again at a new period (``_periods_from``), until it ends; none
        # once the queue stopped (``stop_reading_again``): the database closes behind it.
        self.reading_again: asyncio.Task[None] | None = None
        self.stopped = False

    def periods_from(self, since: float) -> bool:
        """The earliest current period begins at ``since``: who spent only before it is let
        go. Whether the spenders, given up, are to be read again from it: once a period, at
        its first check or reservation, since what was let go may leave room."""
        return self.spenders.forget_before(since) and self.spenders.start_over()

    def reserved(self, job_id: str, reservation: _Reservation) -> None:
        self._open[job_id] = reservation
        self.spenders.add(((reservation.member, reservation.at),))
        self.usage.update(
            reservation.member, lambda spent: spent.plus(reservation.cost, reservation.at)
        )

    def settled(self, job_id: str, final: Cost) -> None:
        """The job's reservation was replaced by ``final`` (its measured cost, or nothing)."""
        reservation = self._open.pop(job_id, None)
        if reservation is None:  # reserved before this process started: whose is unknown
            self.usage.drop_where(lambda _key: True)
            return
        change = Cost(
            images=final.images - reservation.cost.images,
            gpu_seconds=final.gpu_seconds - reservation.cost.gpu_seconds,
        )
        self.usage.update(reservation.member, lambda spent: spent.plus(change, reservation.at))

    def nothing_spent(self, member: UsageKey, starts: tuple[float, ...]) -> _Spending | None:
        """``member``'s spending in the periods of ``starts`` when it is known to be none and
        nothing of theirs in these periods is kept (kept: it counts there), else None."""
        since = min(starts)
        kept = self.usage.kept(member)
        if (kept is not None and kept.starts == starts) or not self.spenders.lacks(member, since):
            return None
        nothing = _Spending(starts, {period: ledger.Usage(0, 0.0) for period in Period})
        self.usage.put(member, nothing)
        return nothing

    def sets_no_limit(self, guild_id: int) -> bool:
        """Whether ``guild_id`` is known to store no limit override: its members' limits are
        the defaults, known without a read."""
        return self.limits_read and guild_id not in self.limited_guilds

    def given_back(self, job_id: str, member: UsageKey) -> None:
        """The job, settled or not, counts nothing now; what it had cost is not kept here
        once settled, so the member's spending is read again."""
        self._open.pop(job_id, None)
        self.usage.drop(member)


# One per connection, like the connection's transaction lock (``db.database``): the ledger it
# mirrors is written through that connection only.
_KEPT: weakref.WeakKeyDictionary[aiosqlite.Connection, _KeptQuotas] = weakref.WeakKeyDictionary()


def _kept(conn: aiosqlite.Connection) -> _KeptQuotas:
    return _KEPT.setdefault(conn, _KeptQuotas())


def _periods_from(conn: aiosqlite.Connection, starts: tuple[float, ...]) -> _KeptQuotas:
    """What is kept for ``conn``, its spenders following the current periods (``starts``,
    ``_period_starts``): let go of who spent only before them, and, given up (past
    ``MEMBERS_READ_AHEAD``, or a failed read), read again from their start in the background,
    with the start's paging and bound; a first check reads SQLite until that read ends, as at
    the start."""
    kept = _kept(conn)
    since = min(starts)
    if not kept.stopped and kept.periods_from(since):
        kept.reading_again = asyncio.create_task(
            _read_spenders_again(conn, kept, since), name="easel-read-ahead-again"
        )
    return kept


async def stop_reading_again(conn: aiosqlite.Connection) -> None:
    """End the spenders' read again at a new period, if one runs, and start none from here
    on (the stop, before ``conn`` closes: commands are still answered after the queue's stop):
    cancelled, the set stays given up, read again at the next start."""
    kept = _kept(conn)
    kept.stopped = True
    task = kept.reading_again
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _read_spenders_again(conn: aiosqlite.Connection, kept: _KeptQuotas, since: float) -> None:
    try:
        await kept.spenders.read(ledger.spenders_since(conn, since, READ_AHEAD_PAGE), since)
    except Exception:  # it only spares reads; given up, it is tried again next period
        log.warning(
            "could not read again who spent since %s",
            datetime.fromtimestamp(since, UTC).isoformat(),
            exc_info=True,
        )


async def read_ahead(conn: aiosqlite.Connection, now: float) -> None:
    """Read once who has spent anything in the periods of ``now``, and which guilds store any
    limit override (the bot's start, in the background): the first check of a member who has
    not spent, in a guild that sets no limit (most, after a restart), then reads neither. A
    check before this ends reads, as without it."""
    kept = _kept(conn)
    kept.stopped = False  # a queue started again on this connection
    since = min(_period_starts(now))
    # United, not replaced: a reservation or an override written during the reads is in
    # them already.
    await kept.spenders.read(ledger.spenders_since(conn, since, READ_AHEAD_PAGE), since)
    kept.limited_guilds |= await ledger.guilds_with_limits(conn)
    kept.limits_read = True


def _limits_key(member: Member) -> LimitsKey:
    assert member.guild_id is not None
    return (member.guild_id, member.user_id, frozenset(member.role_ids), member.is_admin)


def _period_starts(now: float) -> tuple[float, ...]:
    return tuple(period_start(period, now) for period in Period)


async def _spending(
    conn: aiosqlite.Connection, member: UsageKey, starts: tuple[float, ...]
) -> _Spending:
    user_id, guild_id = member
    spent = await ledger.usage_since_each(conn, user_id, guild_id, list(starts))
    return _Spending(starts, dict(zip(Period, spent, strict=True)))
