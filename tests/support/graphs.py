"""Stand-ins for CUDA graphs on the CPU, keeping their contract.

A graph replays the device work it recorded, not the Python that issued it: it reads the
input buffers and weights it was recorded with (by address, so new values in them count)
and writes its outputs into the recorded call's output tensors (fixed memory, which the
next replay overwrites); whatever Python decided while recording (a timestep passed as a
number, a convolution's padding mode, which attention processor ran) is frozen in it.

``FreezingRecorder`` keeps all of that: it traces the recorded call into aten operators
(``make_fx``), which hold the buffers and weights by reference and nothing of the Python
around them. ``RerunRecorder`` re-runs the Python at each replay (faster, but blind to
frozen state); both write into the recorded outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch._guards import TracingContext, tracing
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils._pytree import tree_flatten


class RerunRecorder:
    """Replays by running the recorded call again (Python included)."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.records = 0

    def record(self, run: Callable[[], Any]) -> tuple[Callable[[], None], Any]:
        self.records += 1
        outputs = run()
        return self._replay(outputs, lambda: tree_flatten(run())[0]), outputs

    @staticmethod
    def _replay(outputs: Any, fresh: Callable[[], list[Any]]) -> Callable[[], None]:
        def replay() -> None:
            for kept, new in zip(tree_flatten(outputs)[0], fresh(), strict=True):
                kept.copy_(new)

        return replay


class FreezingRecorder(RerunRecorder):
    """Replays the aten operators the recorded call ran, as a CUDA graph does."""

    def record(self, run: Callable[[], Any]) -> tuple[Callable[[], None], Any]:
        self.records += 1
        outputs = run()
        # make_fx notes each traced tensor's shape in a fake tensor, from the tracing
        # context's fake mode or else from a new one, whose making reads the whole call stack
        # (most of a recording's time, under pytest): one mode for the whole trace.
        with tracing(TracingContext(FakeTensorMode(allow_fallback_kernels=True))):
            traced = make_fx(lambda: tree_flatten(run())[0])()
        return self._replay(outputs, traced), outputs


class FailingRecorder(RerunRecorder):
    """Fails every recording with ``error``."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def record(self, run: Callable[[], Any]) -> tuple[Callable[[], None], Any]:
        self.records += 1
        raise self.error


class StaleRecorder(RerunRecorder):
    """A graph whose replays write something else than the eager call (a stale address)."""

    def record(self, run: Callable[[], Any]) -> tuple[Callable[[], None], Any]:
        replay, outputs = super().record(run)

        def wrong() -> None:
            replay()
            for tensor in tree_flatten(outputs)[0]:
                tensor.add_(1.0)

        return wrong, outputs
