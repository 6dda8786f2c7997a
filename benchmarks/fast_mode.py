"""Fast mode (DeepCache on the UNet) against the plain render at the same steps and seed.

    python benchmarks/fast_mode.py [--unet tiny|sd15-layout] [--unet-width 80] [--size 128]
    python benchmarks/fast_mode.py --models-dir DIR --model NAME --size 512   # a real model

Without --models-dir a random-weight model is written to a temporary folder: ``tiny`` (the
test model) or ``sd15-layout``, SD1.5's UNet layout (four levels, two layers a block, cross
attention on three levels) at ``--unet-width`` base channels (SD1.5: 320; 80 by default), so
the cached share of the work is like the real one's. Prints one JSON object: seconds per
render (best of --repeats), the speed-up, and the PSNR of the fast picture against the plain
one (pixels, 8 bits).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DConditionModel
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.engine import Engine
from inference.fast import DEEP_CACHE_INTERVAL
from inference.tiny import TINY_TEXT_HIDDEN, build_tiny_pipeline, write_tiny_model
from inference.types import RenderedImage, RenderRequest

PROMPT = "a lighthouse on a cliff at dusk, oil painting"


def write_sd15_layout_model(directory: Path, width: int = 80) -> None:
    """The tiny model with SD1.5's UNet layout at ``width`` base channels (SD1.5: 320)."""
    pipeline = build_tiny_pipeline()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(width, 2 * width, 4 * width, 4 * width),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=TINY_TEXT_HIDDEN,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    pipeline.register_modules(unet=unet)
    pipeline.save_pretrained(directory, safe_serialization=True)


def pixels(image: RenderedImage) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image.png)).convert("RGB"), dtype=np.float64)


def psnr(first: np.ndarray, second: np.ndarray) -> float:
    mse = float(np.mean((first - second) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def best_time(engine: Engine, request: RenderRequest, repeats: int) -> tuple[float, RenderedImage]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        [image] = engine.render(request)
        image.png  # noqa: B018 - the PNG is part of a render's cost
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return min(times), image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path)
    parser.add_argument("--model")
    parser.add_argument("--unet", choices=["tiny", "sd15-layout"], default="sd15-layout")
    parser.add_argument("--unet-width", type=int, default=80, help="sd15-layout's base channels")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sampler", default="Euler a")
    parser.add_argument("--seeds", type=int, default=3, help="pictures compared for the PSNR")
    parser.add_argument("--repeats", type=int, default=2)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        models_dir = arguments.models_dir
        if models_dir is None:
            models_dir = Path(scratch)
            if arguments.unet == "tiny":
                write_tiny_model(models_dir / "tiny")
            else:
                write_sd15_layout_model(models_dir / "sd15-layout", arguments.unet_width)
        engine = Engine(models_dir, device=arguments.device, default_model=arguments.model)
        plain = RenderRequest(
            PROMPT,
            width=arguments.size,
            height=arguments.size,
            steps=arguments.steps,
            sampler=arguments.sampler,
        )
        engine.render(dataclasses.replace(plain, steps=1, seed=0))  # warm-up: load, kernels
        plain_s, fast_s, quality = [], [], []
        repeatable = True
        for seed in range(arguments.seeds):
            request = dataclasses.replace(plain, seed=seed)
            seconds, normal = best_time(engine, request, arguments.repeats)
            plain_s.append(seconds)
            seconds, quick = best_time(
                engine, dataclasses.replace(request, fast=True), arguments.repeats
            )
            fast_s.append(seconds)
            [again] = engine.render(dataclasses.replace(request, fast=True))
            repeatable = repeatable and again.png == quick.png
            quality.append(psnr(pixels(normal), pixels(quick)))
    print(
        json.dumps(
            {
                "device": arguments.device,
                "model": arguments.model or arguments.unet,
                "size": arguments.size,
                "steps": arguments.steps,
                "sampler": arguments.sampler,
                "cache_interval": DEEP_CACHE_INTERVAL,
                "plain_s": round(sum(plain_s) / len(plain_s), 4),
                "fast_s": round(sum(fast_s) / len(fast_s), 4),
                "speedup": round(sum(plain_s) / sum(fast_s), 3),
                "psnr_db_min": round(min(quality), 2),
                "psnr_db_mean": round(sum(quality) / len(quality), 2),
                "fast_repeatable": repeatable,
            }
        )
    )


if __name__ == "__main__":
    main()
