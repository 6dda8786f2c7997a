"""``torch.compile`` for a loaded pipeline's UNet and VAE decoder, without a member ever waiting.

Each compiled part gets a *twin*: a copy of the module tree sharing the eager module's weight
tensors (no second copy of the weights), with fused QKV projections on SDPA attention. The
eager module's ``forward`` becomes a dispatcher:

- a call whose exact input signature (shapes, strides, dtypes, grad/inference mode, plain
  arguments) was compiled and warmed runs the compiled twin;
- any other call runs the eager module at once. When it is in a bucket (the model's native
  size, batch rows up to a bound), its signature is queued, with its batch-size variants, for
  a background thread that compiles and warms them on the twin. So the first job on a model
  starts the compile, and it and the jobs after it run eager until their shape is ready;
- while the eager tree does more than the twin (LoRA adapters loaded, which peft injects into
  the eager tree only; hooks such as the fast mode's cache), or other than it (``PythonSide``:
  seamless tiling's circular padding, an IP-Adapter's attention processors, set on the eager
  tree only), every call runs eager.

Why a background thread and a twin rather than warming up on the device thread between
jobs: one compile of an SD UNet takes from seconds (warm disk cache) to minutes
(max-autotune), and a job arriving meanwhile would wait for it. The twin's module tree is the
compile thread's alone: a LoRA loading on the device thread changes the eager tree only, and
nothing writes the shared weights in place. Dynamo's state is process-global, so the device
thread runs compiled code only while no compile is in flight (one lock, only ever tried: when
it is held the call runs eager) and under the ``fail_on_recompile`` stance: a guard that does
not match drops that signature to eager for good instead of compiling on the device thread.
``dynamic=False``: one graph per signature, never a recompilation storm.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import queue
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch._inductor.config as inductor_config
from diffusers.models.attention_processor import Attention, FusedAttnProcessor2_0
from torch.utils._pytree import tree_map_only

log = logging.getLogger(__name__)

# Batch rows warmed per bucket: 1-4 pictures, twice with classifier-free guidance (UNet); the
# VAE decodes one picture at a time (``passes.denoise.vae_decoding``), so its decoder one row.
UNET_ROWS = (2, 4, 6, 8)
DECODER_ROWS = (1,)
# Graphs kept per compiled code object: every bucket of a few cached models.
RECOMPILE_LIMIT = 64

# torch.compile modes that replay CUDA graphs (inductor's triton.cudagraphs).
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
# How the fail_on_recompile stance's error begins.
_RECOMPILE_REFUSED = "Detected recompile"
# A call's signature: what dynamo guards on (shapes, strides, dtypes, plain values).
CallKey = tuple[Any, ...]


def use_disk_cache(directory: Path) -> None:
    """Keep inductor's compiled artefacts (FX graphs, kernels, autotuning) under ``directory``,
    so a restart compiles from a warm cache. (Set even when torch already chose its default:
    inductor reads the variable at each look-up.)"""
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory.resolve())
    inductor_config.fx_graph_cache = True
    inductor_config.autotune_local_cache = True
    torch._dynamo.config.recompile_limit = max(
        torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT
    )


@dataclass(frozen=True)
class _TensorSpec:
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device
    inference: bool  # made under torch.inference_mode (dynamo guards on it)

    @classmethod
    def of(cls, tensor: torch.Tensor) -> _TensorSpec:
        shape, stride = tuple(tensor.shape), tuple(tensor.stride())
        return cls(shape, stride, tensor.dtype, tensor.device, tensor.is_inference())

    def with_rows(self, rows: int) -> _TensorSpec:
        """The same layout (contiguous or channels-last) with another first dimension."""
        old = torch.empty_strided(self.shape, self.stride, dtype=self.dtype, device="meta")
        shape = (rows, *self.shape[1:])
        channels_last = (
            old.dim() == 4
            and old.is_contiguous(memory_format=torch.channels_last)
            and not old.is_contiguous()
        )
        new = torch.empty(shape, dtype=self.dtype, device="meta")
        if channels_last:
            new = new.contiguous(memory_format=torch.channels_last)
        return dataclasses.replace(self, shape=shape, stride=tuple(new.stride()))

    def make(self) -> torch.Tensor:
        with torch.inference_mode(self.inference):
            tensor = torch.empty_strided(
                self.shape, self.stride, dtype=self.dtype, device=self.device
            )
            return tensor.normal_() if self.dtype.is_floating_point else tensor.zero_()


@dataclass(frozen=True)
class _DictSpec:
    items: tuple[tuple[str, Any], ...]


_PLAIN = (type(None), bool, int, float, str)


def _spec(value: Any) -> Any:
    """``value`` with tensors replaced by their specs; raises TypeError on anything else."""
    if isinstance(value, torch.Tensor):
        return _TensorSpec.of(value)
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (tuple, list)):
        return tuple(_spec(item) for item in value)
    if isinstance(value, dict):
        return _DictSpec(tuple(sorted((str(k), _spec(v)) for k, v in value.items())))
    raise TypeError(type(value).__name__)


def call_key(args: Sequence[Any], kwargs: dict[str, Any]) -> CallKey | None:
    """The key of one call, or None when an argument is of a kind we do not compile for.
    Grad and inference mode are part of it: dynamo guards on them too."""
    try:
        modes = (torch.is_grad_enabled(), torch.is_inference_mode_enabled())
        return (*modes, _spec(tuple(args)), _spec(kwargs))
    except TypeError:
        return None


def tensor_specs(key: Any) -> Iterable[_TensorSpec]:
    if isinstance(key, _TensorSpec):
        yield key
    elif isinstance(key, _DictSpec):
        yield from tensor_specs(key.items)
    elif isinstance(key, tuple):
        for item in key:
            yield from tensor_specs(item)


def _with_rows(key: Any, old_rows: int, rows: int) -> Any:
    """``key`` with every tensor of ``old_rows`` rows resized to ``rows`` rows."""
    if isinstance(key, _TensorSpec):
        return key.with_rows(rows) if key.shape[:1] == (old_rows,) else key
    if isinstance(key, _DictSpec):
        return _DictSpec(_with_rows(key.items, old_rows, rows))
    if isinstance(key, tuple):
        return tuple(_with_rows(item, old_rows, rows) for item in key)
    return key


def _rebuild(key: Any) -> Any:
    if isinstance(key, _TensorSpec):
        return key.make()
    if isinstance(key, _DictSpec):
        return {name: _rebuild(value) for name, value in key.items}
    if isinstance(key, tuple):
        return tuple(_rebuild(item) for item in key)
    return key


def _arguments(key: CallKey) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Fresh inputs matching ``key`` (random values: only the shapes matter for a compile)."""
    _, _, args_key, kwargs_key = key
    return _rebuild(args_key), _rebuild(kwargs_key)


@dataclass(frozen=True)
class Bucket:
    """The calls worth compiling: the first input's spatial size is native and its batch
    rows are at most ``max_rows``; ``rows`` are the batch sizes also warmed for each one seen."""

    spatial: tuple[int, int]
    max_rows: int
    rows: tuple[int, ...] = ()

    def holds(self, key: CallKey) -> bool:
        first = next(iter(tensor_specs(key)), None)
        return (
            first is not None
            and len(first.shape) == 4
            and first.shape[2:] == self.spatial
            and first.shape[0] <= self.max_rows
        )

    def variants(self, key: CallKey) -> list[CallKey]:
        first = next(iter(tensor_specs(key)))
        rows = first.shape[0]
        return [key, *(_with_rows(key, rows, r) for r in self.rows if r != rows)]


class Compiler:
    """One per engine: a background thread compiling queued shapes, one at a time."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        batch_variants: bool = True,
        mode: str | None = None,
    ) -> None:
        """``cache_dir``: inductor's on-disk cache. ``batch_variants=False`` warms only the
        shapes actually seen, not their other batch sizes (tests: fewer compiles). ``mode``:
        ``torch.compile``'s. The default (``None``) is inductor's default mode: on an H200 it
        compiled SD1.5's UNet and VAE decoder for one batch size in 79 s; max-autotune tunes
        each kernel on top (unmeasured). ``reduce-overhead`` (and ``max-autotune``) replay
        CUDA graphs: the compile thread's warm-up call is the graph's warm-up run, the device
        thread's first call of a shape records it, later calls replay it, all through one
        tree manager (the compile thread's) and never at once (the lock). A replay overwrites
        the last one's outputs, which samplers keep (DPM++ 2M, LMS, UniPC histories), so
        each output is cloned out of the graph's memory (docs/performance.md)."""
        use_disk_cache(cache_dir)
        self.mode = mode
        self.clones_outputs = mode in CUDA_GRAPH_MODES
        self.batch_variants = batch_variants
        # Held while a compile runs; the device thread only ever tries it (never waits).
        self.lock = threading.Lock()
        self._pending: queue.SimpleQueue[tuple[weakref.ref[CompiledModule], CallKey]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()

    def install(self, pipeline: Any) -> None:
        """Compile ``pipeline``'s UNet and VAE decoder for its native size (module docstring)."""
        size = int(pipeline.unet.config.sample_size)
        unet_rows, decoder_rows = (UNET_ROWS, DECODER_ROWS) if self.batch_variants else ((), ())
        self._install(pipeline.unet, Bucket((size, size), max(UNET_ROWS), unet_rows), pipeline.unet)
        decoder = Bucket((size, size), max(DECODER_ROWS), decoder_rows)
        self._install(pipeline.vae.decoder, decoder, pipeline.vae)

    def _install(self, module: torch.nn.Module, bucket: Bucket, model: torch.nn.Module) -> None:
        module.forward = CompiledModule(module, bucket, self, model)

    def enqueue(self, target: CompiledModule, keys: Iterable[CallKey]) -> None:
        for key in keys:
            self._pending.put((weakref.ref(target), key))
        with self._start_lock:
            self._idle.clear()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._compile_pending, name="easel-compile", daemon=True
                )
                self._thread.start()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every queued shape is compiled (for tests and benchmarks)."""
        return self._idle.wait(timeout)

    def _compile_pending(self) -> None:
        while True:
            try:
                target_ref, key = self._pending.get(timeout=1.0)
            except queue.Empty:
                with self._start_lock:
                    if self._pending.empty():
                        self._idle.set()
                        self._thread = None
                        return
                continue
            target = target_ref()
            if target is not None:
                target.warm(key)
            del target


class CompiledModule:
    """The dispatcher installed as an eager module's ``forward``."""

    def __init__(
        self,
        module: torch.nn.Module,
        bucket: Bucket,
        compiler: Compiler,
        model: torch.nn.Module,
    ) -> None:
        """``model`` is the model ``module`` belongs to (LoRA adapters load on it). Both are
        held weakly: ``module`` holds this dispatcher, and a cycle would keep an evicted
        model's weights in device memory until the next garbage collection."""
        self._eager_forward = type(module).forward
        self.bucket = bucket
        self.compiler = compiler
        self._module = weakref.ref(module)
        self._model = weakref.ref(model)
        self.twin = _fused_twin(module)
        self.compiled: Callable[..., Any] = torch.compile(
            self.twin, mode=compiler.mode, dynamic=False
        )
        self._python_side = PythonSide.of(module)
        self._as_installed = self._python_side.state()
        self.ready: set[CallKey] = set()
        self._seen: set[CallKey] = set()
        # How many calls ran compiled: what tests and the benchmark read.
        self.compiled_calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._altered():
            return self.eager(*args, **kwargs)
        key = call_key(args, kwargs)
        if key is None:
            return self.eager(*args, **kwargs)
        if key in self.ready and self.compiler.lock.acquire(blocking=False):
            try:
                # Never compile on the device thread: a guard we did not foresee fails the
                # call (before any work, nothing is changed), which then runs eager for good.
                with torch.compiler.set_stance("fail_on_recompile"):
                    result = self.compiled(*args, **kwargs)
                self.compiled_calls += 1
                if self.compiler.clones_outputs:
                    # Out of the CUDA graph's memory, which the next replay overwrites.
                    return tree_map_only(torch.Tensor, torch.clone, result)
                return result
            except RuntimeError as error:
                if not str(error).startswith(_RECOMPILE_REFUSED):
                    raise
                log.warning("compiled graph does not fit %s; those calls stay eager", key)
                self.ready.discard(key)
            finally:
                self.compiler.lock.release()
        if key not in self._seen and self.bucket.holds(key):
            variants = [k for k in self.bucket.variants(key) if k not in self._seen]
            self._seen.update(variants)
            self.compiler.enqueue(self, variants)
        return self.eager(*args, **kwargs)

    def eager(self, *args: Any, **kwargs: Any) -> Any:
        return self._eager_forward(self._module(), *args, **kwargs)

    def _altered(self) -> bool:
        """True while the eager tree does more than the twin, or otherwise: the twin is a copy
        made at install, so a padding mode or attention processor set on the eager tree since
        (seamless tiling, an IP-Adapter) is not in it."""
        module, model = self._module(), self._model()
        if module is None or model is None:
            return False
        return (
            runs_more_than_its_graph(module, model)
            or self._python_side.state() != self._as_installed
        )

    def warm(self, key: CallKey) -> None:
        """Compile and run the twin once for ``key`` (on the compile thread)."""
        grad, inference = key[:2]
        with self.compiler.lock, torch.inference_mode(inference), torch.set_grad_enabled(grad):
            try:
                args, kwargs = _arguments(key)
                self.compiled(*args, **kwargs)
            except Exception:  # a shape that fails to compile keeps running eager
                log.exception("compiling for %s failed; those calls stay eager", key)
                return
        self.ready.add(key)


def runs_more_than_its_graph(module: torch.nn.Module, model: torch.nn.Module | None = None) -> bool:
    """True while eager ``module`` does more than a graph made of it without extras: LoRA
    adapters loaded on ``model`` (default: the module itself), or hooks on the module (a
    fast mode's cache, accelerate's offload)."""
    adapters = bool(getattr(module if model is None else model, "peft_config", None))
    return adapters or bool(module._forward_pre_hooks or module._forward_hooks)


@dataclass
class PythonSide:
    """What a graph made of a module (a compiled twin, a CUDA graph) freezes of it besides its
    weights, all decided in Python: attention processors (an IP-Adapter swaps them),
    convolution padding (seamless tiling makes it circular), blocks with a forward or hooks of
    their own (fast mode's cache). A call whose module's ``state`` differs from the one it had
    when the graph was made runs eager."""

    attention: list[Attention]
    padded: list[torch.nn.Conv2d]
    blocks: list[torch.nn.Module]

    @classmethod
    def of(cls, module: torch.nn.Module) -> PythonSide:
        named = list(module.named_modules())[1:]
        parts = [part for _, part in named]
        return cls(
            attention=[m for m in parts if isinstance(m, Attention)],
            padded=[m for m in parts if isinstance(m, torch.nn.Conv2d) and m.padding != (0, 0)],
            # The module's parts and blocks (``down_blocks.0``), where fast mode's cache puts
            # forwards of its own; deeper parts are not looked at (a check on every call).
            blocks=[part for name, part in named if name.count(".") <= 1],
        )

    def state(self) -> tuple[Any, ...]:
        return (
            # Processors compare by identity: an IP-Adapter puts the UNet's own ones back.
            tuple(attention.processor for attention in self.attention),
            tuple(conv.padding_mode for conv in self.padded),
            tuple(
                "forward" in block.__dict__
                or bool(block._forward_hooks or block._forward_pre_hooks)
                for block in self.blocks
            ),
        )


def _fused_twin(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module``'s tree sharing its parameters and buffers, with fused QKV
    projections (one matmul instead of three) on the SDPA attention processor."""
    # Inference only. Dynamo guards on requires_grad, and loading a LoRA freezes the shared
    # weights: freezing them now keeps the compiled graphs valid after LoRA jobs.
    module.requires_grad_(False)
    shared = {id(t): t for t in (*module.parameters(), *module.buffers())}
    twin = copy.deepcopy(module, memo=shared)
    with torch.no_grad():
        for part in twin.modules():
            if isinstance(part, Attention):
                part.fuse_projections()
                # diffusers' annotation lists the processors but leaves the fused one out.
                part.set_processor(FusedAttnProcessor2_0())  # type: ignore[arg-type]
    return twin.requires_grad_(False)


def compiled_parts(pipeline: Any) -> list[CompiledModule]:
    """The dispatchers installed on ``pipeline`` (empty when it is not compiled)."""
    parts = (pipeline.unet, pipeline.vae.decoder)
    return [p.forward for p in parts if isinstance(p.__dict__.get("forward"), CompiledModule)]
