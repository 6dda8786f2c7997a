"""Delivery of ended jobs' outcomes: each posted through the sink in its lane's turn, recorded
once posted; one that fails is tried again while the queue runs, within a bound
(``DeliveryRetries``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiosqlite

from bot import metrics, snowflakes
from bot.jobs import accounting
from bot.jobs.delivery_lanes import DeliveryLanes
from bot.jobs.queue.journal_writes import JournalWriter
from bot.jobs.queue.values import (
    FinishedJob,
    ForgettingSink,
    Privately,
    ResultImage,
    ResultSink,
    RetractingSink,
)
from bot.jobs.stored_files import journaled_request, stored_file
from bot.logging_setup import job_event
from db import jobs as journal
from db.database import transaction

log = logging.getLogger(__name__)

# The waits before each further try of a result's post that failed for a passing reason
# (``_passing``), in its lane; one still failing is the delivery sweep's (``DeliveryRetries``).
DELIVERY_RETRY_WAITS_S = (2.0, 8.0)
# After a post's 401, Discord's answer that it still takes the bot token (or a check that could
# not tell) is trusted this long: a burst of 401s (a restart's backlog) asks once, not once
# each, one after another.
TOKEN_TAKEN_TRUSTED_S = 60.0
# The check's own bound: discord.py tries a 5xx again for about 25 s, and waits out a 429,
# while every other 401 waits on the check.
TOKEN_CHECK_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class DeliveryRetries:
    """How the running queue tries again a result whose post failed (docs/architecture.md):
    a sweep every ``sweep_every_s`` takes at most ``per_sweep`` whose next try is due; each
    failed delivery waits twice as long as the one before, from ``first_wait_s`` up to
    ``longest_wait_s``; a job failing ``give_up_after_s`` is failed, refunded and its maker
    told, as is at once one whose failure cannot heal (``_cannot_heal``)."""

    sweep_every_s: float = 30.0
    per_sweep: int = 20
    first_wait_s: float = 30.0
    longest_wait_s: float = 3600.0
    give_up_after_s: float = 86400.0

    def __post_init__(self) -> None:
        for name in ("sweep_every_s", "first_wait_s", "longest_wait_s", "give_up_after_s"):
            if not (value := getattr(self, name)) > 0:
                raise ValueError(f"DeliveryRetries.{name} must be over 0 seconds, not {value}")
        if self.per_sweep < 1:
            raise ValueError(f"DeliveryRetries.per_sweep must be 1 or more, not {self.per_sweep}")

    def wait_after(self, failed: int) -> float:
        """The wait before the next try of a delivery that failed ``failed`` times before."""
        return min(self.first_wait_s * 2.0 ** min(failed, 32), self.longest_wait_s)


# Where a delivered job's outcome went (the ``posted`` of its ``delivered`` line), in words.
_POSTED = {
    "channel": "posted in its channel",
    "notice": "its end told to its maker alone, no picture posted",
    "private": "for its maker alone, not posted in its channel",
    "none": "not posted (the job's lines before this one say why)",
}


def _posted(job: FinishedJob, placed: int | Privately | None) -> str:
    """Where ``job``'s outcome went, as the sink answered (``ResultSink.deliver``): its post
    in the channel, its maker's alone (a failure's or a cancel's: a notice), or none: withheld,
    withdrawn, or its maker's direct messages closed (the sink's own line says why)."""
    if placed is None:
        return "none"
    if isinstance(placed, Privately):
        return "private" if job.succeeded else "notice"
    return "channel"


def _passing(error: Exception) -> bool:
    """Whether a delivery's failure may pass on its own: no answer in time, a connection
    lost, or Discord busy (a 5xx or 429 answer, after the client's own tries). Not any
    ``OSError``: a stored picture missing or unreadable stays so."""
    status = getattr(error, "status", None)
    busy = isinstance(status, int) and (status >= 500 or status == 429)
    # The bot token's 401 is tried again only once the token was checked and taken
    # (``Delivery._token_refused_now``): the refusal was not the token's, and may pass.
    busy = busy or _bot_token_refused(error)
    return busy or isinstance(error, ConnectionError | TimeoutError | aiohttp.ClientError)


# Discord's Invalid Webhook Token: a 401 about an interaction's token, not the bot's.
INVALID_WEBHOOK_TOKEN = 50027


def _bot_token_refused(error: Exception) -> bool:
    """Whether Discord refused the bot's token (a 401 but an interaction token's): the
    operator reset it, or it is wrong, or (once the token is checked and taken:
    ``Delivery._token_refused_now``) a refusal that passes. Nothing of the result's."""
    return (
        getattr(error, "status", None) == 401
        and getattr(error, "code", None) != INVALID_WEBHOOK_TOKEN
    )


def _cannot_heal(error: Exception) -> str | None:
    """Why a delivery's failure stays whatever its tries, said as its maker reads it: Discord
    refused the post itself (a 4xx answer other than 429 or the bot token's 401), or a stored
    picture is missing; None: it may pass (``_passing``), or nothing says it cannot."""
    if _passing(error):
        return None
    status = getattr(error, "status", None)
    if isinstance(status, int) and 400 <= status < 500:
        return f"Discord refused it with error {status}"
    # Only a file that is not there stays so; another OSError (EIO, EMFILE, a restore with
    # the wrong owner) may pass or be fixed, so it waits out the sweep's tries.
    if isinstance(error, FileNotFoundError | IsADirectoryError):
        return "its stored picture is missing"
    return None


def _failing_too_long(error: Exception, seconds: float) -> str:
    """Why a delivery failing for ``seconds`` (the last try's ``error``) is given up, said as
    its maker reads it: Discord's doing only where its failure was Discord's (``_passing``);
    else (the journal refused its writes, a bug) Easel's."""
    if _passing(error):
        return f"Discord did not take it for {_duration(seconds)}"
    return f"Easel's tries failed for {_duration(seconds)}"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


class Delivery:
    """Posts ended jobs' outcomes through the sink and records them posted (``deliver``),
    each in its lane (``in_turn``); tries again those whose post failed (``sweep``)."""

    def __init__(
        self,
        conn: aiosqlite.Connection,
        writer: JournalWriter,
        images_dir: Path,
        now: Callable[[], float],
        retries: DeliveryRetries,
        in_background: Callable[[Coroutine[Any, Any, None]], None],
        stop_requested: asyncio.Event,
        waits_for: Callable[[journal.JobRecord], Callable[[], Awaitable[None]] | None],
    ) -> None:
        self._conn = conn
        self._writer = writer
        self._images_dir = images_dir
        self._now = now
        self._retries = retries
        # Set once the queue stops: a delivery's wait to try again ends, and it tries no more.
        self._stop_requested = stop_requested
        # Results post one member's in one channel at a time, in the order asked for.
        self._lanes = DeliveryLanes(in_background)
        self._in_background = in_background
        # What a job's post waits for before its lane's turn (a result restored at start-up:
        # Discord's answer about its maker, ``StartGate.start_waits_for``), or None; and the
        # jobs whose posts wait so now (``_in_lane``), which the sweep leaves to that wait.
        self._waits_for = waits_for
        self._waiting: set[str] = set()
        self._sink: ResultSink | None = None
        # Ends recorded whose notice's delivery raised (``notice``): no retry time was written
        # for the sweep to find, so it tries them from here.
        self._notices_unposted: set[str] = set()
        # Whether Discord still takes the bot's token (one cheap call), asked after a post's
        # 401 (``_token_refused_now``); answered False, the composition root ends the run.
        self._token_check: Callable[[], Awaitable[bool]] | None = None
        self._checking_the_token = asyncio.Lock()  # one check for 401s at once
        # Set once the check said the token is refused: a bot token's post refused from then
        # on waits for the next start, unchecked (the run is ending).
        self._token_refused = False
        # When the last check said "taken", or could not tell (monotonic): trusted a while.
        self._token_checked_at: float | None = None

    def set_sink(self, sink: ResultSink) -> None:
        self._sink = sink

    def set_token_check(self, check: Callable[[], Awaitable[bool]]) -> None:
        """``check()``: whether Discord still takes the bot's token, asked after a post's 401
        (``_token_refused_now``); it ends the run itself when not (the next start posts what
        waits). Without one, a 401 is taken as the token's refusal."""
        self._token_check = check

    async def notice(self, job_id: str) -> None:
        """Deliver a recorded end without pictures; one whose delivery raised (its records
        refused by the journal) is kept for the sweep."""
        self._notices_unposted.discard(job_id)
        try:
            await self.deliver(job_id)
        except Exception:
            log.exception("job %s: its end is recorded, its notice not posted", job_id)
            self._notices_unposted.add(job_id)

    async def retry_notices(self) -> None:
        """Deliver again the notices whose delivery raised (``notice``)."""
        for job_id in list(self._notices_unposted):
            await self.notice(job_id)

    async def in_turn(
        self, jobs: Sequence[tuple[journal.JobRecord, bytes | None]]
    ) -> list[asyncio.Future[None]]:
        """Deliver each of these ended jobs (with its posted grid, when composed already) in
        its lane: one member's results in one channel post one at a time, in the order they
        were asked for (``bot.jobs.delivery_lanes``); each future resolves once it ran.

        One that waits for something first (``_waits_for``: a result restored at start-up,
        for Discord's answer about its maker) waits out of its lane, then takes its turn
        there: the member's later results in that channel, of work begun since (which
        admission let through live), do not wait for that answer."""
        try:
            # Two jobs journaled within one tick of the clock (or after it went back) are
            # told apart by the order they were journaled in.
            journaled = await journal.journaled_order(self._conn, [job.id for job, _ in jobs])
        except Exception:
            log.exception("jobs %s: the journal's order was not read", [job.id for job, _ in jobs])
            journaled = {}
        return [
            self._in_lane(
                job,
                (job.created_at, journaled.get(job.id, 0), job.id),
                functools.partial(self.deliver, job.id, composed, DELIVERY_RETRY_WAITS_S),
            )
            for job, composed in jobs
        ]

    def _in_lane(
        self,
        job: journal.JobRecord,
        order: tuple[float, int, str],
        post: Callable[[], Awaitable[None]],
    ) -> asyncio.Future[None]:
        """``post`` in ``job``'s lane, in its turn once what it waits for (``_waits_for``) is
        over; the future resolves once it ran, and is cancelled with the wait (Easel stops)."""
        lane = (job.user_id, job.guild_id, job.channel_id)
        waits_for = self._waits_for(job)
        if waits_for is None:
            return self._lanes.post(lane, order, post)
        posted = asyncio.get_running_loop().create_future()
        self._waiting.add(job.id)

        async def after_the_wait() -> None:
            try:
                try:
                    await waits_for()
                finally:
                    self._waiting.discard(job.id)
                await self._lanes.post(lane, order, post)
            except BaseException:
                posted.cancel()
                raise
            if not posted.done():  # its waiter may have given up
                posted.set_result(None)

        self._in_background(after_the_wait())
        return posted

    async def deliver(
        self, job_id: str, composed: bytes | None = None, retry_waits: Sequence[float] = ()
    ) -> None:
        """Post the job's outcome (``composed``: its posted grid, when made already), then
        record that it was posted (``_post_outcome``); a job whose result cannot be posted is
        failed meanwhile, and its failure posted instead. A job's deliveries (a start's, the
        sweep's) run in its lane, one after another (``in_turn``): the later one reads
        the earlier one's outcome, never posts beside it. The one outside lanes, of a job
        just ended without pictures (``JobEnds.finish_unsuccessfully``), runs before any try
        of it is due.

        At least once, and a try that may have landed is looked for before posting again
        (``FinishedJob.post_attempted_at``): editing the interaction's original response is
        idempotent, and the sink finds a channel post a crash kept from being recorded.
        """
        while await self._post_outcome(job_id, composed, retry_waits):
            composed = None  # failed since: its failure has no picture

    async def _post_outcome(
        self, job_id: str, composed: bytes | None, retry_waits: Sequence[float]
    ) -> bool:
        """Post the job's outcome and record it posted. A failure that may pass (``_passing``)
        is tried again after each of ``retry_waits`` (read afresh: a moderator may have
        withdrawn it meanwhile), unless the queue stops; one still failing is recorded for
        the sweep (``_delivery_failed``); one refused for the bot's token waits for the next
        start (``_token_refused_now``). Whether the job failed since, as its result cannot be
        posted: its failure is to be posted now."""
        waits = iter(retry_waits)
        while True:
            job = await journal.get_job(self._conn, job_id)
            if self._sink is None or job is None or job.delivered_at is not None:
                return False
            images = await journal.images_of(self._conn, job_id)
            finished = await self.finished(job, images, composed, with_posts=True)
            try:
                # Each try's time: the next looks for this one's post from there (``finished``
                # carries the try before this one's).
                await self._writer.write(
                    f"job {job_id}: its post's try",
                    functools.partial(journal.mark_post_attempted, self._conn, job_id, self._now()),
                )
            except aiosqlite.OperationalError as error:
                return await self._delivery_failed(job, error)
            try:
                placed = await self._sink.deliver(finished)
                break
            except Exception as error:
                if _bot_token_refused(error) and await self._token_refused_now(job_id):
                    metrics.delivery_tried("failed")  # tried at the next start
                    return False
                wait = next(waits, None) if _passing(error) else None
                if wait is None or self._stop_requested.is_set():
                    return await self._delivery_failed(job, error)
                metrics.delivery_tried("failed")
                log.warning(
                    "job %s: delivery failed (%s); tried again in %.0f s",
                    job_id,
                    type(error).__name__,
                    wait,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), wait)
            if self._stop_requested.is_set():
                log.info("job %s: not delivered before the stop; tried at the next start", job_id)
                return False
        still_there = await self._writer.write(
            f"job {job_id}: its delivery",
            functools.partial(
                journal.mark_delivered,
                self._conn,
                job_id,
                self._now(),
                posted_in_channel=isinstance(placed, int),
            ),
        )
        if not still_there and isinstance(placed, int) and isinstance(self._sink, RetractingSink):
            await self._sink.retract(finished, placed)
        posted = _posted(finished, placed)
        # Posted nowhere is no delivery: withheld, withdrawn, or its maker's DMs closed.
        metrics.delivery_tried("not_posted" if posted == "none" else "delivered")
        log.info(
            "job %s delivered: %s",
            job_id,
            _POSTED[posted],
            extra=job_event(job_id, "delivered", posted=posted),
        )
        return False

    async def _delivery_failed(self, job: journal.JobRecord, error: Exception) -> bool:
        """Record a failed delivery of ``job``'s outcome: the sweep tries it again after a
        wait that doubles with each failure (``DeliveryRetries``), unless its failure cannot
        heal (``_cannot_heal``) or it has failed for ``give_up_after_s``. Then a done job is
        failed and refunded whole, and its failure is to be posted instead (True: its maker is
        told, as of any failure); for a job with no result (failed or cancelled) nothing else
        could tell its maker, so its delivery is given up, logged and recorded as done."""
        now = self._now()
        retries = self._retries
        failing_since = now if job.delivery_failing_since is None else job.delivery_failing_since
        why = _cannot_heal(error)
        if why is None and now - failing_since < retries.give_up_after_s:
            wait = retries.wait_after(job.delivery_tries)
            await self._writer.write(
                f"job {job.id}: its failed delivery",
                functools.partial(journal.delivery_failed, self._conn, job.id, now, now + wait),
            )
            metrics.delivery_tried("failed")
            log.warning(
                "job %s: delivery failed (%s); tried again in %.0f s",
                job.id,
                type(error).__name__,
                wait,
                # An outage fails every delivery for its length: one line each, no traceback.
                exc_info=None if _passing(error) else error,
            )
            return False
        why = why or _failing_too_long(error, now - failing_since)
        if job.status is not journal.JobStatus.DONE:
            log.error("job %s: its end could not be posted (%s); given up", job.id, why)
            metrics.delivery_tried("given_up")
            try:
                await self._writer.write(
                    f"job {job.id}: its given-up delivery",
                    functools.partial(journal.mark_delivered, self._conn, job.id, now),
                )
            finally:
                # Even if that write is refused: a later try, if any, goes as after a
                # restart, with nothing kept for it.
                self._given_up(job.id, why)
            return False
        refunded = (
            f"the result could not be posted ({why}), so it does not count against your "
            f"quota; reference {job.id}"
        )

        async def fail_refunded() -> bool | None:
            """Whether the job was failed and refunded; None when its row is gone (/forget-me
            erased it while its delivery waited: its picture with it)."""
            async with transaction(self._conn):
                if await journal.fail_undeliverable(self._conn, job.id, refunded):
                    await accounting.refund_withheld(self._conn, job.id, now)
                    return True
                return None if await journal.get_job(self._conn, job.id) is None else False

        failed = await self._writer.write(f"job {job.id}: its undeliverable end", fail_refunded)
        if failed:
            log.error("job %s: its result cannot be posted (%s); failed, refunded", job.id, why)
            metrics.delivery_tried("given_up")
            log.info("job %s refunded", job.id, extra=job_event(job.id, "refunded"))
            await asyncio.to_thread(shutil.rmtree, self._images_dir / job.id, ignore_errors=True)
            return True
        if failed is None:
            log.info("job %s: erased before its delivery; nothing posted", job.id)
        # Delivered, ended or erased meanwhile: nothing of this delivery is tried again.
        self._given_up(job.id, why)
        return False

    async def _token_refused_now(self, job_id: str) -> bool:
        """After ``job_id``'s post was refused with a 401 (``_bot_token_refused``): whether
        the bot's token is refused, checked once (``set_token_check``; a 401 after a refusal
        is not checked again). Refused, the job stays undelivered, unfailed, uncounted as
        failing: the next start posts it (the check ended this run). Taken (or the check
        itself failed), the refusal was not the token's: the post is tried again as after a
        passing failure (``_passing``), counted toward ``give_up_after_s`` as those are."""
        async with self._checking_the_token:
            if not self._token_refused:
                checked_at = self._token_checked_at
                if checked_at is not None and time.monotonic() - checked_at < TOKEN_TAKEN_TRUSTED_S:
                    log.warning(
                        "job %s: Discord refused its post (401); the bot token was checked %.0f s "
                        "ago; tried again",
                        job_id,
                        time.monotonic() - checked_at,
                    )
                    return False
                try:
                    async with asyncio.timeout(TOKEN_CHECK_TIMEOUT_S):
                        taken = self._token_check is not None and await self._token_check()
                except Exception as error:  # Discord unreachable: the refusal's cause unknown
                    self._token_checked_at = time.monotonic()  # not asked again at once
                    log.warning(
                        "job %s: Discord refused its post (401), and the bot token's check "
                        "failed (%s); tried again",
                        job_id,
                        type(error).__name__,
                    )
                    return False
                if taken:
                    self._token_checked_at = time.monotonic()
                    log.warning(
                        "job %s: Discord refused its post (401) but takes the bot token; "
                        "tried again",
                        job_id,
                    )
                    return False
                log.error(
                    "Discord refused the bot token (401): results wait for the next start "
                    "with a valid DISCORD_TOKEN"
                )
                self._token_refused = True
        return True

    def _given_up(self, job_id: str, why: str) -> None:
        """Let a sink that keeps things for a delivery's next try (a progress message) drop
        them: ``job_id``'s delivery is not tried again, for ``why``."""
        if isinstance(self._sink, ForgettingSink):
            self._sink.given_up(job_id, why)

    async def sweep(self, kept_ends: Callable[[], Awaitable[int]]) -> None:
        """While the queue runs, every ``sweep_every_s``: write the ends kept from before
        (``kept_ends``: how many stay kept), deliver the notices kept (``retry_notices``),
        count what waits to be posted (``metrics.undelivered_jobs``: those ends and the ended
        jobs undelivered in the journal), then deliver again, each in its lane's turn, at most
        ``per_sweep`` results whose next try is due, and wait for them (a sweep never piles
        tries on the tries of the one before); not those restored at start-up still waiting
        for their makers' answers."""
        retries = self._retries
        while not self._stop_requested.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), retries.sweep_every_s)
            if self._stop_requested.is_set():
                return
            kept: int | None = None
            try:
                kept = await kept_ends()
                await self.retry_notices()
            except Exception:
                log.exception("the kept ends were not written; the sweep goes on")
            try:
                if kept is not None:  # else uncounted this round
                    metrics.undelivered_jobs(kept + await journal.undelivered_count(self._conn))
                # Not those whose posts wait for something first (``_waiting``: results
                # restored at start-up, which the start's delivery posts once their makers are
                # answered): read, they would fill the sweep's page round after round.
                due = await journal.deliveries_due(
                    self._conn, self._now(), retries.per_sweep, self._waiting
                )
            except Exception:
                log.exception("the deliveries due were not read; the sweep goes on")
                continue
            posts = await self.in_turn([(job, None) for job in due])
            # One that now waits first is left to its wait: awaited here, it would hold every
            # other member's retry for it.
            await asyncio.gather(
                *(
                    post
                    for job, post in zip(due, posts, strict=True)
                    if job.id not in self._waiting
                ),
                return_exceptions=True,
            )

    async def finished(
        self,
        job: journal.JobRecord,
        images: Sequence[journal.ImageRecord] = (),
        composed: bytes | None = None,
        *,
        with_posts: bool = False,
    ) -> FinishedJob:
        """What a delivery (or the start gate) knows of ``job``: its parent is read only for
        a withdrawn job, to say whether it was withdrawn with it; its recorded posts in its
        channel (``FinishedJob.posted_ids``) only ``with_posts`` (a delivery's: the start
        gate reads none)."""
        with_source = source_made_by_another = False
        if job.withdrawn_at is not None and job.parent_job_id is not None:
            parent = await journal.get_job(self._conn, job.parent_job_id)
            # Withdrawn with it: at its time (one time for all a withdrawal reaches; a job
            # made from a withdrawn one takes its time), not for its own message before. A
            # deleted channel withdraws what was made there too: made in its parent's
            # channel, it went with its own channel, not with its parent.
            if (
                parent is not None
                and parent.withdrawn_at == job.withdrawn_at
                and not (job.withdrawn_with_channel and parent.channel_id == job.channel_id)
            ):
                with_source = True
                source_made_by_another = parent.user_id != job.user_id
        posted_ids: tuple[int, ...] = ()
        if with_posts and job.channel_id is not None:  # never tried too: to point its progress
            posted_ids = await journal.first_posts_in(
                self._conn,
                job.id,
                job.channel_id,
                discord_epoch_ms=snowflakes.DISCORD_EPOCH_MS,
                clock_slack_s=snowflakes.CLOCK_SLACK_S,
            )
        # Ended before its render with the start gate's why in place of "cancelled".
        ended_at_start = job.status is journal.JobStatus.CANCELLED and job.error != "cancelled"
        # Withdrawn by Easel (withheld at delivery) is not a moderator's withdrawal.
        withdrawn = job.withdrawn_at is not None and job.withheld_why is None
        return FinishedJob(
            job_id=job.id,
            kind=job.kind,
            succeeded=job.status is journal.JobStatus.DONE,
            error=job.error,
            request=journaled_request(self._images_dir.parent, job.request_json),
            user_id=job.user_id,
            guild_id=job.guild_id,
            channel_id=job.channel_id,
            application_id=job.application_id,
            interaction_token=job.interaction_token,
            interaction_created_at=job.interaction_created_at,
            images=tuple(
                ResultImage(stored_file(self._images_dir.parent, i.path), i.seed, i.infotext)
                for i in images
            ),
            filesize_limit=job.filesize_limit,
            spoiler=job.spoiler,
            private=job.private,
            private_since_submit=job.private_since_submit,
            age_restricted=job.age_restricted,
            thread_parent_id=job.thread_parent_id,
            withdrawn=withdrawn,
            withdrawn_with_source=with_source,
            source_made_by_another=source_made_by_another,
            withdrawn_with_channel=job.withdrawn_with_channel,
            moderator_stopped=job.stopped_by is journal.StoppedBy.MODERATOR,
            imposed_stop=job.stopped_by is journal.StoppedBy.IMPOSED,
            withheld=job.error if ended_at_start else job.withheld_why,
            composed=composed,
            created_at=job.created_at,
            post_attempted_at=job.post_attempted_at,
            finished_at=job.finished_at,
            posted_ids=posted_ids,
        )
