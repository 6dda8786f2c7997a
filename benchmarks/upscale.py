"""What tiling buys a model upscale: peak memory and time, tiled against the whole picture at once.

    python benchmarks/upscale.py [--size 512] [--filters 32] [--blocks 2] [--tile 256]

A random-weight ESRGAN (RRDBNet; the real one has 64 filters and 23 blocks) upscales a
``size``² picture 4x, once in tiles and once whole, each in a fresh process so its peak memory
(CPU: max resident set; CUDA: max allocated) is its own. Prints one JSON object; compare the
ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Each measurement runs this file in a fresh Python, whose path starts at benchmarks/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(path: Path, size: int, tile: int, device: str) -> dict[str, float]:
    """One upscale in this process: seconds and peak memory in MiB."""
    import numpy as np
    import torch
    from PIL import Image

    from inference.model_upscale import load_upscaler, upscale_tiled

    upscaler = load_upscaler("bench", path, device)
    picture = Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    )
    before_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    upscale_tiled(upscaler, picture, tile, 16 if tile < size else 0)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before_mib
    return {"seconds": time.perf_counter() - started, "peak_mib": peak_mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--measure", nargs=2, metavar=("MODEL", "TILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        model, tile = args.measure
        print(json.dumps(measure(Path(model), args.size, int(tile), args.device)))
        return

    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.ESRGAN import ESRGAN

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "esrgan-4x.safetensors"
        torch.manual_seed(0)
        network = ESRGAN(num_filters=args.filters, num_blocks=args.blocks, scale=4)
        save_file(network.state_dict(), str(path))
        runs = {}
        for name, tile in (("tiled", args.tile), ("whole", args.size)):
            command = [sys.executable, __file__, "--measure", str(path), str(tile)]
            command += ["--size", str(args.size), "--device", args.device]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            runs[name] = json.loads(output.strip().splitlines()[-1])
    tiled, whole = runs["tiled"], runs["whole"]
    print(
        json.dumps(
            {
                "device": args.device,
                "picture": f"{args.size}x{args.size} -> {args.size * 4}x{args.size * 4}",
                "model": f"ESRGAN {args.filters} filters, {args.blocks} blocks, 4x",
                "tile": args.tile,
                "tiled": tiled,
                "whole": whole,
                # None when the picture is too small to raise the peak over the model load's.
                "memory_ratio_whole_over_tiled": round(whole["peak_mib"] / tiled["peak_mib"], 2)
                if tiled["peak_mib"] > 0
                else None,
                "time_ratio_tiled_over_whole": round(tiled["seconds"] / whole["seconds"], 2),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
