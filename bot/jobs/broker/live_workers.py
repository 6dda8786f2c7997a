"""Which models the live render workers have, from their heartbeats (``wire.WorkerModels``):
the bot refuses a job whose model none of them has had for a while, rather than leave it on
the broker for a day. Pure: the caller feeds heartbeats and asks, with its clock.

A job's model is *unserved* while at least one worker is live and none of the live ones lists
it (a worker whose engine lists nothing yet serves every model). While no worker is live at
all (all stopped, the broker away from the bot, a bot just started that heard none yet)
nothing is unserved: jobs wait for workers, as they always did. A job handed back by a worker
that lacks its model, or left by a worker that died with it, is so refused too: the broker's
counts cannot tell those from a job being rendered.

Heartbeats are not bound to a broker user (all workers publish on one subject): a worker's
user can still send beats under made-up names, within the caps below, claiming every model
(refusals held off: jobs wait, up to the stream's 24 h, as before the heartbeat), or filling
the places so that a worker started later is not heard (jobs for models only it has are
refused), or in a live worker's name if it learns it (its random part is in that worker's
results, which only the bot reads). None of it is more than such a user can already do to the
jobs it pulls (docs/distributed.md, "What stays open")."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.jobs.broker.wire import HEARTBEAT_RANGE_S, WorkerModels
from inference.names import as_typed

__all__ = [
    "LAPSED_AFTER_BEATS",
    "MAX_HEARTBEAT_BYTES",
    "MAX_LIVE_WORKERS",
    "MAX_WORKER_MODELS",
    "LiveWorkers",
]

log = logging.getLogger(__name__)

# A worker not heard for this many of its own heartbeat intervals is taken as gone.
LAPSED_AFTER_BEATS = 3
# Any worker's broker user may publish heartbeats under any name: the bot keeps at most this
# many workers, each naming at most this many models in a beat of at most this many bytes (a
# fleet far larger than Easel's), so made-up beats cannot fill its memory (about 40 MiB at
# most); beats past any of them are dropped, with a warning.
MAX_LIVE_WORKERS = 128
MAX_WORKER_MODELS = 1024
MAX_HEARTBEAT_BYTES = 256 * 1024


@dataclass
class _Heard:
    models: frozenset[str] | None
    lapses_at: float


class LiveWorkers:
    def __init__(self) -> None:
        self._workers: dict[str, _Heard] = {}
        # Since when each model asked about was unserved, without a break seen.
        self._unserved_since: dict[str, float] = {}
        # When the first beat was heard (None: none yet), and whether a dropped beat was said
        # since the last one kept.
        self._hearing_since: float | None = None
        self._told_dropped = False
        # The workers a result came from though they were not heard (``unheard``), each said
        # once.
        self._told_unheard: set[str] = set()

    def heard(self, data: bytes, now: float) -> None:
        """A heartbeat as it came (``WorkerModels``), kept unless malformed or past the caps."""
        self._lapse(now)
        if len(data) > MAX_HEARTBEAT_BYTES:
            self._drop(f"it is {len(data)} bytes long")
            return
        try:
            beat = WorkerModels.decode(data)
        except ValueError as error:
            self._drop(str(error))
            return
        if beat.models is not None and len(beat.models) > MAX_WORKER_MODELS:
            self._drop(f"worker {beat.worker[:100]!r} names {len(beat.models)} models")
            return
        if beat.worker not in self._workers and len(self._workers) >= MAX_LIVE_WORKERS:
            self._drop(f"{MAX_LIVE_WORKERS} workers are live already")
            return
        self._told_dropped = False
        if self._hearing_since is None:
            self._hearing_since = now
        self._workers[beat.worker] = _Heard(beat.models, now + LAPSED_AFTER_BEATS * beat.every_s)

    def unheard(self, worker: str, now: float) -> bool:
        """Whether a result from ``worker`` came though the bot does not hear its heartbeat
        while it hears others' (a worker older than the bot, or whose broker user lacks the
        right to send it), said once a worker: the bot refuses jobs for models only such a
        worker has. Not within the longest heartbeat interval of the first beat heard: a bot
        just started may not have heard each worker yet."""
        self._lapse(now)
        listening = self._hearing_since is not None and now - self._hearing_since >= max(
            HEARTBEAT_RANGE_S
        )
        if not listening or not self._workers or worker in self._workers:
            return False
        if worker in self._told_unheard or len(self._told_unheard) >= MAX_LIVE_WORKERS:
            return False
        self._told_unheard.add(worker)
        return True

    def unserved_for(self, model: str | None, now: float) -> float:
        """How long ``model`` (None: the workers' default, always served) has been unserved,
        as seen at the calls that asked; 0 while it is served."""
        self._lapse(now)
        if model is None:
            return 0.0
        model = as_typed(model)
        live = self._workers.values()
        if not live or any(w.models is None or model in w.models for w in live):
            self._unserved_since.pop(model, None)
            return 0.0
        return now - self._unserved_since.setdefault(model, now)

    def _lapse(self, now: float) -> None:
        self._workers = {name: w for name, w in self._workers.items() if w.lapses_at > now}

    def _drop(self, why: str) -> None:
        if not self._told_dropped:
            self._told_dropped = True
            log.warning(
                "a worker's heartbeat dropped: %s (at most %d workers of %d models each are "
                "kept, in beats of %d bytes; any worker's broker user may send them: check who "
                "publishes on the broker); said again once one is kept",
                why,
                MAX_LIVE_WORKERS,
                MAX_WORKER_MODELS,
                MAX_HEARTBEAT_BYTES,
            )
