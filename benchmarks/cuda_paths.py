"""Every engine path on one device with the tiny models: finite values, bit-identical reruns.

    python benchmarks/cuda_paths.py [--device cuda]     # fp16 on CUDA, as the Engine picks

Each path (txt2img, count 4, a batch, samplers, variation, LoRA, hires and latent hires,
img2img, inpaint, the inpainting model, only-masked, fast, model and creative upscale, SDXL) is
rendered twice by one ``Engine``. A path passes when every UNet and VAE output was finite (forward
hooks), no picture is one flat colour (what NaN latents decode to, also for upscalers), and the
two renders' pixels are equal. On CUDA each path is also rendered twice by an engine that
replays its UNet from CUDA graphs (``EASEL_CUDA_GRAPHS``, as shipped: the first render records,
the second replays), whose pictures must equal the eager engine's within
``GRAPH_TOLERANCE``; the report gives the largest difference and the replays. Prints JSON;
exits 1 when a path fails.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.cuda_graphs import CudaGraphRecorder, RecorderFactory, graphed_unet
from inference.engine import Engine
from inference.tiny import (
    write_tiny_controlnet,
    write_tiny_lora,
    write_tiny_model,
    write_tiny_upscaler,
)
from inference.types import RenderedImage, RenderFailed, RenderRequest

TXT2IMG = RenderRequest("a lighthouse on a cliff", seed=7, steps=4, width=64, height=64)
SAMPLERS = ("DPM++ 2M Karras", "DPM++ SDE Karras", "DPM2 a", "DDIM", "UniPC")
UPSCALER = "tiny-esrgan-4x"
# Of 255: a replay runs the kernels the eager call ran, so its pictures should be equal.
GRAPH_TOLERANCE = 2
# Paths that call no UNet, or call it only in ways a graph cannot hold (eager): a LoRA's
# adapters loaded, circular padding.
NO_REPLAYS = frozenset({"lora", "tile", "fast upscale", "model upscale"})


def write_models(directory: Path) -> None:
    write_tiny_controlnet(write_tiny_model(directory / "tiny", family="sd15", seed=0))
    write_tiny_model(directory / "tiny-inpainting", family="sd15", inpainting=True, seed=0)
    write_tiny_model(directory / "tiny-xl", family="sdxl", seed=0)
    write_tiny_lora(directory / "lora" / "ink.safetensors", seed=1)
    write_tiny_upscaler(directory / "upscalers", scale=4)


def write_pictures(directory: Path) -> tuple[str, str]:
    """An init picture with shapes in it and a mask with a white square."""
    directory.mkdir(parents=True, exist_ok=True)
    init = Image.new("RGB", (96, 80), (30, 120, 200))
    ImageDraw.Draw(init).ellipse((10, 10, 60, 70), fill=(250, 200, 20))
    mask = Image.new("L", (96, 80), 0)
    ImageDraw.Draw(mask).rectangle((40, 24, 63, 47), fill=255)
    init.save(directory / "init.png")
    mask.save(directory / "mask.png")
    return str(directory / "init.png"), str(directory / "mask.png")


def paths(init: str, mask: str) -> dict[str, list[RenderRequest]]:
    """Each path's requests (more than one: rendered as one batch)."""
    img2img = replace(TXT2IMG, mode="img2img", init_image=init, denoising_strength=0.5)
    inpaint = replace(img2img, mode="inpaint", mask_image=mask)
    hires = {"hires_scale": 1.5, "hires_steps": 2, "hires_denoising": 0.5}
    control = {"module": "canny", "image": init, "guidance_end": 0.5}
    upscale = replace(TXT2IMG, mode="upscale", init_image=init)
    creative = {"upscale_factor": 2, "upscale_mode": "creative", "upscale_strength": 0.5}
    table: dict[str, list[RenderRequest]] = {
        "txt2img": [TXT2IMG],
        "count 4": [replace(TXT2IMG, count=4)],
        "batch of 2": [TXT2IMG, replace(TXT2IMG, prompt="a red fox", seed=8)],
        "variation": [replace(TXT2IMG, variation_seed=9, variation_strength=0.3)],
        "lora": [replace(TXT2IMG, prompt="a lighthouse on a cliff <lora:ink:0.8>")],
        # Circular padding for one render: frozen into a graph, so it must run eager.
        "tile": [replace(TXT2IMG, options={"tile": True})],
        # Residuals for the first half of the steps, none after: two keys.
        "controlnet": [replace(TXT2IMG, options={"controlnet": [control]})],
        "hires": [replace(TXT2IMG, options=hires)],
        "latent hires": [replace(TXT2IMG, options={**hires, "hires_upscaler": "Latent"})],
        "img2img": [img2img],
        "inpaint": [inpaint],
        "inpainting model": [replace(inpaint, model="tiny-inpainting")],
        "only masked": [replace(inpaint, options={"only_masked": True})],
        "fast upscale": [replace(upscale, options={"upscale_factor": 2, "upscaler": "Lanczos"})],
        "model upscale": [replace(upscale, options={"upscale_factor": 4, "upscaler": UPSCALER})],
        "creative upscale": [replace(upscale, options=creative)],
        "sdxl": [replace(TXT2IMG, model="tiny-xl")],
    }
    for sampler in SAMPLERS:
        table[f"sampler {sampler}"] = [replace(TXT2IMG, sampler=sampler)]
    return table


class CheckedEngine(Engine):
    """The Engine as shipped, with hooks that note any non-finite UNet or VAE output."""

    def __init__(self, models_dir: Path, device: str) -> None:
        super().__init__(models_dir, device=device, default_model="tiny")
        self.non_finite: list[str] = []

    def _load_pipeline(self, entry: Any) -> Any:
        pipeline = super()._load_pipeline(entry)
        for name in ("unet", "vae"):
            for part_name, part in getattr(pipeline, name).named_children():
                if part_name in ("encoder", "decoder") or name == "unet":
                    part.register_forward_hook(self._hook(f"{entry.name}.{name}.{part_name}"))
        return pipeline

    def _hook(self, where: str) -> Callable[..., None]:
        def check(_module: Any, _inputs: Any, output: Any) -> None:
            tensors = output if isinstance(output, tuple) else (output,)
            for tensor in tensors:
                if isinstance(tensor, torch.Tensor) and not torch.isfinite(tensor).all():
                    self.non_finite.append(where)

        return check


def pixels(image: RenderedImage) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image.png)).convert("RGB"), dtype=np.int16)


def render(engine: Engine, requests: list[RenderRequest]) -> list[np.ndarray]:
    if len(requests) == 1:
        images = engine.render(requests[0])
    else:
        images = [image for result in engine.render_batch(requests) for image in result]
    return [pixels(image) for image in images]


def replays(engine: Engine) -> int:
    unets = (graphed_unet(model.pipeline) for model in engine.models.loaded.values())
    return sum(unet.replays for unet in unets if unet is not None)


def check_path(
    engine: CheckedEngine,
    requests: list[RenderRequest],
    graphed: Engine | None = None,
    replays_expected: bool = True,
) -> dict[str, Any]:
    """``graphed``: an engine replaying its UNets from graphs, compared with ``engine``;
    the path fails if it replayed nothing while ``replays_expected``, or if a render of it
    failed (a picture that decoded to NaN or infinity is refused by the engine itself)."""
    engine.non_finite.clear()
    try:
        return _compared(engine, requests, graphed, replays_expected)
    except RenderFailed as error:
        return {
            "ok": False,
            "finite": not engine.non_finite,
            "failed": str(error),
            "non_finite_in": sorted(set(engine.non_finite)),
        }


def _compared(
    engine: CheckedEngine,
    requests: list[RenderRequest],
    graphed: Engine | None,
    replays_expected: bool,
) -> dict[str, Any]:
    started = time.perf_counter()
    first = render(engine, requests)
    seconds = time.perf_counter() - started
    again = render(engine, requests)
    max_difference = max(int(np.abs(a - b).max()) for a, b in zip(first, again, strict=True))
    flat = sum(int(picture.std() == 0) for picture in first)
    result: dict[str, Any] = {
        "pictures": len(first),
        "size": f"{first[0].shape[1]}x{first[0].shape[0]}",
        "seconds": round(seconds, 3),
        "finite": not engine.non_finite,
        "flat_pictures": flat,
        "max_rerun_difference": max_difference,
    }
    result["ok"] = result["finite"] and flat == 0 and max_difference == 0
    if graphed is not None:
        render(graphed, requests)  # records each UNet shape (at its second call)
        before = replays(graphed)
        replayed = render(graphed, requests)
        graph_difference = max(
            int(np.abs(a - b).max()) for a, b in zip(first, replayed, strict=True)
        )
        result["graph_replays"] = replays(graphed) - before
        result["max_graph_difference"] = graph_difference
        result["ok"] = (
            result["ok"]
            and graph_difference <= GRAPH_TOLERANCE
            and (result["graph_replays"] > 0 or not replays_expected)
        )
    if engine.non_finite:
        result["non_finite_in"] = sorted(set(engine.non_finite))
    return result


def run(device: str, scratch: Path, recorders: RecorderFactory | None = None) -> dict[str, Any]:
    """``recorders``: how the graphed engine records (default: CUDA graphs on CUDA, and no
    graphed engine elsewhere)."""
    models = scratch / "models"
    write_models(models)
    init, mask = write_pictures(scratch / "pictures")
    engine = CheckedEngine(models, device)
    if recorders is None and device.startswith("cuda"):
        recorders = CudaGraphRecorder
    graphed = None
    if recorders is not None:
        graphed = Engine(models, device=device, default_model="tiny", cuda_graphs=recorders)
    results: dict[str, Any] = {}
    for name, requests in paths(init, mask).items():
        try:
            results[name] = check_path(engine, requests, graphed, name not in NO_REPLAYS)
        except Exception as error:  # a path that raises is a failed path; the others still run
            results[name] = {"ok": False, "error": f"{type(error).__name__}: {error}"}
    failed = [name for name, result in results.items() if not result["ok"]]
    return {
        "benchmark": "cuda_paths",
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else device,
        "dtype": str(engine.dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "paths": results,
        "failed": failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here (use --device cpu for a smoke run)")
    with tempfile.TemporaryDirectory() as scratch:
        report = run(args.device, Path(scratch))
    print(json.dumps(report, indent=2))
    sys.exit(1 if report["failed"] else 0)


if __name__ == "__main__":
    main()
