"""Where a sampling step's time goes: Easel's engine against a plain diffusers pipeline, on the
same weights, with the same sampler.

Each side renders the same request with ``--steps`` and with ``--steps + --extra`` sampling
steps; the difference over ``--extra`` is one step's share, without prompt encoding, VAE
decode or PNG encoding. Two kinds of figures (``--what``):

- ``timing`` (the first ``--sampler`` only): under ``torch.profiler``, the host time per step,
  the aten operators and device kernels per step, the device time per step, and the operators
  and kernels whose count or time differs most between the two sides;
- ``counts`` (every ``--sampler``), device-independent, so the CPU finds what a GPU would pay:
  aten operators per step by name (a ``TorchDispatchMode``); on CUDA every call that
  synchronised (torch's sync debug mode), and on any device the operators that make a CUDA host
  wait for the device (``_local_scalar_dense`` behind ``.item()``/``bool()``, ``nonzero``,
  boolean indexing, ...) and Python calls that read a value back (``.item()``, ``.tolist()``,
  ``.numpy()``) by call site; tensors born on the host (a factory call without ``device=``,
  ``torch.tensor`` of Python data, a list used as an index) and ``.to(device)`` calls, by call
  site, and on CUDA the copies from host to device that really ran; Python function calls per
  step (``cProfile``), and calls per attention processor class.

    python benchmarks/step_profile.py --device cuda --family sd15      # full-size, random weights
    python benchmarks/step_profile.py --device cpu --family sd15 --size 64 --steps 2 --extra 2 \
        --what counts --models-dir /tmp/sd15-random       # the same counts on a CPU
    python benchmarks/step_profile.py --device cpu --what counts --count 4  # a 2x2 grid, tiny
    python benchmarks/step_profile.py --device cpu                     # tiny model (smoke run)

Prints JSON.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import inspect
import json
import pstats
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import diffusers.models.attention_processor
import torch
from torch.overrides import TorchFunctionMode
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import inference.ip_adapter
from benchmarks.sides import PROMPT, easel_and_plain, use_sampler
from benchmarks.timing import synchronize
from inference.tiny import write_tiny_model
from inference.types import RenderRequest

SAMPLERS = ["Euler a", "DPM++ 2M Karras"]
TOP = 12
Render = Callable[[int], None]

# aten operators whose CUDA kernels hand a value back to the host, which waits for the device.
SYNCING_OPERATORS = {
    "_local_scalar_dense",  # .item(), bool(), int(), float() of a tensor
    "nonzero",
    "is_nonzero",
    "masked_select",
    "equal",
    "unique",
    "_unique",
    "_unique2",
    "unique_consecutive",
    "repeat_interleave",
    "bincount",
    "histc",
}
INDEXING_OPERATORS = {"index", "index_put", "index_put_", "_index_put_impl_"}
# Tensor methods that read values into Python (on CUDA: a copy to the host, waiting for it).
READ_BACKS = {"item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__"}
# torch functions that make a tensor; without device= it is born on the host.
FACTORIES = {
    "tensor",
    "as_tensor",
    "from_numpy",
    "zeros",
    "ones",
    "empty",
    "full",
    "arange",
    "linspace",
    "randn",
    "rand",
    "randint",
    "scalar_tensor",
}
_TORCH_DIR = str(Path(torch.__file__).parent)


def call_site() -> str:
    """``folder/file.py:line`` of the innermost caller outside torch and this script."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and (
        frame.f_code.co_filename.startswith(_TORCH_DIR) or frame.f_code.co_filename == __file__
    ):
        frame = frame.f_back
    if frame is None:
        return "?"
    path = Path(frame.f_code.co_filename)
    return f"{path.parent.name}/{path.name}:{frame.f_lineno}"


def _tensors(values: Iterable[Any]) -> Iterable[torch.Tensor]:
    for value in values:
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from _tensors(value)


class OperatorCounter(TorchDispatchMode):
    """Every aten operator by name; the ones that make a CUDA host wait, and the copies from
    host to another device that really ran, by call site."""

    def __init__(self) -> None:
        super().__init__()
        self.operators: collections.Counter[str] = collections.Counter()
        self.syncs: collections.Counter[str] = collections.Counter()
        self.host_to_device: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func._can_decompose():
            # Under torch.inference_mode (Easel) a mode sees composite operators (linear,
            # conv2d, group_norm) that autograd decomposes before it under no_grad (diffusers'
            # own __call__): counting their parts keeps the two sides comparable.
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        name = func.overloadpacket.__name__
        self.operators[f"aten::{name}"] += 1
        boolean_index = name in INDEXING_OPERATORS and any(
            t.dtype == torch.bool for t in _tensors(args[1:2])
        )
        if name in SYNCING_OPERATORS or boolean_index:
            self.syncs[f"{name} @ {call_site()}"] += 1
        result = func(*args, **kwargs)
        if name in ("_to_copy", "copy_"):
            source, target = (args[1], args[0]) if name == "copy_" else (args[0], result)
            if source.device.type == "cpu" and target.device.type != "cpu":
                self.host_to_device[f"{name} @ {call_site()}"] += 1
        return result


class HostCalls(TorchFunctionMode):
    """Python-level calls that, on CUDA, copy to the device or read back, by call site:
    tensors born on the host, ``.to(device)`` moves, lists used as indexes, value reads."""

    def __init__(self) -> None:
        super().__init__()
        self.host_born: collections.Counter[str] = collections.Counter()
        self.device_moves: collections.Counter[str] = collections.Counter()
        self.read_backs: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in READ_BACKS:
            self.read_backs[f"{name} @ {call_site()}"] += 1
        elif name in FACTORIES and func is getattr(torch, name, None):
            if kwargs.get("device") is None:
                self.host_born[f"torch.{name} @ {call_site()}"] += 1
        elif name in ("to", "cuda") and _names_device(args[1:], kwargs):
            self.device_moves[f"{name} @ {call_site()}"] += 1
        elif name == "__getitem__" and _host_index(args[1]):
            self.host_born[f"list index @ {call_site()}"] += 1
        return func(*args, **kwargs)


def _names_device(args: Any, kwargs: dict[str, Any]) -> bool:
    return kwargs.get("device") is not None or any(isinstance(a, (str, torch.device)) for a in args)


def _host_index(index: Any) -> bool:
    """A list (or a tuple holding one) as an index: torch makes a host tensor of it."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(part, list) for part in parts)


def _processor_calls() -> dict[tuple[str, int], str]:
    """``(file, first line)`` of every attention processor's ``__call__`` -> its class name."""
    modules: list[ModuleType] = [diffusers.models.attention_processor, inference.ip_adapter]
    found = {}
    for module in modules:
        for name, value in vars(module).items():
            call = inspect.isclass(value) and value.__dict__.get("__call__")
            if call and "Processor" in name and hasattr(call, "__code__"):
                code = call.__code__
                found[(code.co_filename, code.co_firstlineno)] = name
    return found


def profiled(render: Render, steps: int, device: str) -> dict[str, Any]:
    """One render of ``steps`` steps: wall time, operator and kernel counts and times."""
    activities = [ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    synchronize(device)
    started = time.perf_counter()
    with profile(activities=activities) as trace:
        render(steps)
        synchronize(device)
    wall = time.perf_counter() - started
    operators: collections.Counter[str] = collections.Counter()
    kernels: collections.Counter[str] = collections.Counter()
    kernel_us: collections.Counter[str] = collections.Counter()
    for event in trace.events():
        if event.device_type.name == "CUDA":
            kernels[event.name] += 1
            kernel_us[event.name] += event.device_time
        elif event.name.startswith("aten::"):
            operators[event.name] += 1
    return {"wall": wall, "operators": operators, "kernels": kernels, "kernel_us": kernel_us}


def step_share(
    long: collections.Counter[str], short: collections.Counter[str], extra: int
) -> collections.Counter[str]:
    """Per name, what the ``extra`` steps of the long render added, per step."""
    return collections.Counter(
        {name: (long[name] - short[name]) / extra for name in set(long) | set(short)}
    )


def per_step(render: Render, steps: int, extra: int, device: str) -> dict[str, Any]:
    """One step's share: the difference between a render of ``steps + extra`` and ``steps``."""
    render(2)  # warm-up: load, first kernels
    short, long = profiled(render, steps, device), profiled(render, steps + extra, device)
    kernel_us = step_share(long["kernel_us"], short["kernel_us"], extra)
    return {
        "wall_ms": 1000 * (long["wall"] - short["wall"]) / extra,
        "operators": step_share(long["operators"], short["operators"], extra),
        "kernels": step_share(long["kernels"], short["kernels"], extra),
        "kernel_us": kernel_us,
        "device_ms": sum(kernel_us.values()) / 1000,
    }


@contextmanager
def cuda_syncs(device: str) -> Iterator[collections.Counter[str]]:
    """On CUDA, every call that synchronised with the device (torch's sync debug mode warns
    at each), by the warning's location; empty elsewhere."""
    found: collections.Counter[str] = collections.Counter()
    if not device.startswith("cuda"):
        yield found
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for warning in caught:
        if "synchroniz" in str(warning.message):
            path = Path(warning.filename)
            found[f"{path.parent.name}/{path.name}:{warning.lineno}"] += 1


def counted(render: Render, steps: int, device: str) -> dict[str, collections.Counter[str]]:
    """One render of ``steps`` steps under both counting modes."""
    operators, host = OperatorCounter(), HostCalls()
    with cuda_syncs(device) as synchronised, host, operators:
        render(steps)
    return {
        "cuda_syncs": synchronised,
        "operators": operators.operators,
        "syncs": operators.syncs,
        "host_to_device": operators.host_to_device,
        "host_born": host.host_born,
        "device_moves": host.device_moves,
        "read_backs": host.read_backs,
    }


def python_calls(render: Render, steps: int) -> dict[str, collections.Counter[str]]:
    """One render of ``steps`` steps under cProfile: calls per function and per attention
    processor class (cProfile sees the calling thread, the one that renders)."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        render(steps)
    finally:
        profiler.disable()
    stats: dict[tuple[str, int, str], tuple[Any, ...]] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    processors = _processor_calls()
    calls: collections.Counter[str] = collections.Counter()
    processor_calls: collections.Counter[str] = collections.Counter()
    for (file, line, function), (_primitive, total, *_times) in stats.items():
        calls[f"{Path(file).name}:{line}({function})"] += total
        if (file, line) in processors:
            processor_calls[processors[(file, line)]] += total
    return {"python_calls": calls, "attention_processors": processor_calls}


def counts_per_step(
    render: Render, steps: int, extra: int, device: str
) -> dict[str, collections.Counter[str]]:
    """Every count of one step, as the difference of two renders (module docstring)."""
    render(2)  # warm-up: load, first calls
    short = {**counted(render, steps, device), **python_calls(render, steps)}
    long = {**counted(render, steps + extra, device), **python_calls(render, steps + extra)}
    return {key: step_share(long[key], short[key], extra) for key in long}


def by_site(counter: collections.Counter[str]) -> dict[str, float]:
    return {name: round(value, 2) for name, value in counter.most_common() if round(value, 2)}


def counts_summary(step: dict[str, collections.Counter[str]]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "operators_per_step": round(sum(step["operators"].values()), 1),
        "python_calls_per_step": round(sum(step["python_calls"].values()), 1),
    }
    for key in ("syncs", "cuda_syncs", "read_backs", "host_to_device", "host_born", "device_moves"):
        summary[f"{key}_per_step"] = round(sum(step[key].values()), 2)
        summary[key] = by_site(step[key])
    summary["attention_processor_calls_per_step"] = by_site(step["attention_processors"])
    return summary


def summary(step: dict[str, Any]) -> dict[str, Any]:
    return {
        "wall_ms_per_step": round(step["wall_ms"], 3),
        "device_ms_per_step": round(step["device_ms"], 3),
        "operators_per_step": round(sum(step["operators"].values()), 1),
        "kernels_per_step": round(sum(step["kernels"].values()), 1),
    }


def largest_differences(easel: collections.Counter[str], plain: collections.Counter[str]) -> Any:
    """The names whose per-step figure differs most, Easel minus plain."""
    names = set(easel) | set(plain)
    gaps = {name: easel[name] - plain[name] for name in names}
    ranked = sorted(gaps.items(), key=lambda item: abs(item[1]), reverse=True)
    return [[name[:120], round(gap, 2)] for name, gap in ranked[:TOP] if gap]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--family", choices=["sd15", "sdxl"], help="full-size random weights")
    parser.add_argument("--size", type=int, help="square side (default: native, tiny: 64)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--extra", type=int, default=10)
    parser.add_argument("--count", type=int, default=1, help="pictures per call (a grid: 4)")
    parser.add_argument("--sampler", nargs="+", default=SAMPLERS)
    parser.add_argument(
        "--what", nargs="+", choices=["timing", "counts"], default=["timing", "counts"]
    )
    parser.add_argument(
        "--models-dir", type=Path, help="keep the written model here and reuse it (full size)"
    )
    arguments = parser.parse_args()
    device = arguments.device
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    report: dict[str, Any] = {
        "benchmark": "step_profile",
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "model": arguments.family or "tiny",
    }
    with tempfile.TemporaryDirectory() as scratch:
        models_dir = arguments.models_dir or Path(scratch) / "models"
        if arguments.family is None:
            folder = write_tiny_model(models_dir / "tiny")
            size = arguments.size or 64
        else:
            from benchmarks.gpu import MODEL_NAME, NATIVE_SIZES, write_model

            folder = models_dir / MODEL_NAME
            if not (folder / "model_index.json").exists():
                write_model(models_dir, arguments.family, device, dtype, tiny=False)
            size = arguments.size or NATIVE_SIZES[arguments.family]
        engine, pipeline = easel_and_plain(models_dir, folder, device, dtype)
        report |= {"size": size, "count": arguments.count}

        def sides(sampler: str) -> dict[str, Render]:
            def easel(steps: int) -> None:
                request = RenderRequest(
                    PROMPT,
                    width=size,
                    height=size,
                    steps=steps,
                    seed=1,
                    sampler=sampler,
                    count=arguments.count,
                )
                engine.render(request)

            def plain(steps: int) -> None:
                use_sampler(pipeline, sampler)
                pipeline(
                    PROMPT,
                    num_inference_steps=steps,
                    width=size,
                    height=size,
                    num_images_per_prompt=arguments.count,
                    generator=torch.Generator().manual_seed(1),
                )

            return {"plain": plain, "easel": easel}

        if "timing" in arguments.what:
            sampler = arguments.sampler[0]
            timed = {
                name: per_step(render, arguments.steps, arguments.extra, device)
                for name, render in sides(sampler).items()
            }
            report |= {
                "sampler": sampler,
                **{name: summary(step) for name, step in timed.items()},
                **{
                    f"{key}_easel_minus_plain": largest_differences(
                        timed["easel"][key], timed["plain"][key]
                    )
                    for key in ("operators", "kernels", "kernel_us")
                },
            }
        if "counts" in arguments.what:
            report["counts"] = {}
            for sampler in arguments.sampler:
                counts = {
                    name: counts_per_step(render, arguments.steps, arguments.extra, device)
                    for name, render in sides(sampler).items()
                }
                report["counts"][sampler] = {
                    **{name: counts_summary(step) for name, step in counts.items()},
                    **{
                        f"{key}_easel_minus_plain": largest_differences(
                            counts["easel"][key], counts["plain"][key]
                        )
                        for key in ("operators", "python_calls")
                    },
                }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
