"""CUDA graphs of each model's UNet: one recorded launch per step instead of ~1,700 kernels.

Why: at batch 1 an eager SD1.5 step on an H200 is bound by the host, which launches about
1,700 kernels per UNet call while the device finishes them sooner (docs/performance.md).
A CUDA graph records those launches once and replays them with one call. Unlike
``torch.compile`` (``inference.compile``) nothing is compiled: recording a shape costs about
three UNet calls of device time, spread over its second and third calls.

The UNet's ``forward`` becomes a ``GraphedForward``. A call can be replayed when:

- its arguments are tensors and plain values (the compile module's ``call_key``; plain
  values are part of the key, since a graph keeps the ones it was recorded with), and it
  asks for a tuple (``return_dict=False``, as ``ScheduledUNet`` does);
- its shape is one worth the memory a graph keeps: at most ``max_rows`` batch rows and
  about the model's native pixel count (any aspect ratio), not a hires pass's;
- the UNet does what it did when installed. A graph replays kernels, not Python, so what
  the Python side decides is frozen in it: no LoRA adapters (peft), no hooks, the same
  attention processors (an IP-Adapter swaps them), the same convolution padding (seamless
  tiling makes it circular), no block with a forward or hooks of its own (fast mode's
  cache), and the weights where they were. (Hooks deeper than the blocks, such as
  ``down_blocks.0.resnets.1``, are not looked for: nothing in Easel puts any there.) Such
  calls run eager; weights in new storage drop every graph.

A key's first call runs eager. Its second runs eager too, then is recorded on input buffers
of the graph's own (after one warm-up call on the recording stream). Its third runs eager
and replays the graph on its new inputs: the graph is kept only if the two agree, so a
value frozen at the second call (a timestep, a setting) shows. Later calls copy their
tensors into the buffers, replay, and return clones of the graph's outputs (the next replay
overwrites them, and a sampler may keep an output across steps). At most ``MAX_GRAPHS``
keys per UNet, least recently replayed dropped first, all in one memory pool: they replay
one at a time, on the device thread, and their outputs are cloned at once: that is what
makes sharing the pool safe, since a recording may place its temporaries or outputs where
another graph's were. Each recording allocates its cuBLAS workspace inside that pool rather
than reusing its stream's (destroying a graph frees its stream's, pytorch#193402; the clear
is process-wide, as inductor's is, so other threads' next matmuls make new ones).

Devices share one thing: ``torch.cuda.empty_cache`` empties every device's cache and fails
on a device that is recording, so once a recorder exists every call of it (diffusers makes
one at each model load) takes turns with recordings (``DEVICE_MEMORY_LOCK``).

Failures: a key whose replay differs, or that cannot be recorded, stays eager; running out
of memory while recording leaves the UNet eager. A failure of the capture itself may leave
torch's allocator mid-capture for good (``RecordingBroke``): no graph is recorded in this
process any more and ``torch.cuda.empty_cache`` does nothing (it would fail); eager
rendering goes on, and the log says to restart.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch.utils._pytree import TreeSpec, tree_flatten, tree_unflatten

from inference.compile import (
    UNET_ROWS,
    CallKey,
    PythonSide,
    call_key,
    runs_more_than_its_graph,
    tensor_specs,
)

log = logging.getLogger(__name__)

# Keys kept per UNet: a few batch sizes x aspect ratios x prompt lengths.
MAX_GRAPHS = 16
# Batch rows a recorded call may have: a 2x2 grid with classifier-free guidance.
MAX_ROWS = max(UNET_ROWS)
# Latent pixels a recorded call may have, over the model's native square's: the web UI's
# aspect ratios at native size (SDXL's 1344x768 is 0.98 of 1024x1024), not a hires pass.
MAX_AREA_RATIO = 1.25
# How far a replay may stray from the eager call of the same inputs. The same kernels on the
# same inputs give the same values; neighbouring steps' predictions differ by about 1e-2.
REPLAY_TOLERANCE = 1e-3
# torch.cuda.empty_cache empties every device's cache and fails on a device that is
# recording, so recordings and emptyings take turns, process-wide (re-entrant: torch's
# recording empties the cache itself, under this lock).
DEVICE_MEMORY_LOCK = threading.RLock()
# Set once a recording failed inside a capture (module docstring).
_recordings_broke = threading.Event()


class Recorder(Protocol):
    """What records a call's device work and replays it (CUDA graphs; tests stand in)."""

    def record(self, run: Callable[[], Any]) -> tuple[Callable[[], None], Any]:
        """Record ``run``; returns the replay and the recorded call's outputs, which every
        replay writes again. Raises ``RecordingBroke`` for a failure of the capture itself;
        what ``run`` raises (out of memory) comes through as it is."""
        ...


RecorderFactory = Callable[[torch.device], Recorder]


class RecordingBroke(RuntimeError):
    """A capture failed: the device's allocator may be left mid-capture."""


def empty_device_cache(device: str | torch.device) -> None:
    """``torch.cuda.empty_cache`` when ``device`` is a CUDA device (once a recorder exists,
    taking turns with recordings: ``_guard_cache_emptying``)."""
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()


def _cache_emptying_in_turn(empty_cache: Callable[[], None]) -> Callable[[], None]:
    def in_turn() -> None:
        with DEVICE_MEMORY_LOCK:
            # Re-entrant: not from inside this thread's own capture (a finalizer, a hook).
            if not _recordings_broke.is_set() and not torch.cuda.is_current_stream_capturing():
                empty_cache()

    in_turn.__wrapped__ = empty_cache  # type: ignore[attr-defined]
    return in_turn


def _guard_cache_emptying() -> None:
    """Make every ``torch.cuda.empty_cache`` take turns with recordings, not only Easel's:
    diffusers empties the cache at each model load and IP-Adapter load (some 70 places),
    and one of those on another device's thread during a recording would fail."""
    if not hasattr(torch.cuda.empty_cache, "__wrapped__"):
        torch.cuda.empty_cache = _cache_emptying_in_turn(torch.cuda.empty_cache)


class CudaGraphRecorder:
    """``torch.cuda.CUDAGraph`` recordings on one device, sharing one memory pool."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        _guard_cache_emptying()
        with torch.cuda.device(device):
            self._pool = torch.cuda.graph_pool_handle()
            # A stream of this device's own: torch's default recording stream is made once,
            # on whichever device records first.
            self._stream = torch.cuda.Stream(device)

    def record(self, run: Callable[[], Any]) -> tuple[Callable[[], None], Any]:
        graph = torch.cuda.CUDAGraph()
        ambient = torch.cuda.current_stream(self.device)
        failed: Exception | None = None
        # The ambient stream comes back even when ending a capture raises (torch then skips
        # putting it back itself).
        with torch.cuda.device(self.device), torch.cuda.stream(ambient):
            # One call on the recording stream first, as torch's guide does: lazy per-stream
            # set-up (cuBLAS handles) happens outside the recording.
            self._stream.wait_stream(ambient)
            with torch.cuda.stream(self._stream):
                run()
            ambient.wait_stream(self._stream)
            with DEVICE_MEMORY_LOCK:
                if _recordings_broke.is_set():
                    raise RuntimeError("CUDA graph recordings stopped after a broken one")
                # cuBLAS keeps one scratch workspace per stream, and destroying a graph frees
                # its stream's (pytorch#193402): cleared before and after, each recording
                # allocates one inside the graphs' pool instead, which no destruction frees.
                torch._C._cuda_clearCublasWorkspaces()
                try:
                    # thread_local: the other threads (PNG encoding, previews, another
                    # device's worker) keep using CUDA while this one records.
                    with torch.cuda.graph(
                        graph,
                        pool=self._pool,
                        stream=self._stream,
                        capture_error_mode="thread_local",
                    ):
                        try:
                            outputs = run()
                        except Exception as error:  # the capture itself ends cleanly
                            failed = error
                except Exception as error:
                    if "out of memory" in str(error):  # e.g. instantiating: nothing half-done
                        raise torch.OutOfMemoryError(str(error)) from error
                    _recordings_broke.set()
                    cause = error if failed is None else failed
                    raise RecordingBroke(f"recording on {self.device} failed: {cause!r}") from cause
                torch._C._cuda_clearCublasWorkspaces()
        if failed is not None:
            raise failed
        return graph.replay, outputs


@dataclass
class _Graph:
    """One recorded key: its input buffers (in the call's tensor order), replay, outputs."""

    spec: TreeSpec  # the call's argument structure: its tensors go to these buffers in order
    buffers: list[torch.Tensor]
    replay: Callable[[], None]
    outputs: Any

    def run(self, tensors: Sequence[torch.Tensor]) -> Any:
        for buffer, tensor in zip(self.buffers, tensors, strict=True):
            buffer.copy_(tensor)
        self.replay()
        leaves, spec = tree_flatten(self.outputs)
        cloned = [leaf.clone() if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves]
        return tree_unflatten(cloned, spec)


def _agree(replayed: Any, reference: Any) -> bool:
    got, _ = tree_flatten(replayed)
    want, _ = tree_flatten(reference)
    return len(got) == len(want) and all(
        torch.allclose(
            a.float(), b.float(), rtol=REPLAY_TOLERANCE, atol=REPLAY_TOLERANCE, equal_nan=True
        )
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
        else a == b
        for a, b in zip(got, want, strict=True)
    )


def _weight_addresses(module: torch.nn.Module) -> tuple[int, ...]:
    return tuple(p.data_ptr() for p in (*module.parameters(), *module.buffers()))


class GraphedForward:
    """The dispatcher installed as a UNet's ``forward`` (module docstring)."""

    def __init__(
        self, module: torch.nn.Module, recorder: Recorder, *, max_rows: int, max_area: int
    ) -> None:
        """``module`` is held weakly: it holds this dispatcher, and a cycle would keep an
        evicted model's weights (and its graphs' memory) until the next garbage collection.
        Calls of at most ``max_rows`` batch rows and ``max_area`` latent pixels are recorded."""
        self._eager_forward = type(module).forward
        self._module = weakref.ref(module)
        self.recorder = recorder
        self.max_rows, self.max_area = max_rows, max_area
        self._python_side = PythonSide.of(module)
        self._as_installed = self._python_side.state()
        self._weights = _weight_addresses(module)
        self._first_weight = self._weights[0] if self._weights else 0
        self._graphs: OrderedDict[CallKey, _Graph] = OrderedDict()
        self._unverified: dict[CallKey, _Graph] = {}
        self._seen: set[CallKey] = set()
        self._refused: set[CallKey] = set()
        # False once memory ran out before a recording: the UNet then stays eager.
        self.may_record = True
        self._was_altered = False
        # What tests and benchmarks read: calls, how many replayed a graph, graphs recorded.
        self.calls = 0
        self.replays = 0
        self.recordings = 0

    @property
    def graphs(self) -> int:
        return len(self._graphs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        module = self._live_module()
        if kwargs.get("return_dict", True) is not False:
            return self.eager(*args, **kwargs)
        if runs_more_than_its_graph(module) or self._python_side.state() != self._as_installed:
            self._was_altered = True
            return self.eager(*args, **kwargs)
        if self._weights_moved(module):
            self.drop()
        key = call_key(args, kwargs)
        if key is None:
            return self.eager(*args, **kwargs)
        leaves, spec = tree_flatten((args, kwargs))
        tensors = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]
        # A recorded key was worth a graph; the limits are checked for the others only.
        graph = self._graphs.get(key)
        if graph is not None and graph.spec == spec:
            self._graphs.move_to_end(key)
            self.replays += 1
            return graph.run(tensors)
        if key in self._refused or not self._worth_a_graph(key):
            return self.eager(*args, **kwargs)
        reference = self.eager(*args, **kwargs)
        unverified = self._unverified.pop(key, None)
        if unverified is not None and unverified.spec == spec:
            self._verify(key, unverified, tensors, reference)
        elif key not in self._seen:
            self._seen.add(key)
        elif self.may_record and not _recordings_broke.is_set():
            self._record(key, leaves, spec)
        return reference

    def eager(self, *args: Any, **kwargs: Any) -> Any:
        return self._eager_forward(self._live_module(), *args, **kwargs)

    def drop(self) -> None:
        """Forget every graph; keys are recorded again as they come."""
        self._graphs.clear()
        self._unverified.clear()
        self._seen.clear()

    @property
    def holds_graphs(self) -> bool:
        return bool(self._graphs or self._unverified)

    def give_up(self) -> None:
        """Drop every graph and record no more (the device is short of memory)."""
        self.may_record = False
        self.drop()

    def _live_module(self) -> torch.nn.Module:
        module = self._module()
        if module is None:  # only its own module calls a dispatcher
            raise RuntimeError("the UNet this dispatcher was installed on is gone")
        return module

    def _worth_a_graph(self, key: CallKey) -> bool:
        """Within the limits, and every tensor on the UNet's device: a graph can hold no
        copy from another device, and a capture that fails on one stops every recording."""
        specs = list(tensor_specs(key))
        if not specs or len(specs[0].shape) != 4:
            return False
        rows, _, height, width = specs[0].shape
        device = self._device()
        return (
            rows <= self.max_rows
            and height * width <= self.max_area
            and all(spec.device == device for spec in specs)
        )

    def _record(self, key: CallKey, leaves: list[Any], spec: TreeSpec) -> None:
        slots = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]
        try:
            buffers = [
                torch.empty_like(leaves[i], memory_format=torch.preserve_format).copy_(leaves[i])
                for i in slots
            ]

            def run() -> Any:
                filled = list(leaves)
                for slot, buffer in zip(slots, buffers, strict=True):
                    filled[slot] = buffer
                graph_args, graph_kwargs = tree_unflatten(filled, spec)
                return self.eager(*graph_args, **graph_kwargs)

            replay, outputs = self.recorder.record(run)
        except RecordingBroke:
            _recordings_broke.set()
            self.drop()
            log.error(
                "recording a CUDA graph of the UNet failed inside the capture, which may leave "
                "torch's memory allocator mid-capture: no more graphs are recorded and device "
                "caches are no longer emptied in this process (renders go on eager). Restart "
                "Easel; if it happens again, set EASEL_CUDA_GRAPHS=false",
                exc_info=True,
            )
            return
        except torch.OutOfMemoryError:
            log.warning("out of memory recording a UNet graph: the UNet runs eager from now on")
            self.give_up()
        except Exception:  # a call a graph cannot hold stays eager; the render goes on
            log.warning("recording a UNet graph for %s failed; it stays eager", key, exc_info=True)
            self._refused.add(key)
            return
        else:
            self._unverified[key] = _Graph(spec, buffers, replay, outputs)
            if len(self._unverified) > MAX_GRAPHS:  # keys recorded and never called again
                del self._unverified[next(iter(self._unverified))]
            self.recordings += 1
            return
        # Out of the handler, whose traceback held the failed recording's memory.
        empty_device_cache(self._device())

    def _verify(
        self, key: CallKey, graph: _Graph, tensors: list[torch.Tensor], reference: Any
    ) -> None:
        """Keep ``graph`` if its replay on this call's new inputs agrees with the eager call."""
        if not _agree(graph.run(tensors), reference):
            log.warning("a UNet graph's replay differs from eager for %s; it stays eager", key)
            self._refused.add(key)
            return
        self._graphs[key] = graph
        if len(self._graphs) > MAX_GRAPHS:
            self._graphs.popitem(last=False)

    def _device(self) -> torch.device:
        first = next(self._live_module().parameters(), None)
        return torch.device("cpu") if first is None else first.device

    def _weights_moved(self, module: torch.nn.Module) -> bool:
        """Whether any weight lives elsewhere than when the graphs were recorded. The first
        one is looked at on every call (a move to another device moves it); all of them after
        a call that ran eager for adapters or hooks (a LoRA job's end puts weights back)."""
        first = next(module.parameters(), None)
        moved = first is not None and first.data_ptr() != self._first_weight
        if not moved and not self._was_altered:
            return False
        self._was_altered = False
        weights = _weight_addresses(module)
        if weights == self._weights:
            return False
        self._weights, self._first_weight = weights, weights[0] if weights else 0
        return True


def _quantized(module: torch.nn.Module) -> bool:
    """Weights of a tensor subclass (torchao, GGUF): their kernels and addresses are not
    plain tensors', and recording them is untried."""
    return any(type(p.data) is not torch.Tensor for p in module.parameters())


def install_graphs(pipeline: Any, recorders: RecorderFactory) -> bool:
    """Replay ``pipeline``'s UNet from CUDA graphs (module docstring); False (nothing
    installed) when its weights are quantized."""
    unet = pipeline.unet
    if _quantized(unet):
        return False
    size = unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else size
    unet.forward = GraphedForward(
        unet,
        recorders(unet.device),
        max_rows=MAX_ROWS,
        max_area=int(MAX_AREA_RATIO * height * width),
    )
    return True


def graphed_unet(pipeline: Any) -> GraphedForward | None:
    """The dispatcher installed on ``pipeline``'s UNet, if any."""
    unet = getattr(pipeline, "unet", None)
    forward = None if unet is None else unet.__dict__.get("forward")
    return forward if isinstance(forward, GraphedForward) else None
