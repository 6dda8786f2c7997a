"""Prometheus metrics: the one module that owns Easel's metric objects, and the small HTTP
server (``EASEL_METRICS_ADDR``) that serves them at ``/metrics`` beside a ``/healthz`` route.

The places that count call the small functions below; none of them knows prometheus-client.
Labels carry kinds, outcomes, models, devices and HTTP statuses, never a job, member, server
or prompt, so a scrape says how Easel runs and nothing about who asked for what.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import aiohttp
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bot.snowflakes import CLOCK_SLACK_S, made_at
from bot.web.connections import Cap, CappedSite, ConnectionCounter, quiet_runner
from bot.web.limits import METRICS_CONNECTION_CAPS

__all__ = [
    "MetricsServer",
    "MetricsServerError",
    "delivery_tried",
    "discord_http_trace",
    "gateway_lost",
    "http_connection_refused",
    "job_ended",
    "job_started",
    "job_submitted",
    "member_refused",
    "quota_refused",
    "render_finished",
    "serve",
    "undelivered_jobs",
    "watch_data_dir",
    "watch_gateway",
    "watch_queue_depth",
    "worker_job_ended",
]

# Seconds; from a quick 64 px render on a CPU to a 2048 px hires batch.
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
# Easel's own metrics, served at /metrics: every name starts with ``easel_`` (the contract), the
# process's CPU, memory and open files included, which prometheus-client's default registry
# would serve as ``process_*`` beside its ``python_*`` families.
METRICS_REGISTRY = CollectorRegistry()
ProcessCollector(namespace="easel", registry=METRICS_REGISTRY)

# Discord fails an interaction not answered within 3 s (by its clock): the buckets crowd
# below that.
ANSWER_DEADLINE_S = 3.0
_ACK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, ANSWER_DEADLINE_S, 5, 10)

JOBS = Counter(
    "easel_jobs",
    "Jobs that ended, by kind and outcome",
    ["kind", "outcome"],
    registry=METRICS_REGISTRY,
)
JOBS_SUBMITTED = Counter(
    "easel_jobs_submitted",
    "Jobs journaled and queued, by kind",
    ["kind"],
    registry=METRICS_REGISTRY,
)
QUOTA_REFUSALS = Counter(
    "easel_quota_refusals", "Requests a member's quota refused", registry=METRICS_REGISTRY
)
REFUSALS = Counter(
    "easel_refusals",
    "Refusals sent to members in a server, by reason (bot.user_errors.Reason)",
    ["reason"],
    registry=METRICS_REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "easel_queue_depth", "Jobs waiting for a render slot", registry=METRICS_REGISTRY
)
QUEUE_WAIT = Histogram(
    "easel_queue_wait_seconds",
    "From journaling a job to its render start",
    buckets=_DURATION_BUCKETS,
    registry=METRICS_REGISTRY,
)
RENDER_SECONDS = Histogram(
    "easel_render_seconds",
    "Wall time of one render call (a batch of jobs, or one job on a remote worker)",
    ["model", "device"],
    buckets=_DURATION_BUCKETS,
    registry=METRICS_REGISTRY,
)
ITERATIONS_PER_SECOND = Gauge(
    "easel_render_iterations_per_second",
    "Denoising steps run divided by render seconds, for the latest render that ran any "
    "(a remote worker's: on that worker)",
    ["model", "device"],
    registry=METRICS_REGISTRY,
)
DELIVERIES = Counter(
    "easel_deliveries",
    "Tries to post an ended job's outcome (its result, failure or why it is withheld), by "
    "outcome: delivered (in its channel, or to its maker alone), not_posted (ended posted "
    "nowhere: withheld or withdrawn, its message or channel deleted, its maker's direct "
    "messages closed), failed (to be tried again) or given_up (failed, no more tries: a "
    "result's job is failed and refunded, its failure posted instead)",
    ["outcome"],
    registry=METRICS_REGISTRY,
)
UNDELIVERED_JOBS = Gauge(
    "easel_undelivered_jobs",
    "Ended jobs whose outcome is not posted yet (failing deliveries, ends the journal refused "
    "kept in memory), as the delivery sweep last counted them",
    registry=METRICS_REGISTRY,
)
WORKER_JOBS = Counter(
    "easel_worker_jobs",
    "Jobs an `easel worker` process finished, by outcome",
    ["outcome"],
    registry=METRICS_REGISTRY,
)
DISCORD_API_ERRORS = Counter(
    "easel_discord_api_errors",
    "Discord API answers with an error status (429 included), or 'connection' when none came",
    ["status"],
    registry=METRICS_REGISTRY,
)
DISCORD_RATE_LIMITS = Counter(
    "easel_discord_rate_limits", "Discord API answers with status 429", registry=METRICS_REGISTRY
)
ACK_LATENCY = Histogram(
    "easel_ack_latency_seconds",
    "From an interaction's creation (its snowflake) to Easel's first answer to it",
    buckets=_ACK_BUCKETS,
    registry=METRICS_REGISTRY,
)
GATEWAY_DISCONNECTS = Counter(
    "easel_gateway_disconnects",
    "Drops of Discord's gateway connection (its failed reconnects not counted again)",
    registry=METRICS_REGISTRY,
)
HTTP_CONNECTIONS_REFUSED = Counter(
    "easel_http_connections_refused",
    "Connections an HTTP server (web or metrics) closed at once, over its cap per client or total",
    ["server", "cap"],
    registry=METRICS_REGISTRY,
)

log = logging.getLogger(__name__)

# The model label of a request that names none (the engine then uses EASEL_DEFAULT_MODEL).
DEFAULT_MODEL_LABEL = "default"
# The first answer to an interaction: POST /interactions/{id}/{token}/callback.
_INTERACTION_CALLBACK = re.compile(r"/interactions/(\d+)/[^/]+/callback$")


def job_submitted(kind: str) -> None:
    JOBS_SUBMITTED.labels(kind).inc()


def job_started(waited_s: float) -> None:
    QUEUE_WAIT.observe(max(0.0, waited_s))


def job_ended(kind: str, outcome: str) -> None:
    """``outcome``: done, failed or cancelled."""
    JOBS.labels(kind, outcome).inc()


def delivery_tried(outcome: str) -> None:
    """``outcome``: delivered, not_posted, failed or given_up (``DELIVERIES``)."""
    DELIVERIES.labels(outcome).inc()


def undelivered_jobs(count: int) -> None:
    UNDELIVERED_JOBS.set(count)


def worker_job_ended(outcome: str) -> None:
    WORKER_JOBS.labels(outcome).inc()


def quota_refused() -> None:
    QUOTA_REFUSALS.inc()


def member_refused(reason: str) -> None:
    REFUSALS.labels(reason).inc()


def render_finished(model: str | None, device: str, steps: int, seconds: float) -> None:
    labels = (model or DEFAULT_MODEL_LABEL, device)
    RENDER_SECONDS.labels(*labels).observe(seconds)
    if seconds > 0 and steps > 0:  # none: a fast upscale, or not known (a remote worker's)
        ITERATIONS_PER_SECOND.labels(*labels).set(steps / seconds)


def gateway_lost() -> None:
    GATEWAY_DISCONNECTS.inc()


def http_connection_refused(server: str, cap: Cap) -> None:
    HTTP_CONNECTIONS_REFUSED.labels(server, cap).inc()


def watch_queue_depth(queued_count: Callable[[], int]) -> None:
    """The queue depth gauge reads ``queued_count`` at each scrape (the newest queue wins)."""
    QUEUE_DEPTH.set_function(queued_count)


class _GpuMemory(Collector):
    """Memory torch holds on each CUDA device, read at scrape time. Torch is never imported
    for it: a process that has not loaded torch (or has no CUDA) reports nothing."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return
        family = GaugeMetricFamily(
            "easel_gpu_memory_bytes",
            "CUDA memory torch has allocated and reserved, by device",
            labels=["device", "kind"],
        )
        for index in range(torch.cuda.device_count()):
            device = f"cuda:{index}"
            family.add_metric([device, "allocated"], torch.cuda.memory_allocated(index))
            family.add_metric([device, "reserved"], torch.cuda.memory_reserved(index))
        yield family


METRICS_REGISTRY.register(_GpuMemory())


class _DataDirFree(Collector):
    """Free bytes on the disk holding EASEL_DATA_DIR (database and pictures), read at scrape
    time: retention bounds what is kept by days, not by size, so this is what to alert on."""

    def __init__(self) -> None:
        self.data_dir: Path | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.data_dir is None:
            return
        try:
            free = shutil.disk_usage(self.data_dir).free
        except OSError:
            return  # gone or unreadable: no number rather than a failed scrape
        yield GaugeMetricFamily(
            "easel_data_free_bytes",
            "Free bytes on the file system holding EASEL_DATA_DIR",
            value=free,
        )


_DATA_DIR_FREE = _DataDirFree()
METRICS_REGISTRY.register(_DATA_DIR_FREE)


def watch_data_dir(data_dir: Path) -> None:
    """Report the free space under ``data_dir`` at each scrape (the latest call wins)."""
    _DATA_DIR_FREE.data_dir = data_dir


class _GatewayConnected(Collector):
    """Whether the bot's Discord gateway connection is up, read at scrape time; nothing in a
    process without one (a worker), whose 0 would read as a bot cut off."""

    def __init__(self) -> None:
        self.is_up: Callable[[], bool] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.is_up is None:
            return
        yield GaugeMetricFamily(
            "easel_gateway_connected",
            "1 while Discord's gateway connection is up (from its READY or RESUMED to its "
            "drop), else 0",
            value=1 if self.is_up() else 0,
        )


_GATEWAY_CONNECTED = _GatewayConnected()
METRICS_REGISTRY.register(_GATEWAY_CONNECTED)


def watch_gateway(is_up: Callable[[], bool]) -> None:
    """Report ``is_up()`` as the gateway connection's gauge at each scrape (the latest call
    wins)."""
    _GATEWAY_CONNECTED.is_up = is_up


def _warn_clock_off(off_s: float) -> None:
    """The host's clock is ``off_s`` ahead of Discord's at least (behind, when negative),
    more than CLOCK_SLACK_S."""
    log.warning(
        "this host's clock is at least %.0f s %s Discord's (an interaction's id says when it "
        "was made), more than the %.0f s Easel allows for: %s; set the clock right (NTP)",
        abs(off_s),
        "ahead of" if off_s > 0 else "behind",
        CLOCK_SLACK_S,
        "the tokens of jobs restored by a restart count as ended early, and "
        "acknowledgement latencies read high"
        if off_s > 0
        else "a result deleted unheard in a gateway gap may be posted again, and "
        "acknowledgement latencies read 0",
    )


def discord_http_trace(
    answered: Callable[[int], None] | None = None, lost: Callable[[int], None] | None = None
) -> aiohttp.TraceConfig:
    """A trace for discord.py's HTTP session (``Client(http_trace=...)``): counts error
    answers and 429s, and times each interaction's first answer from its creation.
    ``answered`` is told the interaction's id once its first answer ended for good: taken,
    refused (a 4xx other than 429) or lost to the connection; ``lost``, each time one got no
    reply (a 5xx, or the connection dropped), which Discord may have acted on.
    An interaction made (by its id) more than ``CLOCK_SLACK_S`` after the host's clock says
    it is now is logged once as a warning: the host's clock is behind Discord's by more than
    Easel allows for (``bot.snowflakes``); so is one answered more than that past Discord's
    deadline (ANSWER_DEADLINE_S) by the host's clock, which Discord took: it is ahead."""
    clock_told = False

    async def on_request_end(
        _session: aiohttp.ClientSession,
        _context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        nonlocal clock_told
        status = params.response.status
        if status >= 400:
            DISCORD_API_ERRORS.labels(str(status)).inc()
        if status == 429:
            DISCORD_RATE_LIMITS.inc()
        callback = _INTERACTION_CALLBACK.search(params.url.path)
        if callback is None:
            return
        interaction_id = int(callback[1])
        if status < 400:
            latency_s = time.time() - made_at(interaction_id)
            ACK_LATENCY.observe(max(0.0, latency_s))
            ahead_s = latency_s - ANSWER_DEADLINE_S
            if not clock_told and (latency_s < -CLOCK_SLACK_S or ahead_s > CLOCK_SLACK_S):
                clock_told = True
                _warn_clock_off(latency_s if latency_s < 0 else ahead_s)
        if status >= 500 and lost is not None:
            lost(interaction_id)
        # discord.py tries a 5xx or a 429 again: only the last try is the answer.
        if answered is not None and status < 500 and status != 429:
            answered(interaction_id)

    async def on_request_exception(
        _session: aiohttp.ClientSession,
        _context: SimpleNamespace,
        params: aiohttp.TraceRequestExceptionParams,
    ) -> None:
        DISCORD_API_ERRORS.labels("connection").inc()
        callback = _INTERACTION_CALLBACK.search(params.url.path)
        if callback is None:
            return
        if lost is not None:
            lost(int(callback[1]))
        if answered is not None:
            answered(int(callback[1]))

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    trace.on_request_exception.append(on_request_exception)
    return trace


class MetricsServerError(Exception):
    """The metrics server cannot listen where EASEL_METRICS_ADDR says; the message says why."""


@dataclass
class MetricsServer:
    """A running metrics server; ``port`` is the one bound (useful when asked for port 0)."""

    runner: web.AppRunner
    host: str
    port: int

    async def close(self) -> None:
        await self.runner.cleanup()


async def serve(
    host: str,
    port: int,
    healthy: Callable[[], bool],
    trouble: Callable[[], str | None] = lambda: None,
) -> MetricsServer:
    """Serve ``/metrics`` (Prometheus text) and ``/healthz`` (200 while ``healthy()`` and no
    ``trouble()``, else 503 with that one line: a device lost) on ``host:port`` until closed."""

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(METRICS_REGISTRY))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def health(_: web.Request) -> web.Response:
        if (problem := trouble()) is not None:
            return web.Response(text=f"{problem}\n", status=503)
        ok = healthy()
        return web.Response(
            text="ok\n" if ok else "starting or stopping\n", status=200 if ok else 503
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", health)
    runner = quiet_runner(app)
    await runner.setup()
    try:
        counter = ConnectionCounter("metrics", METRICS_CONNECTION_CAPS, http_connection_refused)
        await CappedSite(runner, host, port, counter).start()
    except OSError as error:
        await runner.cleanup()
        raise MetricsServerError(
            f"EASEL_METRICS_ADDR={host}:{port}: cannot listen there ({error.strerror or error}); "
            "free the port or choose another"
        ) from None
    return MetricsServer(runner, host, runner.addresses[0][1])
