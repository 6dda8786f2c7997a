"""How jobs end in the journal: a rendered job's pictures stored and recorded with its
charge, a failed or cancelled one's end with its refund or charge, each in one transaction
tried again while the database refuses it (``JournalWriter``); a cancel the journal still
refuses is kept for the delivery sweep."""

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
from bot.jobs.queue.values import CancelOutcome
from bot.jobs.stored_files import stored_name
from bot.logging_setup import job_event
from db import broker_chores
from db import jobs as journal
from db.database import transaction
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
        seeds = [image.seed for image in rendered]
        return posted_grid_png(request, pictures, rendered[0].infotext, seeds)
    except Exception:
        log.exception("the grid of %d pictures could not be composed early", len(pictures))
        return None


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


@dataclass
class _KeptCancel:
    """A cancel its member was told of whose end the journal refused (``JobEnds.record_cancel``)."""

    error: str
    used_s: float | None  # the GPU seconds it is charged (None: refunded whole)
    # Its stop's ask may be missing from the journal (an imposed stop's, refused): written
    # before its end, so that a crash between the two still ends it at the next start.
    ask_first: bool


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
        # Cancels the member was told of but the journal refused (``end_cancelled``): their
        # error and charge, written by the delivery sweep (``retry_kept``), so the job is not
        # rendered and charged at the next start.
        self._cancels_unrecorded: dict[str, _KeptCancel] = {}

    async def record_success(
        self,
        job_id: str,
        request: RenderRequest,
        rendered: list[RenderedImage],
        gpu_seconds: float,
    ) -> bytes | None:
        """Store the pictures and record them with the job's end, and charge it; returns the
        grid it is posted as, when composed (``composed_grid``).

        A storage failure (a full disk, a folder it may not write), or a record refused for
        good (a constraint, the ledger), fails the job instead: refunded, and the member told,
        rather than left running with its quota reserved; its pictures are deleted once that
        is recorded. A journal that stays unwritable (``JournalWriter.write``) raises: the job is
        running there still, its pictures kept, for the next start."""
        try:
            job = await journal.get_job(self._conn, job_id)
            filesize_limit = None if job is None else job.filesize_limit
            records, composed, posted_digests = await asyncio.to_thread(
                self._store_images, job_id, request, rendered, filesize_limit
            )
            await self._writer.write(
                f"job {job_id}: its pictures",
                functools.partial(self._record_done, job_id, records, gpu_seconds, posted_digests),
            )
        except aiosqlite.OperationalError:
            raise
        except Exception as error:
            log.exception("job %s: rendered, but its pictures could not be stored", job_id)
            reason = error.strerror if isinstance(error, OSError) else None
            await self.record_failure(
                job_id,
                f"the pictures were rendered but could not be stored on the server "
                f"({reason or type(error).__name__}); reference {job_id}",
            )
            await asyncio.to_thread(shutil.rmtree, self._images_dir / job_id, ignore_errors=True)
            return None
        self._on_ended(job_id, "done")
        return composed

    async def _record_done(
        self,
        job_id: str,
        records: list[journal.ImageRecord],
        gpu_seconds: float,
        posted_digests: list[bytes],
    ) -> None:
        """The job's pictures, its end and its charge: one transaction, so that a crash leaves
        all or none."""
        now = self._now()
        async with transaction(self._conn):
            await journal.mark_done(self._conn, job_id, records, gpu_seconds, now, posted_digests)
            await accounting.charge(self._conn, job_id, gpu_seconds, len(records), now)
            await self._owe_settle(job_id, "done", now)

    async def _owe_settle(self, job_id: str, outcome: str, now: float) -> None:
        """In the transaction of the job's end: the broker's copies of it are to be settled."""
        if self._settles_copies:
            await broker_chores.owe(self._conn, job_id, outcome, now)

    async def finish_unsuccessfully(
        self, job_id: str, error: str, *, cancelled: bool = False
    ) -> bool:
        """Record the end of a job that has no pictures (failed, or cancelled before or while
        it rendered) and deliver it at once, outside its lane: there is no result to order,
        and a cancel (a ban's) waits for the member to be told. Whether it was recorded: a
        journal that stays unwritable leaves the job as it was there, for the next start, and
        nothing is delivered. A delivery that raises once the end is recorded is logged, not
        raised: the end stands, and the sweep delivers it (``Delivery.retry_notices``)."""
        if not await self._end_recorded(job_id, error, cancelled=cancelled, used_s=None):
            return False
        await self._delivery.notice(job_id)
        return True

    async def end_cancelled(
        self,
        job_id: str,
        error: str,
        used_s: float | None = None,
        *,
        retried: bool = True,
        ask_first: bool = True,
    ) -> None:
        """Record a cancel its member was told of (``record_cancel``) and deliver its notice
        at once (``finish_unsuccessfully``'s reasons)."""
        if await self.record_cancel(job_id, error, used_s, retried=retried, ask_first=ask_first):
            await self._delivery.notice(job_id)

    async def record_cancel(
        self,
        job_id: str,
        error: str,
        used_s: float | None = None,
        *,
        retried: bool = True,
        ask_first: bool = True,
    ) -> bool:
        """Record a cancel its member was told of; whether it was recorded (``retried``: as
        ``JournalWriter.write``). One the journal refuses is kept, and the delivery sweep
        writes it (``retry_kept``): its stop was recorded as asked before its member was told
        (``JobQueue.cancel``), or the sweep records that first (``ask_first``: it may not be;
        False for one known asked, and for one ended by the rules of now at its start, which
        the next start judges again), so a stop of Easel meanwhile still ends it at the next
        start, not renders and charges it."""
        if await self._end_recorded(job_id, error, cancelled=True, used_s=used_s, retried=retried):
            return True
        self._cancels_unrecorded[job_id] = _KeptCancel(error, used_s, ask_first)
        return False

    async def write_ask(self, job_id: str, *, retried: bool = True) -> None:
        """Record in the journal that a stop of ``job_id`` was asked while it is queued or
        running (``journal.ask_cancel``): a start that finds it unfinished ends it, refunded
        whole. In a transaction of its own: a lone statement would join another coroutine's,
        and its rollback would undo the ask after the member was told. Raises as
        ``JournalWriter.write``."""

        async def ask() -> None:
            async with transaction(self._conn):
                await journal.ask_cancel(self._conn, job_id, self._now())

        await self._writer.write(f"job {job_id}: its stop asked", ask, retried=retried)

    async def _end_recorded(
        self,
        job_id: str,
        error: str,
        *,
        cancelled: bool,
        used_s: float | None,
        retried: bool = True,
    ) -> bool:
        """``record_failure``; whether the journal took it (one it refuses is logged)."""
        try:
            await self.record_failure(
                job_id, error, cancelled=cancelled, used_s=used_s, retried=retried
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

    def kept_cancel(self, job_id: str, *, owner_pays: bool) -> CancelOutcome | None:
        """How a cancel asked again of ``job_id`` is answered while its end is kept
        (``record_cancel``): it stopped, free unless its owner chose the stop and it used
        GPU time; a stop its owner did not choose (a ban's) makes it free. None: none kept."""
        if (kept := self._cancels_unrecorded.get(job_id)) is None:
            return None
        if not owner_pays:
            kept.used_s = None
        return CancelOutcome.STOPPING_FREE if kept.used_s is None else CancelOutcome.STOPPING

    async def retry_kept(self) -> None:
        """Write the cancels the journal refused before (``record_cancel``), each one's ask
        first where it may be missing (``_KeptCancel.ask_first``), and deliver their notices.
        Each write is tried once, and none after the first the journal refuses again: a
        database locked or full would make each try wait out its busy timeout, and the sweep
        must not stall behind them for minutes; the next sweep tries them again."""
        for job_id, kept in list(self._cancels_unrecorded.items()):
            try:
                if kept.ask_first:
                    await self.write_ask(job_id, retried=False)
                    kept.ask_first = False
                await self.record_failure(
                    job_id, kept.error, cancelled=True, used_s=kept.used_s, retried=False
                )
            except aiosqlite.OperationalError as refused:
                log.warning(
                    "%d kept cancel(s) not written (%s); tried again at the next sweep",
                    len(self._cancels_unrecorded),
                    refused,
                )
                return
            self._cancels_unrecorded.pop(job_id, None)
            await self._delivery.notice(job_id)

    async def record_failure(
        self,
        job_id: str,
        error: str,
        *,
        cancelled: bool = False,
        used_s: float | None = None,
        retried: bool = True,
    ) -> None:
        """Record the job's end; refunded whole, or with ``used_s`` (a job cancelled while
        running) its pictures refunded and those GPU seconds charged: cancelling a render at
        its last step must not make it free. The end and its refund or charge are one
        transaction: a crash leaves both or neither."""
        now = self._now()
        outcome = "cancelled" if cancelled else "failed"

        async def record() -> None:
            async with transaction(self._conn):
                await journal.mark_failed(self._conn, job_id, error, now, cancelled=cancelled)
                if used_s is None:
                    await accounting.refund(self._conn, job_id, now)
                else:
                    await accounting.charge(self._conn, job_id, used_s, 0, now)
                await self._owe_settle(job_id, outcome, now)

        await self._writer.write(f"job {job_id}: its end", record, retried=retried)
        self._on_ended(job_id, outcome)
        if used_s is None:
            log.info("job %s refunded", job_id, extra=job_event(job_id, "refunded"))
        else:
            log.info(
                "job %s charged %.1f GPU seconds, no pictures",
                job_id,
                used_s,
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
                    image.seed,
                    stored_name(self._images_dir.parent, path),
                    image.infotext,
                    image.width,
                    image.height,
                    digest,
                )
            )
        return records, composed, posted_digests(request, rendered, composed, filesize_limit)
