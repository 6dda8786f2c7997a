"""The bot's side of the distributed queue: render slots whose renders run on remote workers.

The bot keeps the journal, the quotas and the fair scheduler (``bot.jobs.queue``); each
``RemoteSlot`` is one job in flight on the broker. ``render`` publishes the job (message id =
job id) with the pictures it reads (their bytes, never the bot's paths), waits for its
result, takes the PNGs from it (or from the object store when large), and returns them or
raises what a local engine would (``RenderCancelled``, ``RenderInputError``), or
``RemoteRenderFailed``. While publishing it also reads the results
stream: a job the journal says was running when the bot died may already be finished, and
its stored result is used instead (a republished copy is only acked by the worker).

Each job message carries a secret derived from the bot's ``job_key`` and the job id, so a
restarted bot (same key, kept in ``EASEL_DATA_DIR/broker-secret``) still knows it: a result or
progress message whose tag does not verify under it, or a stored picture whose SHA-256 is not
the one the result names, was not sent by a worker given the job, and is dropped.

See ``docs/distributed.md`` for the whole design and ``bot.jobs.broker.wire`` for the names.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import functools
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, Header, RawStreamMsg
from nats.js.object_store import ObjectStore

from bot.jobs.broker.live_workers import LiveWorkers
from bot.jobs.broker.wire import (
    ADVISORIES_CONSUMER,
    ADVISORIES_STREAM,
    DOORBELL_SUBJECT,
    IMAGES_BUCKET,
    JOBS_STREAM,
    JOBS_SUBJECTS,
    MAX_DELIVERIES_ADVISORIES,
    PROGRESS_SUBJECTS,
    RESULT_TTL_S,
    RESULTS_STREAM,
    RESULTS_SUBJECTS,
    TAG_HEADER,
    TRANSIENT_RETRY_S,
    UNREACHABLE_ERRORS,
    WORKERS_SUBJECT,
    WRONG_LAST_SEQUENCE,
    BrokerUnavailable,
    ImageRef,
    JobMessage,
    Outcome,
    PictureInput,
    ResultMessage,
    cancel_subject,
    close_quietly,
    connect,
    consumer_name,
    decode_progress,
    ensure_streams,
    headers_for_job,
    inline_images_budget,
    input_object_name,
    is_named_picture,
    job_id_of,
    job_subject,
    job_wire_version,
    lost_with_workers,
    max_job_bytes,
    message_gone,
    own_object_names,
    picture_digest,
    picture_paths,
    png_size,
    refused_for_storage,
    result_subject,
    retry_transient,
    settled_subject,
    stream_missing,
    tag,
    tag_verifies,
    with_picture_paths,
)
from bot.jobs.queue import (
    MAX_RENDER_ATTEMPTS,
    MeasuredImages,
    RenderStoppedAfter,
    SlotUnavailable,
)
from bot.redaction import redact_url
from bot.user_errors import counted
from inference.output_bounds import largest_output, output_count
from inference.types import (
    RenderCancelled,
    RenderedImage,
    RenderFailed,
    RenderInputError,
    RenderRequest,
    StepProgress,
)

__all__ = [
    "BrokerClient",
    "BrokerConfig",
    "BrokerUnavailable",
    "RemoteRenderFailed",
    "RemoteSlot",
    "connect_slots",
]

log = logging.getLogger(__name__)

# How often a waiting render looks at its cancel event (a threading.Event cannot be awaited).
CANCEL_POLL_S = 0.05
# The ``worker`` of a failure the bot stores itself, when no worker lived to report it.
BOT_REPORTER = "easel-bot"
# What a member is told of a job a worker older than the bot refused (``Outcome.OUTDATED``).
OLDER_WORKER = (
    "Easel's render worker runs an older version than the bot, so it could not make this "
    "picture as asked: a version mismatch on Easel's side, not a problem with your request. "
    "Nothing was charged; try again once Easel's operator has upgraded it"
)

# A job whose model no live worker has had for this long (``LiveWorkers``) is refused
# (refunded): it would otherwise hold its slot until the jobs stream drops it (24 h).
UNSERVED_JOB_WAIT_S = 60.0

# How often the bot tries to store a settled job's marker where a late worker's result came
# meanwhile before it lets the marker replace whatever is there (its pictures' names lost).
MARKER_ATTEMPTS = 3

T = TypeVar("T")


class RemoteRenderFailed(RenderFailed):
    """The worker's engine raised, or every delivery of the job was lost with its worker."""


@dataclass(frozen=True)
class _HandedOver:
    """Where a job's message went: its sequence in the jobs stream, when that stream was made
    (a stream made again since, after the broker lost its store, no longer holds it), and when
    the message was published (the event loop's clock): one gone with no result expired only
    once older than the stream's age limit."""

    sequence: int
    stream_created: datetime.datetime | None
    published_at: float


@dataclass(frozen=True)
class BrokerConfig:
    url: str = field(repr=False)  # may carry credentials
    # Jobs in flight on the broker at once (EASEL_REMOTE_SLOTS): more than the workers' devices
    # keeps every device busy; fewer keeps more jobs in the bot's fair queue.
    slots: int = 8
    # A worker that stops heartbeating for this long has its job given to another worker.
    ack_wait_s: float = 30.0
    # Deliveries a job gets before it is reported as failed (as the in-process queue renders).
    max_attempts: int = MAX_RENDER_ATTEMPTS
    # A waiting render rereads the results stream this often, in case the result was published
    # while the connection was down (core messages are not replayed).
    result_recheck_s: float = 2.0
    # A job's hand-over (its pictures stored, its publish) is tried this long while the broker
    # does not answer; then it is queued again in the bot, and no job starts until the broker
    # answers (``bot.jobs.queue.SlotUnavailable``).
    unreachable_after_s: float = TRANSIENT_RETRY_S
    # How long a job's model may go without a live worker that has it before the job is
    # refused (``UNSERVED_JOB_WAIT_S``).
    unserved_wait_s: float = UNSERVED_JOB_WAIT_S
    # Each job's secret is derived from it; a bot restarted with another key cannot verify the
    # results of the jobs it had in flight (the composition root keeps it on disk).
    job_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    def __post_init__(self) -> None:
        if not self.url.startswith(("nats://", "tls://")):
            raise ValueError(
                f"the queue URL must start with nats:// or tls://, not {redact_url(self.url)!r}"
            )
        if not 1 <= self.slots <= 1024:
            raise ValueError(f"EASEL_REMOTE_SLOTS must be within 1..1024, got {self.slots}")
        if not 0.1 <= self.ack_wait_s <= 3600:
            raise ValueError(f"ack_wait_s must be within 0.1..3600 seconds, got {self.ack_wait_s}")
        if not 1 <= self.max_attempts <= 20:
            raise ValueError(f"max_attempts must be within 1..20, got {self.max_attempts}")
        if self.result_recheck_s <= 0:
            raise ValueError(f"result_recheck_s must be above 0, got {self.result_recheck_s}")
        if not 0.1 <= self.unreachable_after_s <= 3600:
            raise ValueError(
                f"unreachable_after_s must be within 0.1..3600 seconds, "
                f"got {self.unreachable_after_s}"
            )
        if not 0.1 <= self.unserved_wait_s <= 86_400:
            raise ValueError(
                f"unserved_wait_s must be within 0.1..86400 seconds, got {self.unserved_wait_s}"
            )


class BrokerClient:
    """One NATS connection shared by all the bot's remote slots. Build it with ``open``."""

    # ``JobCopies.kept_s``: what the broker holds of a job expires within this.
    kept_s = RESULT_TTL_S

    def __init__(
        self, nc: NatsClient, js: JetStreamContext, images: ObjectStore, config: BrokerConfig
    ) -> None:
        self._nc = nc
        self._js = js
        self._images = images
        self._config = config
        self._waiters: dict[str, asyncio.Future[ResultMessage]] = {}
        self._progress: dict[str, Callable[[StepProgress], None]] = {}
        # When each waited job's worker first reported a step: its GPU time counts from then.
        self._started_at: dict[str, float] = {}
        self._consumers_ready: set[str] = set()
        # When the jobs stream that the consumers in ``_consumers_ready`` belong to was made:
        # another user may remake it (deleting them) before any probe of this bot sees it gone.
        self._jobs_stream_created: datetime.datetime | None = None
        # Jobs waited on that were sent a message failing its tag: logged once each.
        self._forgeries_logged: set[str] = set()
        # Why the streams could not be made again, logged once until they are (every probe
        # asks again).
        self._streams_refusal: str | None = None
        # A probe found a stream missing: the loss is told once one answers again, whoever
        # made it (this bot, or an operator's user for a bot that may not).
        self._streams_lost = False
        # The jobs this client published whose message may still be in the jobs stream: not
        # known deleted, and no result taken (a worker stores it before its ack). Only a
        # cancelled one of these, or one an earlier bot published, needs a read of the stream.
        self._maybe_in_stream: set[str] = set()
        # The jobs stream's last sequence when this client opened: an earlier bot's messages
        # are at or below it (0: none left there; None: not read, any may be).
        self._earlier_last_seq: int | None = None
        # The models the live workers have, from their heartbeats.
        self._live_workers = LiveWorkers()

    @classmethod
    async def open(cls, config: BrokerConfig) -> BrokerClient:
        """Connect, create the streams when missing, and listen for results and progress."""
        nc = await connect(config.url, "easel-bot")
        try:
            js = nc.jetstream()
            images = await retry_transient("create the streams", lambda: ensure_streams(nc, js))
            client = cls(nc, js, images, config)
            client._earlier_last_seq = (await js.stream_info(JOBS_STREAM)).state.last_seq
            await nc.subscribe(RESULTS_SUBJECTS, cb=client._on_result)
            await nc.subscribe(PROGRESS_SUBJECTS, cb=client._on_progress)
            await nc.subscribe(WORKERS_SUBJECT, cb=client._on_worker)
            # Stored notices: one delivered while no bot was connected waits for the next.
            await js.subscribe(
                MAX_DELIVERIES_ADVISORIES,
                queue=ADVISORIES_CONSUMER,
                durable=ADVISORIES_CONSUMER,
                stream=ADVISORIES_STREAM,
                cb=client._on_max_deliveries,
                manual_ack=True,
            )
        except BaseException:
            await close_quietly(nc)
            raise
        return client

    def slots(self) -> list[RemoteSlot]:
        return [RemoteSlot(self, f"remote-{index}") for index in range(self._config.slots)]

    def max_job_bytes(self) -> int:
        """The largest request a job may carry through this server (``wire.max_job_bytes``)."""
        return max_job_bytes(self._nc.max_payload)

    async def close(self) -> None:
        await close_quietly(self._nc)

    async def render(
        self,
        job_id: str,
        request: RenderRequest,
        progress: Callable[[StepProgress], None] | None,
        cancel: threading.Event | None,
    ) -> list[RenderedImage]:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[job_id] = waiter
        if progress is not None:
            self._progress[job_id] = progress
        try:
            # Looked up while publishing, not before: one round trip instead of two. A job
            # that already has a result is then republished, but a worker only acks that copy.
            lookup = asyncio.ensure_future(
                self._while_reachable(
                    f"job {job_id}: look for a stored result", lambda: self._stored_result(job_id)
                )
            )
            try:
                message = await self._job_message(job_id, request)
                self._maybe_in_stream.add(job_id)
                handed_over = await self._publish(message, request.model)
                result = await lookup
            except nats.errors.Error as error:
                if refused_for_storage(error):  # an answer, not an outage: this job fails
                    raise RemoteRenderFailed(
                        "the render workers' queue has no room for it now; try again later"
                    ) from error
                if not isinstance(error, UNREACHABLE_ERRORS) and not stream_missing(error):
                    raise
                # Not handed over, or not known to be: tried again once the broker answers,
                # with its streams (a copy that did reach it is found then: same message id,
                # or its stored result).
                raise self._unavailable(error) from error
            finally:
                lookup.cancel()  # when the publish failed: its error is the one to report
            stored_inputs = [p.object_name for p in message.inputs if p.object_name is not None]
            if result is None:
                result = await self._wait(
                    job_id, request.model, waiter, cancel, handed_over, stored_inputs
                )
            else:
                log.info("job %s: already finished on the broker; its result is used", job_id)
            used_s = self._render_seconds(job_id, result)
            self._maybe_in_stream.discard(job_id)
            # Only once there is a result: a redelivered job still needs its inputs.
            await self._delete_objects(stored_inputs)
            try:
                images = await self._images_of(result, request)
            except UNREACHABLE_ERRORS as error:
                # Its result and pictures stay stored: the next try's lookup finds them.
                raise self._unavailable(error) from error
            return images if used_s is None else MeasuredImages(images, used_s)
        finally:
            self._waiters.pop(job_id, None)
            self._progress.pop(job_id, None)
            self._started_at.pop(job_id, None)
            self._forgeries_logged.discard(job_id)

    def _render_seconds(self, job_id: str, result: ResultMessage) -> float | None:
        """The device seconds ``result``'s job used, as its worker reported them; from a
        worker from before it reported them, the time since its first progress report, as a
        cancel is charged. None (the queue charges its own wait): neither is known, as for a
        result found stored."""
        if result.render_s is not None:
            return result.render_s
        started_at = self._started_at.get(job_id)
        return None if started_at is None else time.perf_counter() - started_at

    def _unavailable(self, error: Exception) -> SlotUnavailable:
        if stream_missing(error):
            return SlotUnavailable(f"the broker lacks a stream ({error})", self._streams_again)
        return SlotUnavailable(
            f"the broker did not answer for {self._config.unreachable_after_s:g} s "
            f"({type(error).__name__})",
            self.reachable,
        )

    async def reachable(self) -> bool:
        """Whether the broker answers now (``SlotUnavailable``'s probe): connected (the
        client reconnects on its own), and JetStream gives the jobs stream's info, which the
        bot's broker user may read; without that stream, once it is made again."""
        if not self._nc.is_connected:
            return False
        try:
            await self._js.stream_info(JOBS_STREAM)
        except nats.js.errors.NotFoundError:
            return await self._streams_again()
        except nats.errors.Error:
            return False
        if self._streams_lost:  # made again by another user since a probe found it missing
            self._streams_back()
        return True

    async def _streams_again(self) -> bool:
        """The probe of a broker that answers without one of Easel's streams (restarted
        without its store?): they are made again, as at ``open``, else no job could ever be
        handed over again. Whether they are there. A broker user that may not make them
        (``BrokerRefused``) is said once, and each probe looks again: another user may."""
        if not self._nc.is_connected:
            return False
        self._streams_lost = True
        # The durable consumers went with the jobs stream: each is made again before the
        # next job handed over, on whichever stream is made next.
        self._consumers_ready.clear()
        try:
            await ensure_streams(self._nc, self._js)
        except BrokerUnavailable as refused:  # the broker's answer: the same at every probe
            if str(refused) != self._streams_refusal:
                self._streams_refusal = str(refused)
                log.error(
                    "the broker answers without Easel's streams, and they cannot be made "
                    "again: %s; no job is handed over until they are",
                    refused,
                )
            return False
        except nats.errors.Error:
            return False
        self._streams_back()
        return True

    def _streams_back(self) -> None:
        """Easel's streams are there again after a probe found one missing: the loss is told,
        and a later refusal to make them is told again."""
        self._streams_lost = False
        self._streams_refusal = None
        log.error(
            "the broker answered without Easel's streams (restarted without its store?): they "
            "are there again; the results it held are lost, and the jobs it held are handed "
            "over again"
        )

    async def _while_reachable(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """``retry_transient`` for a step of a job's hand-over or of fetching its pictures: it
        gives up after ``unreachable_after_s``."""
        return await retry_transient(what, operation, self._config.unreachable_after_s)

    def job_secret(self, job_id: str) -> str:
        """The secret of ``job_id``'s messages (derived: a restart with the same key knows it)."""
        return hmac.new(self._config.job_key, job_id.encode(), hashlib.sha256).hexdigest()

    def _verified(self, job_id: str, data: bytes, headers: dict[str, str] | None) -> bool:
        """Whether a result or progress message of ``job_id`` comes from a worker given the
        job; a forgery is logged once a job (never its content: it may hold a prompt)."""
        if tag_verifies(self.job_secret(job_id), data, headers):
            return True
        if job_id not in self._forgeries_logged:
            self._forgeries_logged.add(job_id)
            untagged = TAG_HEADER not in (headers or {})
            log.warning(
                "job %s: a result or progress message without a valid tag dropped%s",
                job_id,
                # Workers from before tags sign nothing (nor do some made-up results).
                " (it has no tag at all: a worker older than the bot? upgrade workers with the bot)"
                if untagged
                else "",
            )
        return False

    async def _job_message(self, job_id: str, request: RenderRequest) -> JobMessage:
        """The job with the pictures it reads instead of the paths of the bot's files (a worker
        cannot see them): inside the message when small, else in the object store first."""
        pictures = {
            name: await asyncio.to_thread(_read_picture, name, path)
            for name, path in picture_paths(request).items()
        }
        inline = sum(map(len, pictures.values())) <= inline_images_budget(self._nc.max_payload)
        inputs = []
        for name, data in pictures.items():
            if inline:
                inputs.append(PictureInput(name, png=data))
                continue
            object_name = input_object_name(job_id, name)
            await self._while_reachable(
                f"job {job_id}: store {object_name}",
                functools.partial(self._images.put, object_name, data),
            )
            inputs.append(PictureInput(name, object_name=object_name, sha256=picture_digest(data)))
        return JobMessage(
            job_id,
            with_picture_paths(request, {}),
            tuple(inputs),
            self.job_secret(job_id),
            wire=job_wire_version(request),
        )

    async def _publish(self, message: JobMessage, model: str | None) -> _HandedOver:
        stream_created = await self._ensure_consumer(model)
        job_id = message.job_id
        data = message.encode()
        # Before the publish: the broker's stamp is not earlier, so its age is not understated.
        published_at = asyncio.get_running_loop().time()
        ack = await self._while_reachable(
            f"job {job_id}: publish",
            lambda: self._js.publish(job_subject(model), data, headers=headers_for_job(job_id)),
        )
        if ack.duplicate:
            log.info("job %s: the broker already holds it; waiting for that copy", job_id)
            published_at -= await self._age_of(job_id, ack.seq)
        else:
            with contextlib.suppress(nats.errors.Error):  # idle workers also poll
                await self._nc.publish(DOORBELL_SUBJECT)
        return _HandedOver(ack.seq, stream_created, published_at)

    async def _age_of(self, job_id: str, sequence: int) -> float:
        """How long ago the copy at ``sequence`` (a bot before a restart published it) was
        published, by the broker's stamp and this machine's clock; 0 when it has just left."""
        try:
            stored = await self._while_reachable(
                f"job {job_id}: read its copy", lambda: self._js.get_msg(JOBS_STREAM, sequence)
            )
        except nats.js.errors.NotFoundError:
            return 0.0
        if stored.time is None:
            return 0.0
        return max(0.0, (datetime.datetime.now(datetime.UTC) - stored.time).total_seconds())

    async def settle(self, job_id: str, outcome: str) -> None:
        """The bot recorded ``job_id``'s outcome ("done", "failed" or "cancelled"): the
        decision is kept (a worker handed the job later does not render it), its stored result
        becomes a bare marker and the pictures it named leave the image store. Found by name,
        without listing the broker; a cancelled job's message is left to
        ``drop_job_messages``. Raises ``nats.errors.Error`` when the broker cannot do it.
        Deleted the plain way, not erased: their bytes stay in the broker's files until NATS
        drops the block (within the 24 h), cheaper by far than an erase on every job."""
        await self._replace_result(job_id, Outcome(outcome), erase=False)

    async def drop_copies(self, job_ids: Sequence[str]) -> None:
        """/forget-me: what the broker still holds of these jobs goes (their results become
        bare markers, their pictures leave the image store, tombstones included), found by
        listing it: the bot may have kept no note of them. So do their job messages (one
        cancelled while the broker was away holds its prompt and inputs until a worker pulls
        it). Raises as ``settle``."""
        wanted = set(job_ids)
        results = await self._js.stream_info(RESULTS_STREAM, subjects_filter=RESULTS_SUBJECTS)
        for subject in results.state.subjects or {}:
            if (job_id := job_id_of(subject)) in wanted:
                await self._replace_result(job_id, None, erase=True)
        bucket = f"OBJ_{IMAGES_BUCKET}"
        stored = await self._js.stream_info(bucket, subjects_filter=f"$O.{IMAGES_BUCKET}.M.>")
        for meta_subject in stored.state.subjects or {}:
            name = _object_name(meta_subject)
            if name is None or name.split("/", 1)[0] not in wanted:
                continue
            # A worker (it holds the bucket) may have written a malformed entry: it goes too.
            with contextlib.suppress(nats.js.errors.Error):
                await self._erase_object(name)
            await self._js.purge_stream(bucket, subject=meta_subject)
        # Last: its cost grows with the jobs in flight, the erase's time is bounded, and the
        # results and pictures are what most of the member's copies are. The whole stream:
        # another bot's, or a worker's that died before its ack, may be there.
        await self._delete_job_messages(wanted, None)

    async def drop_job_messages(self, job_ids: Collection[str]) -> None:
        """Delete the messages of the cancelled ``job_ids`` left in the jobs stream. The
        stream is read only where one may be: all of it for a job this client published and
        does not know gone (its cancel's delete failed, the broker away), else the messages
        an earlier bot left, until they are gone; none for a job never handed over or whose
        message its cancel deleted."""
        whole = bool(self._maybe_in_stream.intersection(job_ids))
        if whole or self._earlier_last_seq != 0:
            earlier = self._earlier_last_seq
            first = await self._delete_job_messages(job_ids, None if whole else earlier)
            if earlier is not None and (first is None or first > earlier):
                self._earlier_last_seq = 0  # none of an earlier bot's is left
        self._maybe_in_stream.difference_update(job_ids)

    async def _delete_job_messages(self, job_ids: Collection[str], until: int | None) -> int | None:
        """Delete the messages of ``job_ids`` in the jobs stream up to sequence ``until``
        (None: all). It holds only the jobs in flight (a worker's ack removes one), so its
        callers ask once for all the jobs they have. Returns the first message's sequence
        (None: empty)."""
        return await self._delete_messages(
            JOBS_STREAM,
            JOBS_SUBJECTS,
            wanted=lambda stored: (stored.headers or {}).get(Header.MSG_ID) in job_ids,
            until=until,
        )

    async def _replace_result(self, job_id: str, outcome: Outcome | None, *, erase: bool) -> None:
        """Overwrite ``job_id``'s result with a marker of ``outcome`` (None: the stored one's)
        holding nothing of the member's, then delete the pictures the result named. The marker
        stays: a worker whose acknowledgement was lost finds it on the redelivery and only
        acknowledges (without it, it would render the job again and store a new copy).
        ``erase``: the result and its pictures are deleted by sequence, which overwrites their
        bytes in the broker's files (/forget-me); else the marker replaces the result through
        the stream's one-message-a-subject limit and the pictures are purged, which leave
        their bytes there until NATS drops the block (within the 24 h), at a fraction of the
        cost."""
        last = await self._last_result_message(job_id)
        try:
            stored = None if last is None else self._result_of(job_id, last)
        except ValueError:
            stored = None  # tagged but malformed (a worker's): replaced all the same
        if outcome is None:
            outcome = stored.outcome if stored is not None else Outcome.FAILED
        await self._record_decision(job_id, outcome)
        marker = ResultMessage(job_id, outcome, BOT_REPORTER, 0)
        replaced = [stored, *await self._store_marker_over(marker, last, erase=erase)]
        pictures = [ref for result in replaced if result is not None for ref in result.images]
        await self._delete_objects(own_object_names(job_id, pictures), erase=erase)

    async def _store_marker_over(
        self, marker: ResultMessage, last: RawStreamMsg | None, *, erase: bool
    ) -> list[ResultMessage]:
        """Store ``marker`` in place of the stored result ``last`` (None: none), erased first
        where ``erase``. Stored only if no other came since: a late worker's result (a missed
        cancel) is read, its pictures to go too, and replaced in turn; after
        ``MARKER_ATTEMPTS`` the marker replaces whatever is there (unerased). Returns those
        late results."""
        job_id, late = marker.job_id, list[ResultMessage]()
        data = marker.encode()
        headers = {TAG_HEADER: tag(self.job_secret(job_id), data)}
        for _ in range(MARKER_ATTEMPTS):
            if erase and last is not None:
                assert last.seq is not None  # the server names each message's sequence
                await self._delete_message(RESULTS_STREAM, last.seq)
                last = None
            expected = 0 if last is None else last.seq
            headers[Header.EXPECTED_LAST_SUBJECT_SEQUENCE] = str(expected)
            try:
                await self._js.publish(result_subject(job_id), data, headers=headers)
                return late
            except nats.js.errors.APIError as error:
                if error.err_code != WRONG_LAST_SEQUENCE:
                    raise
            last = await self._last_result_message(job_id)
            with contextlib.suppress(ValueError):  # malformed: no pictures to name
                if last is not None and (result := self._result_of(job_id, last)):
                    late.append(result)
        # Results kept coming (made up by a worker's user?): the last one is replaced.
        del headers[Header.EXPECTED_LAST_SUBJECT_SEQUENCE]
        await self._js.publish(result_subject(job_id), data, headers=headers)
        return late

    async def _delete_messages(
        self,
        stream: str,
        subject: str,
        *,
        wanted: Callable[[RawStreamMsg], bool] = lambda _stored: True,
        until: int | None = None,
    ) -> int | None:
        """Delete each of ``stream``'s messages on ``subject`` that is ``wanted``, up to
        sequence ``until`` (None: all), by its sequence, which (unlike a purge, an
        acknowledgement or a limit) overwrites its bytes in the broker's files. Found by
        reading each message there in turn: one round trip a message read, one a message
        deleted. Returns the first message's sequence (None: none there)."""
        sequence, first = 1, None
        while True:
            try:
                stored = await self._js.get_msg(stream, sequence, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                return first  # none at or after ``sequence``
            assert stored.seq is not None  # the server names each message's sequence
            first = stored.seq if first is None else first
            if until is not None and stored.seq > until:
                return first
            if wanted(stored):
                await self._delete_message(stream, stored.seq)
            sequence = stored.seq + 1

    async def _delete_message(self, stream: str, sequence: int) -> None:
        """Delete ``stream``'s message at ``sequence``. One removed since it was read (a purge,
        a worker's acknowledgement, another bot's delete) is as good (``message_gone``)."""
        try:
            await self._js.delete_msg(stream, sequence)
        except nats.js.errors.APIError as error:
            if not message_gone(error):
                raise

    async def _erase_object(self, name: str) -> None:
        """Delete the picture ``name``, its chunks erased first: the object store's delete
        purges them, which leaves their bytes in the broker's files."""
        info = await self._images.get_info(name)
        if info.nuid:
            chunks = f"$O.{IMAGES_BUCKET}.C.{info.nuid}"
            await self._delete_messages(f"OBJ_{IMAGES_BUCKET}", chunks)
        await self._images.delete(name)

    async def _delete_objects(self, names: list[str], *, erase: bool = False) -> None:
        """Best effort: what is left is dropped with the bucket's TTL. Deleting leaves a
        tombstone naming the object (and its job): purged too. ``erase``: their chunks'
        bytes are overwritten in the broker's files (``_erase_object``)."""
        for name in names:
            with contextlib.suppress(nats.errors.Error):
                await (self._erase_object(name) if erase else self._images.delete(name))
                await self._js.purge_stream(f"OBJ_{IMAGES_BUCKET}", subject=_meta_subject(name))

    async def _ensure_consumer(self, model: str | None) -> datetime.datetime | None:
        """Make ``model``'s durable consumer unless the jobs stream, as made now, has it: a
        job published into a stream without it would never be pulled. One round trip a job
        (the stream's info) when it does. Returns when that stream was made."""
        name = consumer_name(model)
        jobs_stream = await self._while_reachable(
            "look at the jobs stream", lambda: self._js.stream_info(JOBS_STREAM)
        )
        if jobs_stream.created != self._jobs_stream_created:
            self._consumers_ready.clear()
            self._jobs_stream_created = jobs_stream.created
        if name in self._consumers_ready:
            return jobs_stream.created
        config = ConsumerConfig(
            name=name,
            durable_name=name,
            filter_subject=job_subject(model),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self._config.ack_wait_s,
            # One delivery more than the attempts: the worker that receives it reports the
            # failure (a result outlives a bot restart; an advisory would not).
            max_deliver=self._config.max_attempts + 1,
        )
        await self._while_reachable(
            f"create consumer {name}", lambda: self._js.add_consumer(JOBS_STREAM, config)
        )
        self._consumers_ready.add(name)
        return jobs_stream.created

    async def _wait(
        self,
        job_id: str,
        model: str | None,
        waiter: asyncio.Future[ResultMessage],
        cancel: threading.Event | None,
        handed_over: _HandedOver,
        stored_inputs: list[str],
    ) -> ResultMessage:
        loop = asyncio.get_running_loop()
        recheck_at = loop.time() + self._config.result_recheck_s
        poll_s = CANCEL_POLL_S if cancel is not None else self._config.result_recheck_s
        while not waiter.done():
            if cancel is not None and cancel.is_set():
                await self._cancel(job_id, handed_over.sequence)
                await self._delete_objects(stored_inputs)
                # Charged from the worker's first report: a job cancelled while it waited in
                # the stream for a worker used no GPU time.
                started_at = self._started_at.get(job_id)
                raise RenderStoppedAfter(
                    0.0 if started_at is None else time.perf_counter() - started_at
                )
            await asyncio.wait([waiter], timeout=poll_s)
            if not waiter.done() and loop.time() >= recheck_at:
                recheck_at = loop.time() + self._config.result_recheck_s
                with contextlib.suppress(nats.errors.Error):
                    if stored := await self._recheck(job_id, handed_over):
                        return stored
                    unserved_s = self._live_workers.unserved_for(model, loop.time())
                    if model is not None and unserved_s >= self._config.unserved_wait_s:
                        return await self._refuse_unserved(job_id, model, handed_over)
        return waiter.result()

    async def _recheck(self, job_id: str, handed_over: _HandedOver) -> ResultMessage | None:
        """The job's stored result, if any (core messages sent while the connection was down
        are not replayed). The jobs stream is read first: a worker stores the result before
        it acks the message, so a message gone before with no result after is lost. Raises
        ``SlotUnavailable`` when the stream the job went to is gone or made again (the broker
        lost its store): the job is handed over again; ``RemoteRenderFailed`` when its
        message left the stream with no result (``_left_without_result``)."""
        missing: nats.js.errors.NotFoundError | None = None
        try:
            jobs_stream = await self._js.stream_info(JOBS_STREAM)
        except nats.js.errors.NotFoundError as error:
            if not stream_missing(error):
                raise
            missing = error
        # Before the stream's checks: a result stored is the job's end, whatever became of
        # the stream it went to (another user may remake that stream alone).
        if stored := await self._stored_result(job_id):
            return stored
        if missing is not None:
            raise self._unavailable(missing) from missing
        if jobs_stream.created != handed_over.stream_created:
            raise SlotUnavailable(
                "the broker's jobs stream was made again since the job was handed over "
                "(the broker lost its store?)",
                self.reachable,
            )
        if handed_over.sequence < jobs_stream.state.first_seq:
            raise _left_without_result(job_id, handed_over, jobs_stream.config.max_age)
        return None

    async def _cancel(self, job_id: str, sequence: int) -> None:
        # Delete first so no worker takes it later; a worker already rendering it hears the
        # cancel message (or finds the id among those it heard of just before it started), or,
        # if that message is lost, its heartbeat finds the CANCELLED result stored here.
        # Only if the message there is this job's: a jobs stream made again since numbers
        # its messages from 1, and another job's may be at this sequence.
        with contextlib.suppress(nats.errors.Error):
            await self._delete_own_message(job_id, sequence)
            # Not skipped by a broker away: its chore need not read the stream for it.
            self._maybe_in_stream.discard(job_id)
        with contextlib.suppress(nats.errors.Error):
            await self._nc.publish(cancel_subject(job_id))
        with contextlib.suppress(nats.errors.Error):
            await self._record_decision(job_id, Outcome.CANCELLED)
        cancelled = ResultMessage(job_id, Outcome.CANCELLED, BOT_REPORTER, 0)
        with contextlib.suppress(nats.errors.Error, nats.js.errors.APIError):
            await self._publish_result(cancelled, self.job_secret(job_id))

    async def _refuse_unserved(
        self, job_id: str, model: str, handed_over: _HandedOver
    ) -> ResultMessage:
        """Refuse ``job_id``, whose ``model`` no live worker has had for ``unserved_wait_s``:
        its refusal is stored as a worker's would be (unless a result came meanwhile, which
        is the job's end), and its message leaves the jobs stream, also where a worker that
        lacked the model handed it back or died with it (still "in hand" to the broker)."""
        told = f"model {model!r} is not installed on any render worker: ask an admin"
        refused = ResultMessage(job_id, Outcome.INVALID, BOT_REPORTER, 0, error=told)
        try:
            await self._publish_result(refused, self.job_secret(job_id))
        except nats.js.errors.APIError as error:
            if error.err_code != WRONG_LAST_SEQUENCE:
                raise
            if (stored := await self._stored_result(job_id)) is not None:
                return stored
        log.warning(
            "job %s refused: no live render worker has had the model %r for %g s (install it "
            "on the workers, or remove it from the bot's models folder)",
            job_id,
            model,
            self._config.unserved_wait_s,
        )
        await self._delete_own_message(job_id, handed_over.sequence)
        with contextlib.suppress(nats.errors.Error):  # a worker not heard may be rendering it
            await self._nc.publish(cancel_subject(job_id))
        return refused

    async def _record_decision(self, job_id: str, outcome: Outcome) -> None:
        """Keep the bot's decision on ``job_id`` where only the bot's broker user may publish
        (``wire.SETTLED_STREAM``): a worker handed the job again finds it and does not render
        it, also once made-up results (a worker's user may publish results) pushed the
        marker or the CANCELLED result out of the results stream."""
        await self._js.publish(settled_subject(job_id), outcome.value.encode())

    async def _delete_own_message(self, job_id: str, sequence: int) -> None:
        """Delete the jobs stream's message at ``sequence`` if it is ``job_id``'s: a stream
        made again since numbers its messages from 1, and another job's may be there."""
        with contextlib.suppress(nats.js.errors.NotFoundError):  # gone already
            stored = await self._js.get_msg(JOBS_STREAM, sequence)
            if (stored.headers or {}).get(Header.MSG_ID) == job_id:
                await self._delete_message(JOBS_STREAM, sequence)

    async def _publish_result(self, result: ResultMessage, secret: str) -> None:
        """Store a result the bot decided itself, only if no worker's is there already."""
        data = result.encode()
        await self._js.publish(
            result_subject(result.job_id),
            data,
            headers={Header.EXPECTED_LAST_SUBJECT_SEQUENCE: "0", TAG_HEADER: tag(secret, data)},
        )

    async def _stored_result(self, job_id: str) -> ResultMessage | None:
        stored = await self._last_result_message(job_id)
        return None if stored is None else self._result_of(job_id, stored)

    async def _last_result_message(self, job_id: str) -> RawStreamMsg | None:
        try:
            return await self._js.get_last_msg(RESULTS_STREAM, result_subject(job_id))
        except nats.js.errors.NotFoundError:
            return None

    def _result_of(self, job_id: str, stored: RawStreamMsg) -> ResultMessage | None:
        """The result in ``stored`` if it verifies; raises ``ValueError`` when malformed."""
        data = stored.data or b""
        return ResultMessage.decode(data) if self._verified(job_id, data, stored.headers) else None

    async def _images_of(
        self, result: ResultMessage, request: RenderRequest
    ) -> list[RenderedImage]:
        if result.outcome is Outcome.CANCELLED:
            raise RenderCancelled
        if result.outcome is Outcome.INVALID:
            raise RenderInputError(result.error or "the worker refused the request")
        if result.outcome is Outcome.FAILED:
            raise RemoteRenderFailed(result.error or "the worker reported a failure")
        if result.outcome is Outcome.OUTDATED:
            log.error(
                "job %s: worker %s is older than the bot and refused it (%s); upgrade workers "
                "with the bot",
                result.job_id,
                result.worker,
                result.error,
            )
            raise RemoteRenderFailed(OLDER_WORKER)
        _check_count(result, request)
        images = []
        for ref in result.images:
            if ref.png is not None:
                images.append(_sized_as_asked(result, ref.png, ref, request))
                continue
            assert ref.object_name is not None  # ImageRef holds one or the other
            try:
                stored = await self._while_reachable(
                    f"job {result.job_id}: fetch {ref.object_name}",
                    functools.partial(self._images.get, ref.object_name),
                )
            except nats.js.errors.NotFoundError:
                raise RemoteRenderFailed(
                    f"{ref.object_name} is no longer in the broker's image store "
                    "(results are kept 24 hours)"
                ) from None
            png = stored.data or b""
            if not is_named_picture(png, ref.sha256):
                raise RemoteRenderFailed(
                    f"{ref.object_name} in the broker's image store is not the picture "
                    "the worker's result names"
                )
            images.append(_sized_as_asked(result, png, ref, request))
        return images

    async def _on_result(self, msg: Msg) -> None:
        job_id = job_id_of(msg.subject)
        waiter = self._waiters.get(job_id)
        if waiter is None or waiter.done() or not self._verified(job_id, msg.data, msg.headers):
            return
        result = ResultMessage.decode(msg.data)
        now = asyncio.get_running_loop().time()
        if result.worker != BOT_REPORTER and self._live_workers.unheard(result.worker, now):
            log.warning(
                "job %s: rendered by worker %r, whose heartbeat the bot does not hear (older "
                "than the bot, or its broker user lacks the right to %s): jobs for models only "
                "such workers have are refused; upgrade it, or grant the right "
                "(deploy/nats-server.conf); said once a worker",
                job_id,
                result.worker[:100],
                WORKERS_SUBJECT,
            )
        waiter.set_result(result)

    async def _on_max_deliveries(self, msg: Msg) -> None:
        """JetStream gave up on a job whose last delivery died with its worker too: store the
        failure as that worker would have, so the waiting slot (or a restarted bot) sees it.
        The notice is acknowledged once handled (or found moot)."""
        advisory = json.loads(msg.data)
        sequence, deliveries = int(advisory["stream_seq"]), int(advisory["deliveries"])
        try:
            stored = await self._js.get_msg(JOBS_STREAM, sequence)
            job = JobMessage.decode(stored.data or b"")
            log.error("job %s: all %d deliveries lost; reporting it failed", job.job_id, deliveries)
            # Only when no result is there yet: another bot, or a hung worker, may have won.
            # Tagged with the message's secret: the job may be another bot's.
            try:
                await self._publish_result(
                    lost_with_workers(job.job_id, BOT_REPORTER, deliveries), job.secret
                )
            except nats.js.errors.APIError as error:
                if error.err_code != WRONG_LAST_SEQUENCE:
                    raise
                # It has a result (or the marker of a settled job): nothing left to report.
            await self._delete_message(JOBS_STREAM, sequence)
        except nats.js.errors.NotFoundError:
            pass  # cancelled, or already handled
        except (nats.js.errors.APIError, nats.errors.Error) as error:
            # Not acknowledged: JetStream offers the notice again after its ack wait.
            log.warning("max-deliveries advisory for message %d: %r", sequence, error)
            return
        with contextlib.suppress(nats.errors.Error):
            await msg.ack()

    async def _on_worker(self, msg: Msg) -> None:
        self._live_workers.heard(msg.data, asyncio.get_running_loop().time())

    async def _on_progress(self, msg: Msg) -> None:
        job_id = job_id_of(msg.subject)
        if job_id not in self._waiters or not self._verified(job_id, msg.data, msg.headers):
            return
        self._started_at.setdefault(job_id, time.perf_counter())
        if (listener := self._progress.get(job_id)) is not None:
            listener(decode_progress(msg.data))


def _left_without_result(
    job_id: str, handed_over: _HandedOver, max_age: float | None
) -> RemoteRenderFailed:
    """The failure of a job whose message left the jobs stream with no result the bot
    accepts: expired, when older than the stream's age limit (no worker took it in time);
    else removed (an operator's purge, a worker older than the bot whose untagged result was
    dropped, or a worker that found a made-up result on its subject, which a worker's user may
    publish, and took the job as done)."""
    age = asyncio.get_running_loop().time() - handed_over.published_at
    if max_age and age >= max_age:
        log.error("job %s: its message expired in the jobs stream with no result", job_id)
        kept = f"{max_age / 3600:g} hours" if max_age >= 3600 else f"{max_age:g} s"
        return RemoteRenderFailed(f"no render worker finished it within {kept}")
    log.warning(
        "job %s: its message left the jobs stream after %.0f s without a result Easel "
        "accepts (purged, a worker older than the bot: upgrade workers with the bot, or a "
        "worker found a made-up result for it?)",
        job_id,
        age,
    )
    return RemoteRenderFailed("it was removed from the broker without a result Easel accepts")


def _sized_as_asked(
    result: ResultMessage, png: bytes, ref: ImageRef, request: RenderRequest
) -> RenderedImage:
    """A worker's picture, once its PNG header shows the size its result says, within the
    largest the job may make: the bot decodes it later (grids, posting), and Pillow only warns
    below 179 MP, so a buggy or compromised worker's huge picture must not get that far."""
    size, (max_width, max_height) = png_size(png), largest_output(request)
    if size is None or size != (ref.width, ref.height):
        problem = f"is not the {ref.width}x{ref.height} PNG its result says"
    elif ref.width > max_width or ref.height > max_height:
        problem = (
            f"is {ref.width}x{ref.height}, larger than this job makes ({max_width}x{max_height})"
        )
    else:
        return RenderedImage(png, ref.seed, ref.infotext, ref.width, ref.height)
    log.error(
        "job %s: refused a picture from worker %s: it %s", result.job_id, result.worker, problem
    )
    raise RemoteRenderFailed(f"the worker's picture {problem}")


def _check_count(result: ResultMessage, request: RenderRequest) -> None:
    """A worker's result holds as many pictures as the job makes, before any is read: more
    would be stored, posted and charged for as this member's; fewer, a job done in part."""
    returned, asked = len(result.images), output_count(request)
    if returned == asked:
        return
    log.error(
        "job %s: refused the result of worker %s: %d pictures, the job makes %d",
        result.job_id,
        result.worker,
        returned,
        asked,
    )
    raise RemoteRenderFailed(
        f"the worker returned {counted(returned, 'picture')}; this job makes {asked}"
    )


def _meta_subject(name: str) -> str:
    """Where the image store keeps object ``name``'s metadata (``_object_name`` reverses it)."""
    return f"$O.{IMAGES_BUCKET}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"


def _object_name(meta_subject: str) -> str | None:
    """The name of the object whose metadata is stored on ``meta_subject`` (None: not one an
    object store wrote, which a holder of the bucket could still put there)."""
    try:
        return base64.urlsafe_b64decode(job_id_of(meta_subject)).decode()
    except ValueError:
        return None


def _read_picture(field: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        role = field.replace(
            "_", " "
        )  # the path (a server's) for the log; the member reads the role
        log.warning("%s %s cannot be read: %s", role, path, error.strerror)
        raise RenderInputError(f"{role} cannot be read: {error.strerror}") from None


class RemoteSlot:
    """A ``bot.jobs.queue.RenderSlot`` backed by the broker: one job in flight at a time."""

    # ``bot.jobs.queue.BrokeredSlot``: the broker counts the job's render attempts.
    brokered = True

    def __init__(self, client: BrokerClient, device: str) -> None:
        self._client = client
        self.device = device

    async def render(
        self,
        request: RenderRequest,
        progress: Callable[[StepProgress], None] | None = None,
        cancel: threading.Event | None = None,
        *,
        job_id: str,
    ) -> list[RenderedImage]:
        return await self._client.render(job_id, request, progress, cancel)

    def close(self) -> None:
        """Nothing per slot: the connection is ``BrokerClient``'s, closed by its owner."""


async def connect_slots(
    queue_url: str, slots: int, job_key: bytes
) -> tuple[BrokerClient, list[RemoteSlot]]:
    """For the composition root: the client (close it after the queue stops) and its slots."""
    client = await BrokerClient.open(BrokerConfig(queue_url, slots=slots, job_key=job_key))
    return client, client.slots()
