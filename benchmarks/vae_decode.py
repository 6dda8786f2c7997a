"""What decoding a batch's pictures one at a time buys: peak memory and time of the VAE decode
of ``--count`` latents, all at once against one picture at a time (diffusers' slicing).

    python benchmarks/vae_decode.py [--family sd15] [--size 512] [--count 4] [--dtype float32]

The VAE is built from the shipped config (``inference/configs/<family>/vae``) with random
weights. Each way runs in a fresh process so its peak memory (CPU: growth of the max resident
set; CUDA: max allocated) is its own. Prints one JSON object, with the largest difference
between the two ways' pictures in 1/255 steps; compare the ratios of one run.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = Path(__file__).resolve().parents[1] / "inference" / "configs"


def measure(
    family: str, size: int, count: int, sliced: bool, device: str, dtype: str, out: Path
) -> dict[str, float]:
    """One decode in this process: seconds and peak memory in MiB; the pictures go to ``out``."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    config = AutoencoderKL.load_config(CONFIGS / family / "vae")
    vae = AutoencoderKL.from_config(config).to(device, getattr(torch, dtype)).eval()
    if sliced:
        vae.enable_slicing()
    latents = torch.randn(
        (count, vae.config.latent_channels, size // 8, size // 8),
        generator=torch.Generator().manual_seed(1),
    ).to(device, vae.dtype)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before_mib = torch.cuda.memory_allocated() / 2**20
    else:
        before_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    with torch.inference_mode():
        pictures = vae.decode(latents).sample
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak_mib = torch.cuda.max_memory_allocated() / 2**20 - before_mib
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before_mib
    seconds = time.perf_counter() - started
    # As the pipelines make 8-bit pictures of them.
    eight_bit = ((pictures.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    torch.save(eight_bit.cpu(), out)
    return {"seconds": round(seconds, 2), "peak_mib": round(peak_mib)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", default="sd15")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--measure", nargs=2, metavar=("SLICED", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        sliced, out = args.measure
        figures = measure(
            args.family, args.size, args.count, sliced == "1", args.device, args.dtype, Path(out)
        )
        print(json.dumps(figures))
        return

    import torch

    report: dict[str, object] = {"benchmark": "vae_decode", **vars(args)}
    del report["measure"]
    with tempfile.TemporaryDirectory() as scratch:
        outputs = {}
        for name, sliced in (("batched", "0"), ("sliced", "1")):
            out = Path(scratch) / f"{name}.pt"
            command = [sys.executable, __file__, "--measure", sliced, str(out)]
            command += ["--family", args.family, "--size", str(args.size)]
            command += ["--count", str(args.count), "--device", args.device, "--dtype", args.dtype]
            stdout = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            report[name] = json.loads(stdout.strip().splitlines()[-1])
            outputs[name] = torch.load(out)
        difference = (outputs["batched"].int() - outputs["sliced"].int()).abs()
        report["max_difference_255"] = int(difference.max())
        report["identical"] = bool(torch.equal(outputs["batched"], outputs["sliced"]))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
