"""What the queue renders on (a local device, a broker's workers) and what such a slot may
raise or keep outside the bot."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Protocol, runtime_checkable

from inference.types import RenderCancelled, RenderedImage, RenderRequest, StepProgress


class RenderSlot(Protocol):
    """Somewhere one render runs at a time: a local device thread, or a remote worker."""

    @property
    def device(self) -> str: ...

    async def render(
        self,
        request: RenderRequest,
        progress: Callable[[StepProgress], None] | None = None,
        cancel: threading.Event | None = None,
        *,
        job_id: str,
    ) -> list[RenderedImage]: ...

    def close(self) -> None: ...


@runtime_checkable
class BatchRenderSlot(RenderSlot, Protocol):
    """A slot that can render several compatible requests in one call (a local device)."""

    max_batch: int

    async def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: Callable[[StepProgress], None] | None = None,
        cancel: threading.Event | None = None,
        *,
        job_ids: Sequence[str],
    ) -> list[list[RenderedImage]]: ...


@runtime_checkable
class BrokeredSlot(RenderSlot, Protocol):
    """A slot that hands its job to a broker's workers (``bot.jobs.broker``). The job is
    running from then on, waiting in the broker's stream as well as rendering, and the broker
    caps the deliveries of one that takes its workers down: a stop of this process is no
    render attempt of it."""

    @property
    def brokered(self) -> bool: ...


@runtime_checkable
class PreparingSlot(RenderSlot, Protocol):
    """A slot that can do a batch's CPU work (prompt expansion) ahead, while it renders."""

    def prepare(self, requests: Sequence[RenderRequest]) -> None: ...


@runtime_checkable
class ProbingSlot(RenderSlot, Protocol):
    """A slot that can say whether its device still computes (a local device): what a tiny
    computation there raised, or None (``DeviceWorker.probe``)."""

    async def probe(self) -> Exception | None: ...


@runtime_checkable
class WarmingSlot(RenderSlot, Protocol):
    """A slot that can load a model ahead of the first job (a local device): ``model``,
    or its default (None)."""

    def warm_up(self, model: str | None = None) -> None: ...


class JobCopies(Protocol):
    """Where a transport keeps copies of jobs outside the bot (a broker: their requests,
    results and pictures): dropped once a job's outcome is recorded, and by /forget-me. The
    in-process transport keeps none, so it has none of these. Each raises when the broker
    cannot be reached: what is left expires on its own, after ``kept_s`` seconds (a settle
    owed is tried again meanwhile: ``bot.jobs.queue.broker_chores``)."""

    kept_s: float

    async def settle(self, job_id: str, outcome: str) -> None:
        """The job ended ("done", "failed" or "cancelled"): only a marker of it is kept (a
        cancelled one is not rendered by a worker handed it later)."""
        ...

    async def drop_job_messages(self, job_ids: Collection[str]) -> None:
        """The messages of these settled cancelled jobs leave the broker's queue (its cost
        grows with the jobs in it: asked once for many)."""
        ...

    async def reachable(self) -> bool:
        """Whether the broker answers now."""
        ...

    async def drop_copies(self, job_ids: Sequence[str]) -> None:
        """/forget-me: whatever is left of these jobs goes."""
        ...


class RenderStoppedAfter(RenderCancelled):
    """A render cancelled, with the device seconds its slot measured itself: a remote slot
    counts from its worker's first report, so a job stopped while it still waited for a worker
    used none (the broker's wait is not GPU time)."""

    def __init__(self, used_s: float) -> None:
        super().__init__(f"cancelled after {used_s:.1f} s on a device")
        self.used_s = used_s


class MeasuredImages(list[RenderedImage]):
    """A render's pictures, with the device seconds its slot measured itself: a remote slot's
    worker reports its render's, so the broker's wait is not charged as GPU time. The queue
    charges them, kept within its own wall-clock measure (a worker cannot have rendered longer
    than the bot waited); a slot returning a plain list is charged that measure."""

    def __init__(self, images: Iterable[RenderedImage], used_s: float) -> None:
        super().__init__(images)
        self.used_s = used_s


class SlotUnavailable(Exception):
    """A slot could not hand its job over to where it renders, or fetch what it rendered
    there (its broker did not answer): the job did not start, or its result waits there for
    the next start to fetch (it is not rendered again). The queue puts it back in its place,
    its attempt given back, and starts no job on any slot until ``probe`` (asked with
    backoff) says the slot answers."""

    def __init__(self, reason: str, probe: Callable[[], Awaitable[bool]]) -> None:
        super().__init__(reason)
        self.probe = probe
