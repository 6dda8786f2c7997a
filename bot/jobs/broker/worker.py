"""``easel worker``: GPU devices serving the broker's job stream.

One pull loop per device, each with its own ``DeviceWorker``. A loop takes one job at a time,
asking first the consumer of the model it rendered last (already loaded: no model switch),
then the others with the most waiting jobs. While rendering it tells JetStream the job is in
progress, so only a worker that died (or hung) has its job redelivered after the ack wait.
A job's result goes to the results stream *before* the job is acked, so a crash between the
two costs a redelivery that finds the result and only acks.

Every ``heartbeat_s`` the worker lists the models its devices render (a walk of the models
folder, on a thread): its loops ask only for those models' jobs, and the list goes to the bot
(``wire.WorkerModels``), which refuses a job whose model no live worker has.

The device does not wait for that: once a render returns, the loop takes the next job while
the last one's pictures are encoded, stored and published and its message acked (one job
finishing at a time, acked in the order rendered; it stays in progress until acked).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import re
import secrets
import signal
import socket
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo, Header
from nats.js.object_store import ObjectStore

from bot import event_loop, metrics
from bot.jobs.broker.job_files import JobFiles
from bot.jobs.broker.wire import (
    CANCEL_SUBJECTS,
    DOORBELL_SUBJECT,
    HEARTBEAT_RANGE_S,
    IMAGES_BUCKET,
    JOBS_STREAM,
    RESULTS_STREAM,
    SETTLED_STREAM,
    TAG_HEADER,
    WORKERS_SUBJECT,
    WRONG_LAST_SEQUENCE,
    ImageRef,
    JobMessage,
    Outcome,
    ResultMessage,
    WorkerModels,
    _refused_since,
    close_quietly,
    connect,
    consumer_name,
    encode_progress,
    inline_images_budget,
    is_named_picture,
    job_id_of,
    lost_with_workers,
    own_object_names,
    picture_digest,
    progress_subject,
    result_subject,
    retry_transient,
    settled_subject,
    stale_within_s,
    tag,
    with_picture_paths,
)
from bot.jobs.queue.values import INTERNAL_FAILURE
from bot.process_end import STOP_SIGNALS, EarlyStop, end_at_once, exit_now, status_after_stop
from bot.redaction import redact_url
from inference.device_loss import DEVICE_LOST_EXIT_STATUS, DeviceLost, device_lost, lost_reason
from inference.names import as_typed
from inference.not_installed import NotInstalled
from inference.types import (
    RenderCancelled,
    RenderedImage,
    RenderFailed,
    RenderInputError,
    RenderRequest,
    StepProgress,
    steps_run,
)
from inference.worker import DeviceWorker, EngineFactory

__all__ = ["JOB_INPUTS_FOLDER", "WorkerConfig", "run_worker", "serve", "worker_inbox_prefix"]

log = logging.getLogger(__name__)

# Cancels heard for jobs not (yet) running here: a job taken just before its cancel arrived.
REMEMBERED_CANCELS = 1024
# Replies come under ``_INBOX_easel_<broker user>``, so each worker's broker user may subscribe
# to its own replies alone (the jobs it pulls), never another worker's.
WORKER_INBOX_PREFIX = "_INBOX_easel_worker"
# A user name becomes one subject token: no dots, wildcards or spaces.
_INBOX_USER = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A fetch waits at least this many round trips to the broker: a job sent to a request must
# reach the worker before its fetch gives up, also on a worker far from the broker.
FETCH_ROUND_TRIPS = 3
# A pull request expires this many round trips (plus half the configured wait) before its fetch
# gives up: a job sent in its last instant still arrives in time if the round trip doubles, or
# the request left the client's buffer late.
EXPIRY_ROUND_TRIPS = 2
# The right a worker's broker user needs to see the bot's decisions (deploy/nats-server.conf).
SETTLED_GRANT = f"$JS.API.STREAM.INFO.{SETTLED_STREAM}"
# How often the round trip to the broker is measured again (a ping).
RTT_REFRESH_S = 10.0
# How long a measuring ping may take before the last measure is kept.
RTT_PING_TIMEOUT_S = 2
# A ping whose caller stopped waiting (``_pong_within``) still awaits its PONG this many times
# as long as nats-py takes to drop a silent connection (``wire.stale_within_s``): the stale
# connection's read loop is cancelled first, so a PONG that finds its wait ended is never read.
PONG_AWAITED_PAST_STALE = 1.5
# A stop (SIGTERM) lets the job in hand finish for this long, then tells its render to stop at
# its next step and hands the job back to the broker (redelivered at once, to another worker).
RENDER_AT_STOP_S = 15.0
# A job for a model this worker lacks is handed back to the broker, delivered again after this
# long (to a worker that has it; one that lacks it no longer asks for its jobs; the bot refuses
# it once no live worker has its model: ``bot.jobs.broker.live_workers``).
LACKING_MODEL_DELAY_S = 1.0
# A job that needs an add-on this worker lacks (a refiner, VAE, ControlNet, IP-Adapter: the
# engine's ``NotInstalled``) is handed back, delivered again after this long (that job alone:
# the model's other jobs are taken as before), to whichever worker asks first: the delay keeps
# this one from taking it straight back. Each delivery counts against the job's attempts, and
# its last one is refused where it lands.
LACKING_ADDON_DELAY_S = 10.0
# How often a worker lists its models and tells the bot (``wire.WorkerModels``).
WORKER_HEARTBEAT_S = 5.0
# The stop's waits end by then, the closes after them within the contract's 30 s (compose's
# SIGKILL comes at 40 s): a device thread still inside a step (a hung kernel or driver) is left
# to it, its job handed back, and the process ends with ``STUCK_DEVICE_EXIT_STATUS``.
STOP_BUDGET_S = 27.0


def worker_inbox_prefix(url: str) -> str:
    """The reply prefix of a worker connecting with ``url``: ``_INBOX_easel_<user>`` for a
    ``user:password`` URL, else (a token, or no credentials) ``WORKER_INBOX_PREFIX``; a token
    never goes into a subject name."""
    parts = urlsplit(url)
    if parts.username is None or parts.password is None:
        return WORKER_INBOX_PREFIX
    if not _INBOX_USER.fullmatch(parts.username):
        raise ValueError(
            "EASEL_QUEUE_URL's user name becomes the worker's reply prefix, so it must be "
            f"1-64 letters, digits, '-' or '_', got {parts.username!r}"
        )
    return f"_INBOX_easel_{parts.username}"


# ``easel worker``'s ``WorkerConfig.job_files_root``, in EASEL_DATA_DIR.
JOB_INPUTS_FOLDER = "job-inputs"


@dataclass(frozen=True)
class WorkerConfig:
    url: str = field(repr=False)  # may carry credentials
    devices: tuple[str, ...]
    # An idle loop looks for redelivered jobs this often (new jobs wake it at once).
    idle_poll_s: float = 1.0
    # How long a fetch waits on a consumer that the server says has work, at least: a worker
    # far from the broker waits ``FETCH_ROUND_TRIPS`` round trips.
    fetch_timeout_s: float = 0.05
    # host and port of this process's /metrics and /healthz server; None: no server.
    metrics_endpoint: tuple[str, int] | None = None
    # Devices whose engine is built and warmed before the first job (EASEL_WARM_START).
    warm_devices: frozenset[str] = frozenset()
    # The root of the folders that hold a job's input pictures while it renders (``JobFiles``:
    # ``easel worker`` gives EASEL_DATA_DIR/job-inputs); None: the system's temporary folder,
    # which nothing clears of what a worker ended abruptly left.
    job_files_root: Path | None = None
    # How often the worker lists its models and tells the bot (``WORKER_HEARTBEAT_S``).
    heartbeat_s: float = WORKER_HEARTBEAT_S

    def __post_init__(self) -> None:
        if not self.devices:
            raise ValueError("a worker needs at least one device, e.g. EASEL_DEVICES=cuda:0")
        if len(set(self.devices)) != len(self.devices):
            raise ValueError(f"EASEL_DEVICES names a device twice: {', '.join(self.devices)}")
        if not 0.01 <= self.idle_poll_s <= 60:
            raise ValueError(f"idle_poll_s must be within 0.01..60, got {self.idle_poll_s}")
        if not 0.005 <= self.fetch_timeout_s <= 5:
            raise ValueError(f"fetch_timeout_s must be within 0.005..5, got {self.fetch_timeout_s}")
        low, high = HEARTBEAT_RANGE_S
        if not low <= self.heartbeat_s <= high:
            raise ValueError(
                f"heartbeat_s must be within {low:g}..{high:g}, got {self.heartbeat_s}"
            )
        worker_inbox_prefix(self.url)  # a bad user name fails at start, not at connect


class _Hub:
    """What the device loops of one process share: the connection, doorbells and cancels."""

    def __init__(self, nc: NatsClient, js: JetStreamContext) -> None:
        self.nc = nc
        self.js = js
        # Opened on first use: the bot makes it (a worker's broker user may not), maybe later.
        self._images: ObjectStore | None = None
        # The random part tells apart workers whose host name and pid are the same (containers
        # that each run Easel as pid 1 on one host name; workers in one process, in tests): the
        # bot keeps one entry a name (``WorkerModels``).
        self.name = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"
        self.doorbells: list[asyncio.Event] = []
        self.running: dict[str, threading.Event] = {}
        # Jobs taken here and not yet acked, with the copies of each delivered since: a copy
        # (redelivered after heartbeats lapsed while the broker restarted, or republished) is
        # acked with the first, not rendered again beside it.
        self.in_hand: dict[str, list[Msg]] = {}
        self._heard_cancels: OrderedDict[str, None] = OrderedDict()
        self._background: set[asyncio.Task[None]] = set()
        self._rtt_s = 0.0
        self._rtt_due = 0.0
        # How late the latest late job came: the next measure keeps at least that.
        self._lateness_s = 0.0
        # Device loops that take a late job while idle (``_DeviceLoop.take_late``).
        self.late_takers: list[Callable[[str, Msg], bool]] = []
        # Why each lost device was (``device_lost``): its loop ended, /healthz says so.
        self.lost: list[str] = []
        # The models whose jobs came here though no device of this worker has them, each
        # logged once for the operator.
        self.lacked_models: set[str] = set()
        # The add-ons (each with the model of the job that needed it) this worker lacks, each
        # logged once.
        self.lacked_addons: set[str] = set()
        # Where a job's input pictures are kept while it renders (None: the system's temporary
        # folder); set by ``serve``.
        self.job_files: Path | None = None
        # Set by ``stop_renders``: a render that stops from now on was stopped by the stop, not
        # by its member, and its job goes back to the broker.
        self.renders_stopped = False
        # False once the server refused ``SETTLED_GRANT``: a deployment configured for an older
        # Easel; its results stream alone tells what is settled.
        self._settled_readable = True

    async def listen(self) -> None:
        # The bot rings after each job: a cheap "new work" signal.
        await self.nc.subscribe(DOORBELL_SUBJECT, cb=self._ring)
        await self.nc.subscribe(CANCEL_SUBJECTS, cb=self._on_cancel)

    async def _ring(self, _: Msg) -> None:
        for doorbell in self.doorbells:
            doorbell.set()

    async def _on_cancel(self, msg: Msg) -> None:
        job_id = job_id_of(msg.subject)
        if event := self.running.get(job_id):
            event.set()
            return
        self._heard_cancels[job_id] = None
        while len(self._heard_cancels) > REMEMBERED_CANCELS:
            self._heard_cancels.popitem(last=False)

    async def round_trip_s(self) -> float:
        """The round trip to the broker, measured every ``RTT_REFRESH_S`` (a ping); the last
        measure while the broker does not answer one."""
        loop = asyncio.get_running_loop()
        if loop.time() >= self._rtt_due:
            self._rtt_due = loop.time() + RTT_REFRESH_S  # set first: one ping for all loops
            if (measured := await _pong_within(self.nc, RTT_PING_TIMEOUT_S)) is not None:
                self._rtt_s = max(measured, self._lateness_s)
                self._lateness_s = 0.0
        return self._rtt_s

    def came_late(self, lateness_s: float) -> None:
        """A job came ``lateness_s`` after its fetch gave up: the round trip grew (or an upload
        held the request back). The estimate is at least that at once, and measured again at
        the next fetch, keeping at least that: else every fetch would give up early until the
        next refresh, and each late job handed back would use up one of its deliveries.
        Counted up to ``RTT_PING_TIMEOUT_S``: a job held back by a reconnect says little of
        the round trip, and each fetch on a consumer without work waits three of them."""
        lateness_s = min(lateness_s, RTT_PING_TIMEOUT_S)
        self._lateness_s = max(self._lateness_s, lateness_s)
        self._rtt_s = max(self._rtt_s, lateness_s)
        self._rtt_due = 0.0

    async def place_late(self, consumer: str, msg: Msg) -> None:
        """A job of ``consumer`` delivered where no fetch waits for it: a copy of a job held
        here joins that job (heartbeaten and acked with it, as ``_DeviceLoop._handle`` does);
        any other goes to an idle device loop of this process, else back to the consumer at
        once (nak) for whichever worker asks next: each nak uses up one of its deliveries."""
        try:
            job_id: str | None = JobMessage.decode(msg.data).job_id
        except ValueError:
            job_id = None  # a pull that takes it drops it
        if job_id is not None and await self.join_held(job_id, msg, "a late copy"):
            return
        if not any(take(consumer, msg) for take in self.late_takers):
            with contextlib.suppress(nats.errors.Error):
                await msg.nak()

    async def join_held(self, job_id: str, msg: Msg, what: str) -> bool:
        """Whether ``msg`` is a copy of a job this worker holds (``in_hand``): then it joins
        that job, heartbeaten and acked with the first delivery, not rendered again."""
        if (copies := self.in_hand.get(job_id)) is None:
            return False
        log.info("job %s: %s joins the delivery this worker has", job_id, what)
        copies.append(msg)
        with contextlib.suppress(nats.errors.Error):
            await msg.in_progress()
        return True

    def cancel_event_for(self, job_id: str) -> threading.Event:
        event = self.running[job_id] = threading.Event()
        if self._heard_cancels.pop(job_id, "absent") is None or self.renders_stopped:
            event.set()
        return event

    def stop_renders(self) -> None:
        """The stop cannot wait longer for the jobs in hand: each render stops at its next
        step, and its job goes back to the broker (``_DeviceLoop._hand_back``)."""
        self.renders_stopped = True
        for event in self.running.values():
            event.set()

    async def images(self) -> ObjectStore:
        if self._images is None:
            self._images = await retry_transient(
                "open the picture bucket", lambda: self.js.object_store(IMAGES_BUCKET)
            )
        return self._images

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def has_result(self, job_id: str) -> bool:
        """Whether the job has a stored result, or the bot settled it (cancelled it, or
        recorded its outcome), asked without reading either: a worker may not. The bot's
        decisions are kept apart, where no worker may publish: made-up results can push the
        results stream's oldest out, never those."""
        stored, settled = await asyncio.gather(
            self._holds(RESULTS_STREAM, result_subject(job_id)), self._settled(job_id)
        )
        return stored or settled

    async def _settled(self, job_id: str) -> bool:
        if not self._settled_readable:
            return False
        before = self.nc.last_error
        try:
            return await self._holds(SETTLED_STREAM, settled_subject(job_id))
        except nats.js.errors.NotFoundError:
            return False  # a bot older than that stream: nothing settled there
        except nats.errors.TimeoutError:
            refusal = _refused_since(self.nc, before)
            if refusal is None or SETTLED_STREAM not in refusal[0]:
                raise  # the broker is away
            if self._settled_readable:  # once, also when several checks were refused at once
                self._settled_readable = False
                log.error(
                    "the server refuses this worker's broker user %s: add %s to every worker "
                    "user (deploy/nats-server.conf), reload the server, then restart the "
                    "workers (this one no longer asks). Until then jobs are checked in the "
                    "results stream alone, where made-up results can push out the bot's "
                    "cancels and outcomes",
                    refusal[0],
                    SETTLED_GRANT,
                )
            return False

    async def _holds(self, stream: str, subject: str) -> bool:
        info = await self.js.stream_info(stream, subjects_filter=subject)
        return bool(info.state.subjects)

    async def publish_result(self, result: ResultMessage, secret: str) -> None:
        """Publish ``result`` only where the job has none yet: a late one (its cancel was
        missed, its acknowledgement lost) must not replace the bot's marker of the settled job
        with the member's prompt and pictures for a day, nor another's result. Refused, its
        own pictures leave the store; the caller acknowledges the job either way."""
        data = result.encode()
        headers = {Header.EXPECTED_LAST_SUBJECT_SEQUENCE: "0", TAG_HEADER: tag(secret, data)}
        attempts = 0

        async def publish() -> None:
            nonlocal attempts
            attempts += 1
            await self.js.publish(result_subject(result.job_id), data, headers=headers)

        try:
            await retry_transient(f"job {result.job_id}: publish the result", publish)
        except nats.js.errors.APIError as error:
            if error.err_code != WRONG_LAST_SEQUENCE:
                raise
            log.info("job %s: a result is stored already; this one dropped", result.job_id)
            # After a retry the stored one may be this very result, stored before its answer
            # was lost: its pictures stay (the bot's settling drops them).
            if attempts == 1:
                await self._delete_pictures(result)

    async def _delete_pictures(self, result: ResultMessage) -> None:
        """Best effort (the bucket's TTL drops what is left), and only the job's own."""
        for name in own_object_names(result.job_id, result.images):
            with contextlib.suppress(nats.errors.Error):
                await (await self.images()).delete(name)


class _Puller:
    """Pull requests on one job consumer, one job each. A job that arrives after its fetch gave
    up (sent as the request expired, or the round trip grew since it was measured) goes to
    ``late`` with the consumer's name, at once: nats-py's fetch would keep it buffered for a
    later fetch, unheartbeaten while the device renders another job, so that it lapsed,
    rendered on another worker, then here too.

    The request expires ``EXPIRY_ROUND_TRIPS`` round trips and half the configured wait before
    the fetch gives up, so the broker rarely sends a job to a request its worker no longer waits
    on: only when the round trip more than doubles meanwhile. One that comes late tells the hub
    by how much (``_Hub.came_late``)."""

    def __init__(
        self, hub: _Hub, consumer: str, late: Callable[[str, Msg], Awaitable[None]]
    ) -> None:
        self._hub = hub
        self._consumer = consumer
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{JOBS_STREAM}.{consumer}"
        self._inbox = hub.nc.new_inbox()  # under the worker's own reply prefix
        self._late = late
        self._waiting: asyncio.Future[Msg] | None = None
        self._gave_up_at: float | None = None
        # Pull statuses other than "no job" (404, 408) seen here, logged once each: a 409 (the
        # consumer deleted, too many waiting pulls) or a 400 makes each fetch wait out its time.
        self._statuses_logged: set[str] = set()

    async def listen(self) -> None:
        await self._hub.nc.subscribe(self._inbox, cb=self._arrived)

    async def _arrived(self, msg: Msg) -> None:
        if status := JetStreamContext.is_status_msg(msg):
            self._log_status(status, msg)  # the end of a request: nothing delivered
            return
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(msg)
            return
        if self._gave_up_at is not None:
            self._hub.came_late(asyncio.get_running_loop().time() - self._gave_up_at)
        await self._late(self._consumer, msg)

    def _log_status(self, status: str, msg: Msg) -> None:
        if status in {"404", "408"} or status in self._statuses_logged:
            return  # no job now, the request expired: each empty fetch ends so
        self._statuses_logged.add(status)
        log.warning(
            "pull requests on the consumer %s are answered %s (%s); its fetches wait out "
            "their time (logged once)",
            self._consumer,
            status,
            (msg.headers or {}).get(Header.DESCRIPTION, "no description"),
        )

    async def fetch(self, configured_timeout_s: float) -> Msg | None:
        """One job of the consumer, or None when none came within the wait."""
        rtt_s = await self._hub.round_trip_s()
        margin_s = configured_timeout_s / 2
        timeout_s = max(configured_timeout_s, FETCH_ROUND_TRIPS * rtt_s) + margin_s
        expires_s = timeout_s - EXPIRY_ROUND_TRIPS * rtt_s - margin_s  # at least a round trip
        request = {"batch": 1, "expires": int(expires_s * 1e9)}
        loop = asyncio.get_running_loop()
        self._waiting = waiting = loop.create_future()
        try:
            await self._hub.nc.publish(self._next, json.dumps(request).encode(), self._inbox)
            await asyncio.wait([waiting], timeout=timeout_s)
        finally:
            self._waiting = None  # from here on, what arrives is late
            self._gave_up_at = loop.time()
        return waiting.result() if waiting.done() else None


class _DeviceLoop:
    def __init__(
        self, hub: _Hub, device: str, engine_factory: EngineFactory, config: WorkerConfig
    ) -> None:
        self._hub = hub
        self._device = DeviceWorker(
            device, engine_factory, warm_start=device in config.warm_devices
        )
        self._config = config
        self._doorbell = asyncio.Event()
        hub.doorbells.append(self._doorbell)
        hub.late_takers.append(self.take_late)
        self._loaded_model: str | None = None
        self._pullers: dict[str, _Puller] = {}
        self._consumers: dict[str, ConsumerInfo] = {}
        # Jobs that came after their fetch gave up while this loop was idle (by consumer), its
        # own or a busy sibling's: the next ``_take`` has them first. One that comes while every
        # loop is busy goes back at once.
        self._late: list[tuple[str, Msg]] = []
        self._busy = False
        # The last rendered job's result being stored, published and acked.
        self._finishing: asyncio.Task[None] | None = None
        # The job whose render is under way, and its delivery: a stop that cannot wait for a
        # device stuck in it hands it back (``hand_back_stuck``).
        self._rendering: tuple[str, Msg, asyncio.Task[None]] | None = None
        # What the stop left the device thread loading, not waited for (``left_loading``).
        self._left_loading: str | None = None
        # The models this device renders, as last listed (``list_models``; None: not known
        # yet, or its engine lists none).
        self._models: frozenset[str] | None = None

    @property
    def device(self) -> str:
        return self._device.device

    def stuck_in(self) -> str | None:
        """What the device thread is still inside but a load ("gpu-0 in job <id>"), or None
        while idle or only loading (``still_loading``)."""
        in_hand = self._device.in_hand
        if in_hand is None or self._device.loading is not None:
            return None
        return f"{self.device} in {in_hand}"

    def still_loading(self) -> str | None:
        """What the device thread loads with no job on it ("gpu-0 was still loading model
        <name>"), or None."""
        loading = self._device.loading
        return None if loading is None else f"{self.device} was still loading {loading}"

    def left_loading(self) -> str | None:
        """What the device thread was still loading when the loop ended at the stop without
        waiting for it ("gpu-0 was still loading its engine"), or None: the process must end
        without joining that thread (``serve``)."""
        return self._left_loading

    async def hand_back_stuck(self) -> None:
        """The device is stuck in the render of the job in hand: that job goes back to the
        broker now (redelivered at once, to another worker) rather than after its ack wait."""
        if self._rendering is not None:
            await self._hand_back(*self._rendering)

    async def run(self, stop: asyncio.Event) -> None:
        self._device.warm_up()  # on the device thread, ahead of the first job taken
        try:
            # A device still broken at the start (the restart did not bring it back) takes
            # no job: lost without costing one a delivery. The probe waits behind the warm-up:
            # a stop meanwhile waits for neither, and the close stops the warm-up.
            probing = asyncio.ensure_future(self._lost_at_probe())
            await _wait_for_either(probing, stop)
            if not probing.done():
                # Still queued behind the warm-up (cancelled), or running (the close waits
                # for it, unless it is still building the engine): either way no job is taken.
                probing.cancel()
                return
            if (failed := probing.result()) is not None:
                self._lose(lost_reason(self.device, failed), failed, "")
                return
            while not stop.is_set():
                try:
                    taken = await self._take()
                    if taken is None:
                        await _wait_any(self._config.idle_poll_s, self._doorbell, stop)
                    else:
                        try:
                            await self._handle(*taken)
                        finally:
                            self._busy = False
                except nats.errors.Error as error:
                    # The broker is restarting: wait for the reconnect instead of spinning.
                    log.warning("%s: broker error (%r); retrying", self.device, error)
                    await _wait_any(self._config.idle_poll_s, stop)
                except DeviceLost as lost:
                    self._lose(str(lost), lost.__cause__, ", its job handed back to the broker")
                    return
        finally:
            self._busy = True  # stopping: what comes late from now on goes back at once
            await self._hand_back_late()
            await self._settled()
            if stop.is_set() and self._device.building:
                # A stop during the start (the warm-up's or the probe's engine build: seconds
                # of imports and scans, no job on it) does not wait for it: the thread ends
                # once built, and takes nothing.
                self._left_loading = self.still_loading()
            if self._left_loading is not None:
                self._device.close(wait=False)
            else:
                await asyncio.to_thread(self._device.close)

    def _lose(self, reason: str, cause: BaseException | None, handed_back: str) -> None:
        """The device is gone: its loop ends, and /healthz says ``reason``."""
        log.critical(
            "%s; it takes no more jobs%s; a new process gets it back",
            reason,
            handed_back,
            exc_info=cause,
        )
        self._hub.lost.append(reason)

    async def _lost_at_probe(self) -> Exception | None:
        """What the device raised at its probe (``DeviceWorker.probe``) when that says it is
        lost (``device_lost``); None while it computes, or when the error is not the device's."""
        failed = await self._device.probe()
        return failed if failed is not None and device_lost(failed) else None

    async def _settled(self) -> None:
        """Wait until the last rendered job's result is published and its message acked."""
        if self._finishing is not None:
            await asyncio.wait([self._finishing])
            self._finishing = None

    async def _take(self) -> tuple[Msg, ConsumerInfo] | None:
        # Cleared before looking, so a job published while we look rings again.
        self._doorbell.clear()
        candidates = await self._candidates()
        taken = self._late_job()
        for info in candidates:
            if taken is not None:
                break
            puller = await self._puller(info.name)
            if (msg := await puller.fetch(self._config.fetch_timeout_s)) is not None:
                taken = msg, info
            # else another worker was faster
        if taken is not None:
            self._busy = True
            await self._hand_back_late()  # another worker may render them meanwhile
        return taken

    async def _hand_back_late(self) -> None:
        """Called once busy: the late jobs kept go to an idle sibling, else back."""
        late, self._late = self._late, []
        for consumer, msg in late:
            await self._hub.place_late(consumer, msg)

    def _late_job(self) -> tuple[Msg, ConsumerInfo] | None:
        while self._late:
            consumer, msg = self._late.pop(0)
            if (info := self._consumers.get(consumer)) is not None:
                return msg, info
            self._hub.spawn(_nak(msg))  # its consumer is gone: no loop here would take it
        return None

    def take_late(self, consumer: str, msg: Msg) -> bool:
        """Keep a late job for the next ``_take`` if this loop is idle."""
        if self._busy:
            return False
        self._late.append((consumer, msg))
        self._doorbell.set()
        return True

    async def _candidates(self) -> list[ConsumerInfo]:
        """Consumers that may have a job for us: the loaded model's first, then by most waiting
        jobs. Unacked jobs count: their worker may have died. Only those of the models this
        device renders (and of no model named: its default), once its engine lists them: the
        workers' model folders may differ, as while a new model is copied to each."""
        try:
            infos = await self._hub.js.consumers_info(JOBS_STREAM)
        except nats.js.errors.NotFoundError:
            return []  # no bot has made the streams yet (a worker's broker user may not)
        self._consumers = {info.name: info for info in infos}
        loaded = consumer_name(self._loaded_model)
        busy = [info for info in infos if (info.num_pending or 0) + (info.num_ack_pending or 0) > 0]
        if busy and self._models is None:  # until its engine lists them: then each heartbeat
            await self.list_models()
        if self._models is not None:
            renders = {consumer_name(None), *map(consumer_name, self._models)}
            busy = [info for info in busy if info.name in renders]

        def preference(info: ConsumerInfo) -> tuple[bool, int]:
            return (info.name != loaded, -(info.num_pending or 0))

        return sorted(busy, key=preference)

    async def list_models(self) -> frozenset[str] | None:
        """List the models this device renders now (a walk of its folders, on a thread: at
        each heartbeat, and until its engine lists them at each look for work), kept for
        ``_candidates``; None: its engine is not built, or lists none."""
        self._models = await asyncio.to_thread(self._device.models)
        return self._models

    async def _puller(self, name: str) -> _Puller:
        if name not in self._pullers:
            puller = _Puller(self._hub, name, self._hub.place_late)
            await puller.listen()
            self._pullers[name] = puller
        return self._pullers[name]

    async def _handle(self, msg: Msg, consumer: ConsumerInfo) -> None:
        try:
            job = JobMessage.decode(msg.data)
        except ValueError as error:
            # Not from a bot (none would send it): dropped, so it is not delivered again.
            log.warning(
                "message %s on %s dropped: %s", msg.metadata.sequence.stream, msg.subject, error
            )
            with contextlib.suppress(nats.errors.Error):
                await msg.term()
            return
        deliveries = msg.metadata.num_delivered or 1
        max_deliver = consumer.config.max_deliver or 0
        if await self._hub.join_held(job.job_id, msg, f"delivery {deliveries}"):
            return
        if await retry_transient(
            f"job {job.job_id}: check", lambda: self._hub.has_result(job.job_id)
        ):
            log.info("job %s: already has a result; acknowledging only", job.job_id)
            await self._settled()
            await _ack(msg)
        elif max_deliver > 0 and deliveries >= max_deliver:
            log.error(
                "job %s: lost with its worker %d times; reporting it failed",
                job.job_id,
                deliveries - 1,
            )
            await self._settled()
            await self._hub.publish_result(
                lost_with_workers(job.job_id, self._hub.name, deliveries), job.secret
            )
            await _ack(msg)
        else:
            finish = await self._render(job, msg, consumer, deliveries)
            await self._settled()
            # The next job renders while this one's result is stored and published.
            self._finishing = asyncio.create_task(finish, name=f"finish-{job.job_id}")

    async def _render(
        self, job: JobMessage, msg: Msg, consumer: ConsumerInfo, deliveries: int
    ) -> Coroutine[Any, Any, None]:
        """Render ``job``; returns what finishes it once the device is free for the next:
        storing its pictures, publishing the result, then the ack."""
        result = functools.partial(
            ResultMessage, job.job_id, worker=self._hub.name, deliveries=deliveries
        )
        self._hub.in_hand[job.job_id] = []
        if paths := job.named_paths():
            # Whoever can publish on the broker could name any file here: never opened.
            log.warning("job %s names file paths (%s): refused", job.job_id, ", ".join(paths))
            refused = result(
                Outcome.INVALID,
                error=f"refused: the job names file paths ({', '.join(paths)}); pictures must "
                "travel with the job, a worker never opens a path a message names",
            )
            return self._finish(msg, job.secret, refused, None)
        if (newer := job.too_new()) is not None:
            # Rendered here, the job would lack what this worker does not know: refused, so
            # the bot fails and refunds it rather than post another picture than was asked.
            log.error(
                "job %s refused: %s; this worker is older than the bot: upgrade workers with "
                "the bot",
                job.job_id,
                newer,
            )
            return self._finish(msg, job.secret, result(Outcome.OUTDATED, error=newer), None)
        log.info("job %s: started on %s (delivery %d)", job.job_id, self.device, deliveries)
        cancel = self._hub.cancel_event_for(job.job_id)
        heartbeat = asyncio.create_task(
            self._heartbeat(msg, job.job_id, (consumer.config.ack_wait or 30.0) / 3, cancel),
            name=f"heartbeat-{job.job_id}",
        )
        report = functools.partial(self._report_progress, job)
        finish = functools.partial(self._finish, msg, job.secret)
        self._loaded_model = job.request.model
        try:
            with tempfile.TemporaryDirectory(
                prefix="easel-job-", dir=self._hub.job_files
            ) as folder:
                request = await self._with_pictures(job, Path(folder))
                started = time.perf_counter()
                self._rendering = job.job_id, msg, heartbeat
                try:
                    rendered = await self._device.render(request, report, cancel, job_id=job.job_id)
                finally:
                    self._rendering = None
                seconds = time.perf_counter() - started
                ran = steps_run(rendered)
                metrics.render_finished(request.model, self.device, ran, seconds)
        except RenderCancelled:
            if self._hub.renders_stopped:  # by the stop, not the member: for another worker
                return self._hand_back(job.job_id, msg, heartbeat)
            return finish(result(Outcome.CANCELLED), heartbeat)
        except RenderInputError as error:
            max_deliver = consumer.config.max_deliver or 0
            last_attempt = 0 < max_deliver <= deliveries + 1  # the next reports it lost
            if await self._lacks(job.request.model) and not last_attempt:
                return self._hand_back_lacking(job, msg, heartbeat)
            if isinstance(error, NotInstalled) and not last_attempt:
                return self._hand_back_lacking_addon(job, msg, heartbeat, error)
            return finish(result(Outcome.INVALID, error=str(error)), heartbeat)
        except Exception as error:
            # The same errors come from a launch too big for the job, which leaves the device
            # sound: only a failed probe says it is lost.
            if device_lost(error) and await self._lost_at_probe() is not None:
                # Not the job's failure: handed back for another worker (a delivery used up:
                # one that kills every device it meets ends at the stream's max_deliver).
                await self._hand_back(job.job_id, msg, heartbeat)
                raise DeviceLost(lost_reason(self.device, error)) from error
            # The log keeps the class and traceback for the operator; the member reads the
            # result's words, so only a ``RenderFailed``'s (written for them) travel as they are.
            log.exception("job %s failed on %s", job.job_id, self.device)
            told = str(error) if isinstance(error, RenderFailed) else INTERNAL_FAILURE
            return finish(result(Outcome.FAILED, error=told), heartbeat)
        finally:
            self._hub.running.pop(job.job_id, None)
        # The render's own seconds: the bot charges them, not its wait (the broker's included).
        return finish(result(Outcome.DONE, render_s=seconds), heartbeat, rendered)

    async def _hand_back(
        self, job_id: str, msg: Msg, heartbeat: asyncio.Task[None], delay_s: float | None = None
    ) -> None:
        """Give the job back to the broker, with every copy of it delivered here (nak): it is
        redelivered at once (or after ``delay_s``), to whichever worker asks next."""
        heartbeat.cancel()
        for delivered in [msg, *self._hub.in_hand.pop(job_id, [])]:
            await _nak(delivered, delay_s)

    async def _lacks(self, model: str | None) -> bool:
        """Whether ``model`` (None: the default, never lacked) is not among those this device
        renders (listed now: the render that refused it built the engine)."""
        if model is None:
            return False
        models = await self.list_models()
        return models is not None and as_typed(model) not in models

    async def _hand_back_lacking(
        self, job: JobMessage, msg: Msg, heartbeat: asyncio.Task[None]
    ) -> None:
        """A job for a model this worker lacks (taken before it listed its models, or as the
        model was removed) goes back for a worker that has it, not failed here; the bot
        refuses it once no live worker has the model (``bot.jobs.broker.live_workers``)."""
        _warn_once(
            self._hub.lacked_models,
            str(job.request.model),
            job,
            "job %s is for the model %r, which this worker does not have: handed back for a "
            "worker that has it (install the same models on every worker; logged once a model)",
        )
        await self._hand_back(job.job_id, msg, heartbeat, LACKING_MODEL_DELAY_S)

    async def _hand_back_lacking_addon(
        self, job: JobMessage, msg: Msg, heartbeat: asyncio.Task[None], lacked: NotInstalled
    ) -> None:
        """A job that needs an add-on this worker lacks goes back for a worker that has it,
        delivered again after ``LACKING_ADDON_DELAY_S`` (its deliveries are its attempts); its
        last attempt is refused where it lands, with the engine's words (``_render``)."""
        _warn_once(
            self._hub.lacked_addons,
            f"{job.request.model}: {lacked}",
            job,
            "job %s for the model %r needs an add-on this worker does not have (%s): handed "
            "back, delivered again in %g s to whichever worker asks first (install the same "
            "add-ons on every worker; logged once a model and add-on)",
            lacked,
            LACKING_ADDON_DELAY_S,
        )
        await self._hand_back(job.job_id, msg, heartbeat, LACKING_ADDON_DELAY_S)

    async def _finish(
        self,
        msg: Msg,
        secret: str,
        result: ResultMessage,
        heartbeat: asyncio.Task[None] | None,
        rendered: list[RenderedImage] | None = None,
    ) -> None:
        """Store ``rendered`` (a done job's pictures) in ``result``, publish it, then ack the
        job, which stays in progress until then. A failure here leaves the job unacked:
        redelivered, it finds its result or renders again (never lost, never published twice)."""
        try:
            if rendered is not None:
                images = await self._store(_attempt_prefix(result), rendered)
                result = dataclasses.replace(result, images=images)
            metrics.worker_job_ended(result.outcome)
            await self._hub.publish_result(result, secret)
        except Exception:
            log.exception("job %s: no result published; left to redelivery", result.job_id)
            self._hub.in_hand.pop(result.job_id, None)
        else:
            # Taken from ``in_hand`` before acking: a copy delivered from now on finds the result.
            for delivered in [msg, *self._hub.in_hand.pop(result.job_id, [])]:
                await _ack(delivered)
        finally:
            if heartbeat is not None:
                heartbeat.cancel()

    async def _with_pictures(self, job: JobMessage, folder: Path) -> RenderRequest:
        """The request with its pictures written to ``folder`` (this job's own temporary
        folder) and their paths filled in: the engine reads files."""
        paths = {}
        for picture in job.inputs:
            data = picture.png
            if data is None:
                assert picture.object_name is not None  # PictureInput holds one or the other
                data = await self._fetch(job.job_id, picture.object_name)
                if not is_named_picture(data, picture.sha256):
                    raise RenderInputError(
                        f"the job's input picture {picture.object_name} in the broker's store "
                        "is not the one the bot stored"
                    )
            path = folder / picture.field  # one of ALL_PICTURES (checked when decoded)
            await asyncio.to_thread(path.write_bytes, data)
            paths[picture.field] = str(path)
        return with_picture_paths(job.request, paths)

    async def _fetch(self, job_id: str, object_name: str) -> bytes:
        try:
            stored = await retry_transient(
                f"job {job_id}: fetch {object_name}",
                functools.partial((await self._hub.images()).get, object_name),
            )
        except nats.js.errors.NotFoundError:
            raise RenderInputError(
                f"the job's input picture {object_name} is no longer in the broker's store "
                "(kept 24 hours)"
            ) from None
        return stored.data or b""

    async def _store(self, prefix: str, rendered: list[RenderedImage]) -> tuple[ImageRef, ...]:
        """Small results go inline in the result message; larger ones to the object store,
        named ``prefix`` (this delivery's, ``_attempt_prefix``) and their index."""
        pngs = [await image.png_ready() for image in rendered]  # encoding off the device
        if sum(len(png) for png in pngs) <= inline_images_budget(self._hub.nc.max_payload):
            return tuple(
                ImageRef(image.seed, image.infotext, image.width, image.height, png=png)
                for image, png in zip(rendered, pngs, strict=True)
            )
        refs = []
        for index, (image, png) in enumerate(zip(rendered, pngs, strict=True)):
            name = f"{prefix}{index}.png"
            await retry_transient(
                f"store {name}",
                functools.partial((await self._hub.images()).put, name, png),
            )
            refs.append(
                ImageRef(
                    image.seed,
                    image.infotext,
                    image.width,
                    image.height,
                    object_name=name,
                    sha256=picture_digest(png),
                )
            )
        return tuple(refs)

    def _report_progress(self, job: JobMessage, step: StepProgress) -> None:
        data = encode_progress(step)
        headers = {TAG_HEADER: tag(job.secret, data)}
        self._hub.spawn(self._hub.nc.publish(progress_subject(job.job_id), data, headers=headers))

    async def _heartbeat(
        self, msg: Msg, job_id: str, every_s: float, cancel: threading.Event
    ) -> None:
        """Keep the job ours while it renders, and stop it if it has a result already (the bot
        stores one when it cancels: for a cancel whose core message never arrived)."""
        while not cancel.is_set():
            await asyncio.sleep(every_s)
            with contextlib.suppress(nats.errors.Error):
                for delivered in [msg, *self._hub.in_hand.get(job_id, [])]:
                    await delivered.in_progress()
                if await self._hub.has_result(job_id):
                    cancel.set()


def _warn_once(told: set[str], key: str, job: JobMessage, message: str, *args: object) -> None:
    """Log ``message`` (formatted with the job's id, its model and ``args``) unless ``told``
    holds ``key`` (what it tells of) already; then it does."""
    if key not in told:
        told.add(key)
        log.warning(message, job.job_id, str(job.request.model), *args)


def _attempt_prefix(result: ResultMessage) -> str:
    """Where one delivery of a job stores its pictures: ``<job id>/<delivery>-<random>-``.
    A job can be rendered twice (its worker's heartbeats lapsed and the redelivery rendered
    too; a restarted bot published it again, delivery 1 once more): the second's pictures
    never overwrite those the stored result names, and when its publish is refused it
    deletes only its own. The bot takes the names from the result."""
    return f"{result.job_id}/{result.deliveries}-{secrets.token_hex(4)}-"


# The pings whose PONG is still awaited after their caller stopped waiting (``_pong_within``).
_PINGS_AWAITED: set[asyncio.Task[float]] = set()


async def _pong_within(nc: NatsClient, timeout_s: float) -> float | None:
    """The round trip of a ping to the server, or None when its PONG did not come within
    ``timeout_s`` (or the connection is closed). Its PONG back, what was published before it
    has reached the server, and a refusal of it come before (``nc.last_error``). nats-py's
    own wait (``flush``, ``rtt``) cancels the PONG's future when it times out or is cancelled,
    and a PONG that comes later finds a cancelled future: its read loop logs that as a
    traceback (InvalidStateError). Here only the caller's wait ends so (the stop cancelling
    the heartbeat, or a slow broker): the ping's own goes on in the background, ended by its
    PONG, a reconnect (which forgets the PONGs awaited) or the close (which reads none). Its
    own limit outlasts nats-py's stale detection (``PONG_AWAITED_PAST_STALE``): were it
    shorter, a broker that froze that long, then came back, would send a PONG that stops the
    read loop (no jobs or cancels heard, while the heartbeats still go out) until the
    connection is found stale."""
    ping = asyncio.ensure_future(nc.rtt(math.ceil(stale_within_s() * PONG_AWAITED_PAST_STALE)))
    _PINGS_AWAITED.add(ping)
    ping.add_done_callback(_ping_ended)
    await asyncio.wait([ping], timeout=timeout_s)
    if not ping.done() or ping.cancelled() or ping.exception() is not None:
        return None
    return ping.result()


def _ping_ended(ping: asyncio.Task[float]) -> None:
    _PINGS_AWAITED.discard(ping)
    if not ping.cancelled():
        ping.exception()  # read: a ping that failed after its caller left is no one's error


async def _ack(msg: Msg) -> None:
    with contextlib.suppress(nats.errors.Error):
        # If this ack is lost, the redelivery finds the result and acks again.
        await msg.ack()


async def _nak(msg: Msg, delay_s: float | None = None) -> None:
    with contextlib.suppress(nats.errors.Error):
        await msg.nak(delay_s)


async def _wait_for_either(work: asyncio.Future[Any], stop: asyncio.Event) -> None:
    """Return when ``work`` is done or ``stop`` is set."""
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([work, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()


async def _wait_any(timeout_s: float, *events: asyncio.Event) -> None:
    """Return when one of ``events`` is set, or after ``timeout_s``."""
    tasks = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(tasks, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def serve(
    config: WorkerConfig,
    engine_factory: EngineFactory,
    stop: asyncio.Event,
    *,
    exit_process: Callable[[int], NoReturn] = exit_now,
) -> int:
    """Serve until ``stop`` is set, or until every device is lost (``device_lost``); a running
    render is finished and reported first, or after ``RENDER_AT_STOP_S`` stopped and handed
    back. Returns the exit status: ``DEVICE_LOST_EXIT_STATUS`` once a device was lost (a new
    process gets it back), else 0. A device thread still busy once ``STOP_BUDGET_S`` is spent
    is not waited for: its job handed back and the connection closed, ``exit_process`` ends
    the process (a thread pool's threads are otherwise joined at the interpreter's exit) with
    ``STUCK_DEVICE_EXIT_STATUS`` (stuck in a step), 0 (only loading a model), or that of a
    lost device (``status_after_stop``). A stop while a device thread builds its engine for
    no job (the start) is not held for the build: the process ends so at once. Raises
    ``JobFilesUnusable`` before it connects when its job folders' root cannot be written."""
    job_files = None if config.job_files_root is None else JobFiles.take(config.job_files_root)
    try:
        nc = await connect(
            config.url,
            f"easel-worker-{socket.gethostname()}",
            inbox_prefix=worker_inbox_prefix(config.url),
        )
    except BaseException:
        if job_files is not None:
            job_files.close()
        raise
    hub = _Hub(nc, nc.jetstream())
    hub.job_files = None if job_files is None else job_files.folder
    metrics_server: metrics.MetricsServer | None = None
    stuck: list[str] = []
    loading: list[str] = []
    try:
        if config.metrics_endpoint is not None:
            metrics_server = await metrics.serve(
                *config.metrics_endpoint,
                healthy=lambda: nc.is_connected and not stop.is_set(),
                trouble=lambda: "; ".join(hub.lost) or None,
            )
        loops = [_DeviceLoop(hub, device, engine_factory, config) for device in config.devices]
        await hub.listen()
        log.info(
            "worker %s serving %s on %s (event loop: %s)",
            hub.name,
            ", ".join(config.devices),
            redact_url(config.url),
            event_loop.describe(asyncio.get_running_loop()),
        )
        telling = asyncio.create_task(_tell_models(hub, loops, config.heartbeat_s))
        serving = asyncio.gather(*(each.run(stop) for each in loops))
        try:
            ended = await _ended_within_the_stop(serving, stop, hub)
        finally:
            telling.cancel()
        if not ended:
            stuck = [busy for each in loops if (busy := each.stuck_in()) is not None]
            loading = [what for each in loops if (what := each.still_loading()) is not None]
            for each in loops:
                await each.hand_back_stuck()
            await _pong_within(nc, RTT_PING_TIMEOUT_S)  # the hand-backs reached the broker
        if not stuck and not loading:
            await serving  # raises what ended a loop, if one failed
            loading = [what for each in loops if (what := each.left_loading()) is not None]
    finally:
        if metrics_server is not None:
            await metrics_server.close()
        await close_quietly(nc)
        if job_files is not None:
            job_files.close()
    status = DEVICE_LOST_EXIT_STATUS if hub.lost else 0
    if stuck or loading:
        status = status_after_stop(status, stuck, loading)
        if stuck:
            log.warning(
                "stopped with %s still busy past the stop's %.0f s (a step in a hung kernel or "
                "driver, or a job's model still loading?): its job handed back to the broker; "
                "exiting with status %d without waiting for it",
                "; ".join(stuck),
                STOP_BUDGET_S,
                status,
            )
        exit_process(status)
    return status


async def _tell_models(hub: _Hub, loops: list[_DeviceLoop], every_s: float) -> None:
    """Every ``every_s``: list each device's models (kept for its loop) and tell the bot which
    this worker renders (``wire.WorkerModels``; None where a device cannot tell: any). A
    server that refuses this broker user the subject is said once: the bot then cannot count
    this worker's models, and may refuse jobs for models only it has."""
    told_refusal = listing_failed = False
    while True:
        try:
            listed = [await each.list_models() for each in loops]
        except Exception:  # a folder unreadable now: the bot hears of this worker no more
            if not listing_failed:
                log.exception("listing the models failed; tried again every %g s", every_s)
            listing_failed = True
            await asyncio.sleep(every_s)
            continue
        listing_failed = False
        models = None if None in listed else frozenset().union(*filter(None, listed))
        beat = WorkerModels(hub.name, models, every_s)
        before = hub.nc.last_error
        with contextlib.suppress(nats.errors.Error):
            await hub.nc.publish(WORKERS_SUBJECT, beat.encode())
            if not told_refusal:
                await _pong_within(hub.nc, RTT_PING_TIMEOUT_S)  # a refusal comes before it
        error = hub.nc.last_error
        if not told_refusal and error is not before and WORKERS_SUBJECT in str(error).lower():
            told_refusal = True
            log.error(
                "the server refuses this worker's broker user the publish right to %s "
                "(deploy/nats-server.conf): add it to every worker user and reload the server; "
                "until then the bot does not know this worker's models, and refuses a job for a "
                "model no other live worker has after its wait",
                WORKERS_SUBJECT,
            )
        await asyncio.sleep(every_s)


async def _ended_within_the_stop(
    serving: asyncio.Future[Any], stop: asyncio.Event, hub: _Hub
) -> bool:
    """Wait for ``serving`` (the device loops): without limit until ``stop`` is set, then for
    ``STOP_BUDGET_S``, the renders in hand told to stop after ``RENDER_AT_STOP_S``. Whether
    it ended."""
    await _wait_for_either(serving, stop)
    loop = asyncio.get_running_loop()
    stop_end = loop.time() + STOP_BUDGET_S
    if not serving.done():
        await asyncio.wait([serving], timeout=min(RENDER_AT_STOP_S, STOP_BUDGET_S))
    if not serving.done():
        hub.stop_renders()
        await asyncio.wait([serving], timeout=max(0.0, stop_end - loop.time()))
    return serving.done()


def run_worker(
    config: WorkerConfig, engine_factory: EngineFactory, early_stop: EarlyStop | None = None
) -> int:
    """The blocking entry point: SIGINT or SIGTERM stops taking jobs, then exits (``serve``:
    within ``STOP_BUDGET_S``); returns the exit status. A second one ends the process at once
    (``end_at_once``). One heard before (``early_stop``: while torch was imported) ends it
    before it serves, with status 0: no job was taken."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def stop_asked(signum: signal.Signals) -> None:
            if stop.is_set():
                end_at_once(signum)
            log.info(
                "stopping: the job in hand finishes, or after %.0f s goes back to the broker",
                RENDER_AT_STOP_S,
            )
            stop.set()

        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, stop_asked, signum)
        if early_stop is not None and early_stop.signum is not None:
            log.info("stopped by %s before serving: no job was taken", early_stop.signum.name)
            return 0
        return await serve(config, engine_factory, stop)

    return event_loop.run(main())
