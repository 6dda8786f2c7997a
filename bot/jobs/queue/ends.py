"""How jobs end in the journal: a rendered job's pictures stored and recorded with its
charge, a failed or cancelled one's end with its refund or charge, each in one transaction
tried again while the database refuses it (``JournalWriter``); an end the journal still
refuses is kept for the delivery sweep, which writes and delivers it (``JobEnds.retry_kept``).
Kept in this process only: Easel stopped before it is written, the journal says running, and
the next start renders the job again (or ends it, refunded, if its stop was asked)."""

from __future__ import annotations

import asyncio
import functools
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from bot.images import (
    DEFAULT_FILESIZE_LIMIT,
    decoded,
    pixel_digest,
    pixel_digest_of,
    posted_as_grid,
    posted_file,
    posted_grid_png,
)
from bot.jobs import accounting
from bot.jobs.queue.delivery import Delivery
from bot.jobs.queue.journal_writes import JournalWriter
from bot.jobs.queue.room_log import RoomLog
from bot.jobs.queue.values import CancelOutcome, KeptEnd
from bot.jobs.stored_files import stored_name
from bot.logging_setup import job_event
from db import broker_chores
from db import jobs as journal
from db.database import is_out_of_room, transaction
from inference.limits import MAX_SEED
from inference.prompts.flags import picture_seed
from inference.types import RenderedImage, RenderRequest

log = logging.getLogger(__name__)


def composed_grid(request: RenderRequest, rendered: Sequence[RenderedImage]) -> bytes | None:
    """The grid a job of several pictures is posted as, from the pictures' pixels (a broker
    worker's decoded from its PNGs, as the delivery would); None for one picture and when
    composing fails (the delivery composes it from the stored files then)."""
    if not posted_as_grid(request, len(rendered)):
        return None
    try:
        pictures = [image.picture for image in rendered if image.picture is not None]
        if len(pictures) < len(rendered):
            pictures = decoded([image.png for image in rendered])
        seeds = [journaled_seed(request, i, image) for i, image in enumerate(rendered)]
        return posted_grid_png(request, pictures, rendered[0].infotext, seeds)
    except Exception:
        log.exception("the grid of %d pictures could not be composed early", len(pictures))
        return None


def journaled_seed(request: RenderRequest, index: int, rendered: RenderedImage) -> int:
    """The seed picture ``index`` of ``request`` is recorded with: its own, or, where the
    journal's integers cannot keep it (past ``MAX_SEED``, or negative: a version 1 worker's
    face pass or fast upscale reading a picture's text's seed), the request's for it, so that
    storing it never fails (its text still says what it was made with)."""
    if 0 <= rendered.seed <= MAX_SEED:
        return rendered.seed
    return picture_seed(request.seed, index)


def posted_digests(
    request: RenderRequest,
    rendered: Sequence[RenderedImage],
    composed: bytes | None,
    filesize_limit: int | None,
) -> list[bytes]:
    """The pixel digests of the grid a job of several is posted as (``composed``), and of the
    JPEG previews posted in place of a grid or picture over ``filesize_limit`` or the smallest
    limit (``posted_file``, as the delivery makes them: ``cogs.results.fitted``): the files a
    moderator deletes and a member saves. Not known here: the preview of a grid composed only
    at delivery, one for a boosted server's channel under a larger interaction's limit (a Nitro
    member's), and /show's and U1-U4's (their own interaction's limit)."""
    digests = [] if composed is None else [pixel_digest_of(composed)]
    posted = composed
    if posted is None and rendered and not posted_as_grid(request, len(rendered)):
        posted = rendered[0].png
    if posted is not None:
        # Posted under the interaction's limit, else under the smallest: in direct messages,
        # in an unboosted server's channel, or again once Discord refused a file as too large.
        for limit in {filesize_limit or DEFAULT_FILESIZE_LIMIT, DEFAULT_FILESIZE_LIMIT}:
            fitted = posted_file(posted, limit)
            if fitted.is_preview:
                digests.append(pixel_digest_of(fitted.data))
    return digests


def _unstored(job_id: str, error: Exception) -> str:
    """A rendered job's failure, its pictures not stored (or their record refused for good)."""
    reason = error.strerror if isinstance(error, OSError) else None
    return (
        f"the pictures were rendered but could not be stored on the server "
        f"({reason or type(error).__name__}); reference {job_id}"
    )


# The GPU seconds an ended job is charged (None: refunded whole), or how to read them as its
# end is written.
Charge = float | Callable[[], float | None] | None


def _charged(used_s: Charge) -> float | None:
    return used_s() if callable(used_s) else used_s


@dataclass
class _KeptCancel:
    """A cancel its member was told of whose end the journal refused (``JobEnds.record_cancel``)."""

    error: str
    used_s: float | None  # the GPU seconds it is charged (None: refunded whole)
    # Its stop's ask may be missing from the journal (an imposed stop's, refused): written
    # before its end, so that a crash between the two still ends it at the next start.
    ask_first: bool
    # Who stopped it, written with its ask or its end (None: recorded with its ask).
    stopped_by: journal.StoppedBy | None = None


@dataclass(frozen=True)
class _KeptFailure:
    """A failure whose end the journal refused (``JobEnds.finish_unsuccessfully``, a rendered
    job's pictures not stored): refunded whole once written."""

    error: str


@dataclass(frozen=True)
class _Done:
    """What a rendered job's end records with its charge (``JobEnds._record_done``), its
    pictures stored: kept as it is when the journal refuses it."""

    records: list[journal.ImageRecord]
    gpu_seconds: float
    posted_digests: list[bytes]


@dataclass(frozen=True)
class Recorded:
    """A rendered job's end recorded (``JobEnds.record_success``): done, or failed as its
    pictures were not stored; ``composed``: the grid it is posted as, when composed."""

    composed: bytes | None


class JobEnds:
    """Records jobs' ends (``record_success``, ``record_failure``) and delivers those without
    pictures at once (``finish_unsuccessfully``); ``on_ended(job_id, outcome)`` is called as
    each end is recorded. ``settles_copies``: renders run on a broker, and each end records
    in its transaction that the broker's copies of the job are to be settled
    (``bot.jobs.queue.broker_chores``)."""

    def __init__(
        self,
        conn: aiosqlite.Connection,
        writer: JournalWriter,
        delivery: Delivery,
        images_dir: Path,
        now: Callable[[], float],
        on_ended: Callable[[str, str], None],
        *,
        settles_copies: bool = False,
    ) -> None:
        self._conn = conn
        self._settles_copies = settles_copies
        self._writer = writer
        self._delivery = delivery
        self._images_dir = images_dir
        self._now = now
        self._on_ended = on_ended
        # Ends the journal refused past their retries, written by the delivery sweep
        # (``retry_kept``): a cancel the member was told of (``record_cancel``: its error and
        # charge, so the job is not rendered and charged at the next start), a failure, or a
        # rendered job's pictures (``record_success``), so that it is not left running, its
        # quota reserved and its member shown its progress, until the next start.
        self._ends_unrecorded: dict[str, _KeptCancel | _KeptFailure | _Done] = {}
        # Held while the sweep writes one of them, and while a stop imposed on a rendered one
        # makes it a cancel (``cancel_kept_result``): never both on one end.
        self._kept_writing = asyncio.Lock()
        # A full EASEL_DATA_DIR, as pictures' stores find it.
        self._room = RoomLog(
            images_dir.parent, "is full", "rendered jobs fail, refunded,", "pictures are stored"
        )

    async def record_success(
        self,
        job_id: str,
        request: RenderRequest,
        rendered: list[RenderedImage],
        gpu_seconds: float,
    ) -> Recorded | None:
        """Store the pictures and record them with the job's end, and charge it; what was
        recorded, or None: the journal stayed unwritable (``JournalWriter.write``), and the end
        is kept, its pictures too, for the delivery sweep to write and deliver
        (``retry_kept``).

        A storage failure (a full disk, a folder it may not write), or a record refused for
        good (a constraint, the ledger), fails the job instead: refunded, and the member told,
        rather than left running with its quota reserved (a failure the journal refuses is
        kept as well); its pictures are deleted. Raises only the journal's refusal of the job's
        read before its pictures are stored: nothing is kept, and the next start renders it."""
        done: _Done | None = None
        try:
            job = await journal.get_job(self._conn, job_id)
            filesize_limit = None if job is None else job.filesize_limit
            records, composed, posted_digests = await asyncio.to_thread(
                self._store_images, job_id, request, rendered, filesize_limit
            )
            self._room.has_room()
            done = _Done(records, gpu_seconds, posted_digests)
            await self._writer.write(
                f"job {job_id}: its pictures", functools.partial(self._record_done, job_id, done)
            )
        except aiosqlite.OperationalError as refused:
            if done is None:
                raise
            log.error(
                "job %s: its outcome was not recorded (%s); kept, the delivery sweep writes and "
                "posts it once the journal takes it (a stop of Easel before then renders it "
                "again at the next start)",
                job_id,
                refused,
            )
            self._ends_unrecorded[job_id] = done
            return None
        except Exception as error:
            return Recorded(None) if await self._fail_unstored(job_id, error) else None
        self._on_ended(job_id, "done")
        return Recorded(composed)

    async def _fail_unstored(self, job_id: str, error: Exception) -> bool:
        """Fail a rendered job whose pictures could not be stored (``error``), or whose record
        was refused for good: refunded, its member told; its pictures deleted, whether the
        journal took its end or it is kept (``failure_recorded``). Whether it was recorded. A
        full disk is logged once while it lasts (``RoomLog``: each job's failure would be a
        traceback, and the cause hidden in it), any other error here with its traceback."""
        if await is_out_of_room(error):
            await self._room.ran_short()
        else:
            log.error(
                "job %s: rendered, but its pictures could not be stored", job_id, exc_info=error
            )
        try:
            return await self.failure_recorded(job_id, _unstored(job_id, error))
        finally:
            await self._delete_pictures(job_id)

    async def _delete_pictures(self, job_id: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self._images_dir / job_id, ignore_errors=True)

    async def _record_done(self, job_id: str, done: _Done) -> None:
        """The job's pictures, its end and its charge: one transaction, so that a crash leaves
        all or none."""
        now = self._now()
        async with transaction(self._conn):
            await journal.mark_done(
                self._conn, job_id, done.records, done.gpu_seconds, now, done.posted_digests
            )
            await accounting.charge(self._conn, job_id, done.gpu_seconds, len(done.records), now)
            await self._owe_settle(job_id, "done", now)

    async def _owe_settle(self, job_id: str, outcome: str, now: float) -> None:
        """In the transaction of the job's end: the broker's copies of it are to be settled."""
        if self._settles_copies:
            await broker_chores.owe(self._conn, job_id, outcome, now)

    async def finish_unsuccessfully(
        self,
        job_id: str,
        error: str,
        *,
        cancelled: bool = False,
        stopped_by: journal.StoppedBy | None = None,
        clicked_first: bool = False,
    ) -> bool:
        """Record the end of a job that has no pictures (failed, or cancelled before or while
        it rendered) and deliver it at once, outside its lane: there is no result to order,
        and a cancel (a ban's) waits for the member to be told. Whether it was recorded: a
        journal that stays unwritable leaves the job as it was there and nothing is delivered,
        a cancel for its caller to answer (``Cancels.cancel``), a failure kept for the delivery
        sweep, which writes and delivers it (``failure_recorded``). A delivery that raises
        once the end is recorded is logged, not raised: the end stands, and the sweep
        delivers it (``Delivery.retry_notices``). ``stopped_by``, ``clicked_first``: a
        cancel's stopper (``journal.mark_failed``)."""
        if cancelled:
            recorded = await self._end_recorded(
                job_id,
                error,
                cancelled=True,
                used_s=None,
                stopped_by=stopped_by,
                clicked_first=clicked_first,
            )
        else:
            recorded = await self.failure_recorded(job_id, error)
        if not recorded:
            return False
        await self._delivery.notice(job_id)
        return True

    async def end_cancelled(
        self,
        job_id: str,
        error: str,
        used_s: Charge = None,
        *,
        retried: bool = True,
        ask_first: bool = True,
        stopped_by: journal.StoppedBy | None = None,
    ) -> None:
        """Record a cancel its member was told of (``record_cancel``) and deliver its notice
        at once (``finish_unsuccessfully``'s reasons)."""
        if await self.record_cancel(
            job_id, error, used_s, retried=retried, ask_first=ask_first, stopped_by=stopped_by
        ):
            await self._delivery.notice(job_id)

    async def record_cancel(
        self,
        job_id: str,
        error: str,
        used_s: Charge = None,
        *,
        retried: bool = True,
        ask_first: bool = True,
        stopped_by: journal.StoppedBy | None = None,
    ) -> bool:
        """Record a cancel its member was told of; whether it was recorded (``retried``: as
        ``JournalWriter.write``). One the journal refuses is kept, and the delivery sweep
        writes it (``retry_kept``): its stop was recorded as asked before its member was told
        (``JobQueue.cancel``), or the sweep records that first (``ask_first``: it may not be;
        False for one known asked, and for one ended by the rules of now at its start, which
        the next start judges again), so a stop of Easel meanwhile still ends it at the next
        start, not renders and charges it. ``stopped_by``: who stopped it, unless its ask
        recorded that (None; ``journal.mark_failed``). ``used_s`` as ``record_failure``."""
        if await self._end_recorded(
            job_id, error, cancelled=True, used_s=used_s, retried=retried, stopped_by=stopped_by
        ):
            return True
        self._ends_unrecorded[job_id] = _KeptCancel(error, _charged(used_s), ask_first, stopped_by)
        return False

    async def failure_recorded(self, job_id: str, error: str) -> bool:
        """Record a failed job's end, refunded whole, its notice for the caller to deliver
        (``Delivery.in_turn``); whether the journal took it. One it refuses is kept for the
        delivery sweep (``retry_kept``), which delivers it."""
        if await self._end_recorded(job_id, error, cancelled=False, used_s=None):
            return True
        self._ends_unrecorded[job_id] = _KeptFailure(error)
        return False

    async def write_ask(
        self,
        job_id: str,
        *,
        retried: bool = True,
        stopped_by: journal.StoppedBy | None = None,
        clicked_first: bool = False,
    ) -> None:
        """Record in the journal that a stop of ``job_id`` was asked, by ``stopped_by``
        (``clicked_first``: over a stopper recorded since its click), while it is queued or
        running (``journal.ask_cancel``): a start that finds it unfinished ends it, refunded
        whole. In a transaction of its own: a lone statement would join another coroutine's,
        and its rollback would undo the ask after the member was told. Raises as
        ``JournalWriter.write``."""

        async def ask() -> None:
            async with transaction(self._conn):
                await journal.ask_cancel(
                    self._conn, job_id, self._now(), stopped_by, clicked_first=clicked_first
                )

        await self._writer.write(f"job {job_id}: its stop asked", ask, retried=retried)

    async def _end_recorded(
        self,
        job_id: str,
        error: str,
        *,
        cancelled: bool,
        used_s: Charge,
        retried: bool = True,
        stopped_by: journal.StoppedBy | None = None,
        clicked_first: bool = False,
    ) -> bool:
        """``record_failure``; whether the journal took it (one it refuses is logged)."""
        try:
            await self.record_failure(
                job_id,
                error,
                cancelled=cancelled,
                used_s=used_s,
                retried=retried,
                stopped_by=stopped_by,
                clicked_first=clicked_first,
            )
        except aiosqlite.OperationalError:
            log.critical(
                "job %s: its end (%s) was not recorded",
                job_id,
                "cancelled" if cancelled else "failed",
                exc_info=True,
            )
            return False
        return True

    def cancel_unrecorded(self, job_id: str) -> bool:
        """Whether a cancel of ``job_id`` is kept for the sweep (``record_cancel``)."""
        return isinstance(self._ends_unrecorded.get(job_id), _KeptCancel)

    def kept_cancel(self, job_id: str, *, owner_pays: bool) -> CancelOutcome | None:
        """How a cancel asked again of ``job_id`` is answered while its end is kept
        (``record_cancel``): it stopped, free unless its owner chose the stop and it used
        GPU time; a stop its owner did not choose (a ban's) makes it free. None: none kept."""
        if not isinstance(kept := self._ends_unrecorded.get(job_id), _KeptCancel):
            return None
        if not owner_pays:
            kept.used_s = None
        return CancelOutcome.STOPPING_FREE if kept.used_s is None else CancelOutcome.STOPPING

    def ended_unrecorded(self, job_id: str) -> KeptEnd | None:
        """How ``job_id`` ended, rendered or failed, if its end is kept for the sweep
        (``record_success``, ``finish_unsuccessfully``): too late to cancel, its outcome
        delivered once the journal takes it. None: no such end kept."""
        kept = self._ends_unrecorded.get(job_id)
        if isinstance(kept, _Done):
            return KeptEnd.RENDERED
        return KeptEnd.FAILED if isinstance(kept, _KeptFailure) else None

    async def cancel_kept_result(self, job_id: str) -> bool:
        """A stop imposed on the maker of ``job_id`` (a ban's, a moderator's withdrawal)
        while its rendered result is kept for the sweep: the result is never posted nor
        charged, but kept as a cancel refunded whole (its ask written first, so a start ends
        it), as the stop of any unfinished job is; its pictures are deleted. Whether it was
        so: False when no result is kept for it (the sweep wrote it meanwhile: it ended)."""
        async with self._kept_writing:
            if not isinstance(self._ends_unrecorded.get(job_id), _Done):
                return False
            self._ends_unrecorded[job_id] = _KeptCancel(
                "cancelled", used_s=None, ask_first=True, stopped_by=journal.StoppedBy.IMPOSED
            )
        await self._delete_pictures(job_id)
        return True

    async def retry_kept(self) -> int:
        """Write the ends the journal refused before (``_ends_unrecorded``), and deliver them:
        a cancel's or a failure's notice at once, a result in its lane's turn
        (``Delivery.in_turn``). Each write is tried once, and none after the first the journal
        refuses again: a database locked or full would make each try wait out its busy
        timeout, and the sweep must not stall behind them for minutes; the next sweep tries
        them again. Any other error is one end's: logged, and the others are written; a
        result refused so fails, refunded (as ``record_success`` fails it), at the next
        sweep. How many stay kept."""
        for job_id in list(self._ends_unrecorded):
            async with self._kept_writing:
                # Read again: a stop imposed meanwhile may have made a result a cancel.
                if (kept := self._ends_unrecorded.get(job_id)) is None:
                    continue
                try:
                    job = await self._write_kept(job_id, kept)
                except aiosqlite.OperationalError as refused:
                    log.warning(
                        "%d kept end(s) not written (%s); tried again at the next sweep",
                        len(self._ends_unrecorded),
                        refused,
                    )
                    return len(self._ends_unrecorded)
                except Exception as error:
                    await self._kept_refused(job_id, kept, error)
                    continue
                self._ends_unrecorded.pop(job_id, None)
            if not isinstance(kept, _Done):
                await self._delivery.notice(job_id)
                continue
            self._on_ended(job_id, "done")
            if job is not None:
                await self._delivery.in_turn([(job, None)])
        return len(self._ends_unrecorded)

    async def _kept_refused(
        self, job_id: str, kept: _KeptCancel | _KeptFailure | _Done, error: Exception
    ) -> None:
        """An end kept whose write failed otherwise than the journal's refusal (a constraint,
        the ledger): logged; a result is kept as a failure instead, its pictures deleted."""
        if not isinstance(kept, _Done):
            log.error(
                "job %s: its kept end was not written; tried again at the next sweep",
                job_id,
                exc_info=error,
            )
            return
        log.error("job %s: its kept result was not recorded; it fails", job_id, exc_info=error)
        self._ends_unrecorded[job_id] = _KeptFailure(_unstored(job_id, error))
        await self._delete_pictures(job_id)

    async def _write_kept(
        self, job_id: str, kept: _KeptCancel | _KeptFailure | _Done
    ) -> journal.JobRecord | None:
        """Write an end kept (``retry_kept``), tried once; a cancel's ask first where it may
        be missing (``_KeptCancel.ask_first``). A result's job as read before its write, for
        its delivery (which reads it again), or None (none, or not a result)."""
        if isinstance(kept, _Done):
            job = await journal.get_job(self._conn, job_id)
            await self._writer.write(
                f"job {job_id}: its pictures",
                functools.partial(self._record_done, job_id, kept),
                retried=False,
            )
            return job
        if isinstance(kept, _KeptFailure):
            await self.record_failure(job_id, kept.error, retried=False)
        else:
            if kept.ask_first:
                await self.write_ask(job_id, retried=False, stopped_by=kept.stopped_by)
                kept.ask_first = False
            await self.record_failure(
                job_id,
                kept.error,
                cancelled=True,
                used_s=kept.used_s,
                retried=False,
                stopped_by=kept.stopped_by,
            )
        return None

    async def record_failure(
        self,
        job_id: str,
        error: str,
        *,
        cancelled: bool = False,
        used_s: Charge = None,
        retried: bool = True,
        stopped_by: journal.StoppedBy | None = None,
        clicked_first: bool = False,
    ) -> None:
        """Record the job's end; refunded whole, or with ``used_s`` (a job cancelled while
        running) its pictures refunded and those GPU seconds charged: cancelling a render at
        its last step must not make it free. The end and its refund or charge are one
        transaction: a crash leaves both or neither. ``stopped_by``, ``clicked_first``: a
        cancel's stopper (``journal.mark_failed``). A ``used_s`` to call is read as the end
        commits (a stop imposed meanwhile may make it free)."""
        now = self._now()
        outcome = "cancelled" if cancelled else "failed"

        async def record() -> float | None:
            async with transaction(self._conn):
                await journal.mark_failed(
                    self._conn,
                    job_id,
                    error,
                    now,
                    cancelled=cancelled,
                    stopped_by=stopped_by,
                    clicked_first=clicked_first,
                )
                if (charged := _charged(used_s)) is None:
                    await accounting.refund(self._conn, job_id, now)
                else:
                    await accounting.charge(self._conn, job_id, charged, 0, now)
                await self._owe_settle(job_id, outcome, now)
                return charged

        charged = await self._writer.write(f"job {job_id}: its end", record, retried=retried)
        self._on_ended(job_id, outcome)
        if charged is None:
            log.info("job %s refunded", job_id, extra=job_event(job_id, "refunded"))
        else:
            log.info(
                "job %s charged %.1f GPU seconds, no pictures",
                job_id,
                charged,
                extra=job_event(job_id, "charged"),
            )

    def _store_images(
        self,
        job_id: str,
        request: RenderRequest,
        rendered: list[RenderedImage],
        filesize_limit: int | None,
    ) -> tuple[list[journal.ImageRecord], bytes | None, list[bytes]]:
        """The pictures' files and records, and the grid the job is posted as (composed
        first, from the pixels, while the engine's pool still encodes the PNGs), with the pixel
        digests of what is posted besides the pictures (``posted_digests``): a multi-picture
        job is posted, deleted and saved as that one picture."""
        composed = composed_grid(request, rendered)
        folder = self._images_dir / job_id
        folder.mkdir(parents=True, exist_ok=True)
        records = []
        for idx, image in enumerate(rendered):
            path = folder / f"{idx}.png"
            png = image.png
            path.write_bytes(png)
            # Its pixels, so a copy uploaded again is known whatever its name (the PNG holds
            # the engine's pixels losslessly; a broker worker's crossed the wire as PNG only).
            digest = pixel_digest_of(png) if image.picture is None else pixel_digest(image.picture)
            records.append(
                journal.ImageRecord(
                    job_id,
                    idx,
                    journaled_seed(request, idx, image),
                    stored_name(self._images_dir.parent, path),
                    image.infotext,
                    image.width,
                    image.height,
                    digest,
                )
            )
        return records, composed, posted_digests(request, rendered, composed, filesize_limit)
