"""Bytes of the PNG Easel stores per picture, to size EASEL_DATA_DIR (docs/deployment.md, Disk).

    python benchmarks/png_sizes.py [--models-dir DIR --model NAME] [--sizes 512 1024] [--seeds 3]

Without --models-dir a tiny random-weight SDXL model is written to a temporary folder: it
renders noise, not a real model's picture. Printed beside it, encoded the same way: random
pixels (the bound: no PNG of that size is larger) and a photograph (skimage's astronaut,
resized) for scale. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.engine import Engine
from inference.infotext import png_with_infotext
from inference.tiny import write_tiny_model
from inference.types import RenderRequest

PROMPT = "a cat on a chair by a window"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path)
    parser.add_argument("--model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    arguments = parser.parse_args()
    rendered: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        models_dir = arguments.models_dir
        if models_dir is None:
            models_dir = Path(scratch)
            write_tiny_model(models_dir / "tiny", family="sdxl")
        engine = Engine(models_dir, device=arguments.device, default_model=arguments.model)
        for side in arguments.sizes:
            lengths = []
            for seed in range(arguments.seeds):
                request = RenderRequest(
                    PROMPT, seed=seed, steps=arguments.steps, width=side, height=side
                )
                [picture] = engine.render(request)
                lengths.append(len(picture.png))
            rendered[f"{side}x{side}"] = round(statistics.mean(lengths) / 1e6, 3)
    photo = Image.fromarray(data.astronaut())
    # What an infotext of a render this size carries, about.
    infotext = f"{PROMPT}\nSteps: 30, Sampler: DPM++ 2M, CFG scale: 7, Seed: 1, Model: model"
    noise = np.random.default_rng(0)

    def stored_mb(picture: Image.Image) -> float:
        return round(len(png_with_infotext(picture, infotext)) / 1e6, 3)

    photograph = {
        f"{side}x{side}": stored_mb(photo.resize((side, side), Image.Resampling.LANCZOS))
        for side in arguments.sizes
    }
    random_pixels = {
        f"{side}x{side}": stored_mb(
            Image.fromarray(noise.integers(0, 256, (side, side, 3), dtype=np.uint8))
        )
        for side in arguments.sizes
    }
    print(
        json.dumps(
            {
                "model": arguments.model or "tiny sdxl (random weights: noise)",
                "rendered_mb": rendered,
                "random_pixels_mb": random_pixels,
                "photograph_mb": photograph,
            }
        )
    )


if __name__ == "__main__":
    main()
