"""Quantized denoisers on a GPU: what a 2x2 grid costs in memory and time with each way of
loading the model, against ``easel doctor``'s estimate (``inference/memory.py``).

A random-weight SD1.5 / SDXL model is built from the shipped configs (``benchmarks/gpu.py``) and
rendered as it loads by default (``off``), with ``EASEL_QUANTIZE=int8`` and ``fp8``, and from a
copy whose UNet is a Q8_0 GGUF file (``gguf-q8``). For each: the denoiser's loaded bytes,
``torch.cuda.max_memory_allocated`` from load to the grid's last PNG (CUDA; ``null`` on the
CPU), the doctor's estimated peak, and the grid's time after a one-picture warm-up. A mode the
device cannot run reports its refusal. Prints JSON.

    python benchmarks/quantized.py --device cuda --family sdxl --steps 20
    python benchmarks/quantized.py --device cpu --family sd15 --size 64 --steps 2 --tiny  # smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, get_args

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for benchmarks.gpu and tests

from benchmarks.gpu import NATIVE_SIZES, Family, peak_memory_mib, release_memory, write_model
from benchmarks.timing import synchronize
from inference.devices import default_dtype
from inference.engine import Engine
from inference.memory import model_memory
from inference.quantization import Quantize, quantize_problem
from inference.types import RenderRequest
from tests.support.gguf_files import gguf_copy

GGUF_MODE = "gguf-q8"
# Each mode's EASEL_QUANTIZE (the GGUF copy loads quantized with it off).
QUANTIZE_OF: dict[str, Quantize] = {"off": "off", "int8": "int8", "fp8": "fp8", GGUF_MODE: "off"}
_MIB = 2**20


def measure_mode(models_dir: Path, mode: str, request: RenderRequest, device: str) -> Any:
    """One mode's figures (its refusal, when the device or the install cannot run it)."""
    quantize = QUANTIZE_OF[mode]
    problem = quantize_problem(quantize, device)
    if problem is not None:
        return {"refused": problem}
    model = f"{request.model}-q8" if mode == GGUF_MODE else request.model
    grid = dataclasses.replace(request, model=model)
    release_memory(device)
    engine = Engine(models_dir, device=device, quantize=quantize)
    engine.render(dataclasses.replace(grid, count=1))  # load, and every kernel's first call
    synchronize(device)
    started = time.perf_counter()
    pictures = engine.render(grid)
    for picture in pictures:
        picture.png  # noqa: B018 (waits for the PNG)
    synchronize(device)
    grid_s = time.perf_counter() - started
    loaded = engine.models.loaded[model]
    entry = engine.registry.resolve(model)
    estimate = model_memory(entry, default_dtype(device).itemsize, quantize != "off")
    report = {
        "grid_2x2_s": round(grid_s, 3),
        "weights_mib": round(loaded.weight_bytes / _MIB, 1),
        "peak_memory_mib": peak_memory_mib(device),
        "estimated_peak_mib": round(estimate.peak_bytes / _MIB, 1),
        "quantization": loaded.quantization,
    }
    del engine, loaded
    release_memory(device)
    return report


def benchmark(
    family: Family, scratch: Path, device: str, size: int, steps: int, tiny: bool
) -> dict[str, Any]:
    folder, _ = write_model(scratch, family, device, default_dtype(device), tiny)
    gguf_copy(folder, folder.with_name(f"{folder.name}-q8"))
    request = RenderRequest(
        "a lighthouse at dusk", seed=1, steps=steps, width=size, height=size, count=4
    )
    request = dataclasses.replace(request, model=folder.name)
    return {mode: measure_mode(scratch, mode, request, device) for mode in QUANTIZE_OF}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=get_args(Family), default="sd15")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, help="picture side (default: the native size)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--tiny", action="store_true", help="the tiny test model (smoke runs)")
    args = parser.parse_args()
    size = args.size or NATIVE_SIZES[args.family]
    with TemporaryDirectory() as scratch:
        report = benchmark(args.family, Path(scratch), args.device, size, args.steps, args.tiny)
    print(json.dumps({"family": args.family, "size": size, **report}, indent=1))


if __name__ == "__main__":
    main()
