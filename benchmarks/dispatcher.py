"""What the compiled UNet's dispatcher (``inference/compile.CompiledModule``) costs per UNet
call, on top of the compiled module it calls, which is all a plain ``unet.compile()`` pays;
and what the CUDA-graph dispatcher (``inference/cuda_graphs.GraphedForward``) costs per
replayed call on top of the replay itself.

The tiny model's pipeline is compiled the product's way (``Compiler.install``); one real UNet
call of the pipeline is recorded and replayed. The compiled twin is replaced by a stub that
returns at once, so no compile is needed and what is left is the dispatcher's own host work
(the call's key, the LoRA/hook and frozen-state check, the lock, the ``fail_on_recompile``
stance); its parts are timed alone too. The graph dispatcher gets a recorder whose replay
does nothing, so what is timed is its key, its checks (adapters, hooks, what a graph
freezes of the Python side, weights), the copies into the graph's buffers and the clone of
its output; the check of the frozen state (attention processors, padding, blocks' own
forwards) is timed for full-size SD1.5 and SDXL UNets too (built on the meta device: only
their modules count).
On the host, apart from the copies and the clone, which on CUDA are kernel launches.

    python benchmarks/dispatcher.py [--calls 2000] [--repeats 7]

Prints JSON: microseconds per call (best of ``--repeats``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diffusers
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.compile import CompiledModule, Compiler, PythonSide, call_key
from inference.cuda_graphs import GraphedForward
from inference.tiny import write_tiny_model


def recorded_unet_call(pipeline: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments of one UNet call as the pipeline makes it (under inference mode, as the
    engine renders)."""
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def record(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        calls.append((args, kwargs))

    handle = pipeline.unet.register_forward_pre_hook(record, with_kwargs=True)
    with torch.inference_mode():
        pipeline("a cat", num_inference_steps=1, height=64, width=64, output_type="latent")
    handle.remove()
    return calls[0]


class StillRecorder:
    """Records by calling once; a replay does nothing (what is left is the dispatcher)."""

    def record(self, run: Callable[[], Any]) -> tuple[Callable[[], None], Any]:
        return (lambda: None), run()


def full_size_side(config_folder: str) -> tuple[int, Callable[[], Any]]:
    """A full-size UNet of the shipped config (on the meta device: no weights), its
    attention modules, and the dispatcher's check of what a graph freezes of it."""
    folder = Path(__file__).resolve().parents[1] / "inference" / "configs" / config_folder
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel.from_config(
            diffusers.UNet2DConditionModel.load_config(folder / "unet")
        )
    side = PythonSide.of(unet)
    return len(side.attention), side.state


def graphs_report(
    pipeline: Any, args: Any, kwargs: dict[str, Any], time: Callable[[Callable[[], Any]], float]
) -> dict[str, Any]:
    unet = pipeline.unet
    side = int(unet.config.sample_size)
    graphed = GraphedForward(unet, StillRecorder(), max_rows=8, max_area=side * side)
    unet.forward = graphed
    kwargs = {**kwargs, "return_dict": False}
    with torch.inference_mode():
        for _ in range(3):  # seen, recorded, checked
            unet(*args, **kwargs)
    replays = graphed.replays
    per_call = time(lambda: graphed(*args, **kwargs))
    assert graphed.replays > replays, "the calls did not replay"
    checks: dict[str, float] = {}
    for family, folder in (("sd15", "sd15"), ("sdxl", "sdxl-base")):
        attention, state = full_size_side(folder)
        checks[f"{family}_{attention}_attention_modules"] = time(state)
    return {"replayed_call_us": per_call, "frozen_state_check_us": checks}


def microseconds(call: Callable[[], Any], calls: int, repeats: int) -> float:
    with torch.inference_mode():
        return 1e6 * min(timeit.repeat(call, number=calls, repeat=repeats)) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        folder = write_tiny_model(Path(scratch) / "tiny")
        loader: Any = diffusers.DiffusionPipeline
        pipeline = loader.from_pretrained(folder)
        pipeline.set_progress_bar_config(disable=True)
        args, kwargs = recorded_unet_call(pipeline)
        Compiler(Path(scratch) / "cache").install(pipeline)
    dispatcher = pipeline.unet.forward
    assert isinstance(dispatcher, CompiledModule)
    output = (torch.zeros(1),)

    def stub(*_args: Any, **_kwargs: Any) -> Any:
        return output

    dispatcher.compiled = stub
    with torch.inference_mode():
        key = call_key(args, kwargs)
    assert key is not None
    dispatcher.ready.add(key)

    def time(call: Callable[[], Any]) -> float:
        return round(microseconds(call, arguments.calls, arguments.repeats), 2)

    def stance() -> None:
        with torch.compiler.set_stance("fail_on_recompile"):
            pass

    def lock() -> None:
        dispatcher.compiler.lock.acquire(blocking=False)
        dispatcher.compiler.lock.release()

    stub_us = time(lambda: stub(*args, **kwargs))
    dispatched_us = time(lambda: dispatcher(*args, **kwargs))
    calls_before = dispatcher.compiled_calls
    with torch.inference_mode():
        dispatcher(*args, **kwargs)
    assert dispatcher.compiled_calls == calls_before + 1, "the stub was not dispatched to"
    report = {
        "benchmark": "dispatcher",
        "torch": torch.__version__,
        "tensor_arguments": sum(isinstance(a, torch.Tensor) for a in (*args, *kwargs.values())),
        "dispatcher_overhead_us": round(dispatched_us - stub_us, 2),
        "parts_us": {
            "call_key": time(lambda: call_key(args, kwargs)),
            "key_lookup": time(lambda: key in dispatcher.ready),
            "lora_and_hook_check": time(dispatcher._altered),
            "lock": time(lock),
            "fail_on_recompile_stance": time(stance),
        },
        "cuda_graphs": graphs_report(pipeline, args, kwargs, time),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
