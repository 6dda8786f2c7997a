"""Prompt plans made ahead: while the device renders one batch, a CPU thread expands the
prompts of the batch expected next (wildcards, dynamic prompts, schedules, token chunks),
which takes tens of milliseconds per picture for a long web UI prompt. The device thread then
takes the plans instead of making them; a request nobody prepared is expanded as before."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from inference.limits import MAX_BATCH_IMAGES
from inference.passes.jobs import ImageJob
from inference.types import RenderRequest

Expand = Callable[[RenderRequest], list[ImageJob]]
# Requests kept prepared: two batches' worth, the one about to start (its plans may be taken
# after the next one is predicted) and the next; older guesses that did not come are dropped.
KEPT_REQUESTS = 2 * MAX_BATCH_IMAGES


class PreparedJobs:
    """The expanded jobs of the latest requests prepared, by request, each taken once."""

    def __init__(self, expand: Expand) -> None:
        self._expand = expand
        self._lock = threading.Lock()
        # Wildcard files and parse caches are shared: one expansion at a time.
        self._expanding = threading.Lock()
        self._ahead: OrderedDict[str, Future[list[ImageJob]]] = OrderedDict()

    def prepare(self, requests: Sequence[RenderRequest]) -> None:
        """Expand ``requests`` now, on the calling thread (not the device's). A request
        without a size is left alone: its size, and so its text, is settled at render time."""
        sized = [request for request in requests if request.width and request.height]
        with self._lock:  # a request still prepared from an earlier guess is not redone
            ahead = {
                key: (request, Future[list[ImageJob]]())
                for request in sized
                if (key := request.to_json()) not in self._ahead
            }
            for key, (_, future) in ahead.items():
                self._ahead[key] = future
            while len(self._ahead) > KEPT_REQUESTS:
                self._ahead.popitem(last=False)
        for request, future in ahead.values():
            if not future.set_running_or_notify_cancel():
                continue  # the device thread got there first and expands it itself
            try:
                with self._expanding:
                    future.set_result(self._expand(request))
            except Exception as error:  # the render raises it, as it would have
                future.set_exception(error)

    def jobs(self, request: RenderRequest) -> list[ImageJob]:
        """``request``'s jobs: prepared (waiting for them if they are being made) or
        expanded here."""
        with self._lock:
            future = self._ahead.pop(request.to_json(), None)
        if future is not None and not future.cancel():
            return future.result()
        with self._expanding:
            return self._expand(request)
