"""What a progress preview costs, against the VAE decode it avoids.

    python benchmarks/preview.py [--family sd15|sdxl] [--size 512] [--count 4] [--runs 5]

Builds the full-size VAE of the family from the shipped config (random weights: the cost is
the same), fits the latent previewer once, then times a preview JPEG and a VAE decode of the
same ``count`` latents, and the device thread's share of a preview (``frame_ms``: the colours
as small 8-bit pictures on their way to the CPU; the JPEG is encoded on a CPU pool). The CPU
pool's share: one grid of the ``count`` pictures (``grid_jpeg_ms``), against a batch of
``count`` members' requests of one picture each, which each get a JPEG of their own picture
alone from that one frame (``jpegs_per_request_ms``). Prints one JSON object; compare the
ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import AutoencoderKL

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.preview import LatentPreviewer

CONFIGS = Path(__file__).resolve().parent.parent / "inference" / "configs"
CONFIG_FOLDERS = {"sd15": "sd15", "sdxl": "sdxl-base"}


def median_seconds(action: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", choices=sorted(CONFIG_FOLDERS), default="sd15")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    config = AutoencoderKL.load_config(CONFIGS / CONFIG_FOLDERS[args.family] / "vae")
    vae = AutoencoderKL.from_config(config).to(args.device, dtype).eval()
    scale = 2 ** (len(vae.config.block_out_channels) - 1)

    started = time.perf_counter()
    previewer = LatentPreviewer.fit(vae, scale)
    fit_s = time.perf_counter() - started
    assert previewer is not None
    side = args.size // scale
    latents = torch.randn(args.count, vae.config.latent_channels, side, side).to(args.device, dtype)

    def decode() -> None:
        with torch.inference_mode():
            vae.decode(latents / vae.config.scaling_factor)

    preview_s = median_seconds(lambda: previewer.jpeg(latents), args.runs)
    frame_s = median_seconds(lambda: previewer.frame(latents), args.runs)
    frame = previewer.frame(latents)
    grid_jpeg_s = median_seconds(frame.jpeg, args.runs)
    jpegs_per_request_s = median_seconds(
        lambda: [frame.rows(index, index + 1).jpeg() for index in range(args.count)], args.runs
    )
    decode_s = median_seconds(decode, max(1, args.runs // 2))
    print(
        json.dumps(
            {
                "device": args.device,
                "family": args.family,
                "pictures": f"{args.count} x {args.size}x{args.size}",
                "fit_once_s": round(fit_s, 3),
                "preview_ms": round(preview_s * 1000, 2),
                "frame_ms": round(frame_s * 1000, 2),
                "grid_jpeg_ms": round(grid_jpeg_s * 1000, 2),
                "jpegs_per_request_ms": round(jpegs_per_request_s * 1000, 2),
                "vae_decode_ms": round(decode_s * 1000, 1),
                "decode_over_preview": round(decode_s / preview_s, 1),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
