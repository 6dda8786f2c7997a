"""EASEL_COMPILE: the engine with a compiled UNet and VAE decoder against the eager engine.

    python benchmarks/compiled.py --device cpu --steps 10 --seen-shapes-only   # tiny model
    python benchmarks/compiled.py --device cuda --family sd15 --size 512 --steps 25
    python benchmarks/compiled.py --device cuda --models-dir DIR --model NAME --size 512

Without --models-dir a model is written to a temporary folder: the tiny test model, or with
--family a random-weight full-size one from the shipped configs (as benchmarks/gpu.py does).
The compiled engine's first render runs eager while the background thread compiles (its time
is the first-job latency: no wait for the compile); the script then waits for the compile, times
best-of-``--runs`` renders of both engines (batch 1 and a 2x2 grid) and prints one JSON
object with the speed-ups and the largest pixel difference (of 255) between the two.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for benchmarks.gpu

from inference.compile import Compiler, compiled_parts
from inference.engine import Engine
from inference.tiny import write_tiny_model
from inference.types import RenderedImage, RenderRequest

PROMPT = "a lighthouse on a cliff at dusk, oil painting"


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(engine: Engine, request: RenderRequest, device: str) -> tuple[float, RenderedImage]:
    started = time.perf_counter()
    images = engine.render(request)
    _synchronize(device)
    return time.perf_counter() - started, images[0]


def best(engine: Engine, request: RenderRequest, device: str, runs: int) -> float:
    return min(timed(engine, request, device)[0] for _ in range(runs))


def pixels(image: RenderedImage) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image.png)).convert("RGB"), dtype=np.int16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path)
    parser.add_argument(
        "--family",
        choices=["sd15", "sdxl"],
        help="without --models-dir: a random-weight full-size model from the shipped configs",
    )
    parser.add_argument("--model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, help="inductor's cache (default: a new one)")
    parser.add_argument(
        "--seen-shapes-only",
        action="store_true",
        help="compile the shapes the renders use, not every batch size (a CPU saves minutes)",
    )
    parser.add_argument(
        "--mode",
        help="torch.compile's mode (default: the engine's choice for the device)",
    )
    parser.add_argument(
        "--compile-wait",
        type=float,
        help="seconds the background compile may take; past it, the script exits with 1",
    )
    parser.add_argument(
        "--no-grid",
        action="store_true",
        help="batch 1 only: with --seen-shapes-only, one UNet and one decoder compile",
    )
    arguments = parser.parse_args()
    began = time.perf_counter()

    def stage(name: str) -> None:  # stderr: where the time went, should a step be cut short
        print(f"{time.perf_counter() - began:7.1f} s  {name}", file=sys.stderr, flush=True)

    device = arguments.device
    with tempfile.TemporaryDirectory() as scratch:
        models_dir = arguments.models_dir
        if models_dir is None:
            models_dir = Path(scratch) / "models"
            if arguments.family is None:
                write_tiny_model(models_dir / "tiny")
            else:
                from benchmarks.gpu import write_model

                dtype = torch.float16 if device.startswith("cuda") else torch.float32
                write_model(models_dir, arguments.family, device, dtype, tiny=False)
        stage("model written")
        cache_dir = arguments.cache_dir or Path(scratch) / "compile-cache"
        request = RenderRequest(
            PROMPT, width=arguments.size, height=arguments.size, steps=arguments.steps, seed=1
        )
        grid = dataclasses.replace(request, count=4)
        eager = Engine(models_dir, device=device, default_model=arguments.model)
        compiled = Engine(
            models_dir,
            device=device,
            default_model=arguments.model,
            compiler=Compiler(
                cache_dir,
                batch_variants=not arguments.seen_shapes_only,
                mode=arguments.mode,
            ),
        )
        eager.render(dataclasses.replace(request, steps=1))  # load, first kernels
        stage("eager engine loaded")
        started = time.perf_counter()
        first_job_s, _ = timed(compiled, request, device)  # loads, runs eager, starts compiles
        stage("first job (eager) done")
        if not arguments.no_grid:
            compiled.render(grid)  # still eager: its shapes are queued (by the first job or now)
            stage("grid (eager) done")
        assert compiled.compiler is not None
        if not compiled.compiler.wait_idle(arguments.compile_wait):
            sys.exit(f"the compile took longer than {arguments.compile_wait} s")
        compile_s = time.perf_counter() - started
        stage("compiled")
        eager_s = best(eager, request, device, arguments.runs)
        compiled_s = best(compiled, request, device, arguments.runs)
        grid_figures: dict[str, float] = {}
        if not arguments.no_grid:
            eager_grid_s = best(eager, grid, device, arguments.runs)
            compiled_grid_s = best(compiled, grid, device, arguments.runs)
            grid_figures = {
                "eager_grid_s": round(eager_grid_s, 4),
                "compiled_grid_s": round(compiled_grid_s, 4),
                "grid_speedup": round(eager_grid_s / compiled_grid_s, 3),
            }
        _, eager_image = timed(eager, request, device)
        _, compiled_image = timed(compiled, request, device)
        [loaded] = compiled.models.loaded.values()
        calls = [part.compiled_calls for part in compiled_parts(loaded.pipeline)]
    print(
        json.dumps(
            {
                "device": device,
                "torch": torch.__version__,
                "mode": compiled.compiler.mode,
                "model": arguments.model or arguments.family or "tiny",
                "size": arguments.size,
                "steps": arguments.steps,
                "first_job_s": round(first_job_s, 3),
                "compile_s": round(compile_s, 1),
                "eager_s": round(eager_s, 4),
                "compiled_s": round(compiled_s, 4),
                "speedup": round(eager_s / compiled_s, 3),
                **grid_figures,
                "max_pixel_difference": int(
                    np.abs(pixels(eager_image) - pixels(compiled_image)).max()
                ),
                "compiled_calls_unet_decoder": calls,
                # With a CUDA-graph mode: graphs inductor would not record, and why (stderr).
                "cudagraph_counters": {
                    name: count
                    for name, count in torch._dynamo.utils.counters["inductor"].items()
                    if "cudagraph" in name
                },
            }
        )
    )


if __name__ == "__main__":
    main()
