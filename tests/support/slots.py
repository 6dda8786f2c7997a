"""Render slots standing in for a broker's (``bot.jobs.broker.client.RemoteSlot``)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from bot.jobs.queue import SlotUnavailable
from inference.types import RenderedImage, RenderRequest, StepProgress
from inference.worker import DeviceWorker
from tests.support.engines import InstantEngine


class BrokerAwayAtFirst:
    """A broker's slot whose broker does not answer its first hand-over (``away`` is called
    then), and answers from then on once ``answering`` is set (set from the start when
    ``answering`` is True). It renders on ``engine``; ``hand_overs``: the jobs handed to it,
    in order."""

    def __init__(
        self,
        engine: InstantEngine,
        *,
        away: Callable[[], None] = lambda: None,
        answering: bool = True,
    ) -> None:
        self._worker = DeviceWorker("remote", lambda _: engine)
        self._away = away
        self.answering = asyncio.Event()
        if answering:
            self.answering.set()
        self.hand_overs: list[str] = []

    @property
    def device(self) -> str:
        return "remote"

    @property
    def brokered(self) -> bool:
        return True

    async def render(
        self,
        request: RenderRequest,
        progress: Callable[[StepProgress], None] | None = None,
        cancel: threading.Event | None = None,
        *,
        job_id: str,
    ) -> list[RenderedImage]:
        self.hand_overs.append(job_id)
        if len(self.hand_overs) == 1:
            self._away()
            raise SlotUnavailable("the broker does not answer", self._answers)
        return await self._worker.render(request, progress, cancel, job_id=job_id)

    async def _answers(self) -> bool:
        return self.answering.is_set()

    def close(self) -> None:
        self._worker.close()
