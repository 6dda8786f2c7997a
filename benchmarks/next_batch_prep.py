"""What preparing the next batch ahead would save the device thread: the CPU work a batch
needs before its first UNet call that does not need the device (prompt expansion with
wildcards and dynamic prompts, request checks, each picture's seeded CPU noise).

    python benchmarks/next_batch_prep.py [--count 4] [--runs 50]

Prints JSON: median milliseconds per batch of ``--count`` pictures, per part and in all, for
SD1.5 (512², latents 4x64x64) and SDXL (1024², 4x128x128), plain and with a long prompt
full of wildcards, alternatives and schedules. The noise part includes each picture's
generator, left where the web UI leaves it for ancestral samplers (it used to be drawn a
second time for that). The text encoder and the noise's copy to the device are device work
and are not counted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.prompts import PROMPT as LONG_PROMPT
from benchmarks.prompts import median_ms
from inference.noise import initial_noise_and_generator
from inference.passes.jobs import image_jobs
from inference.prompts import WildcardLibrary
from inference.types import RenderRequest
from inference.validation import RenderLimits, validate_request

WILDCARDS = {"colour": ["red", "teal", "amber", "violet"], "animal": ["fox", "owl", "heron"]}
PROMPTS = {
    "plain": "a lighthouse on a cliff at dusk, oil painting",
    "wildcards": f"a __colour__ __animal__, {LONG_PROMPT}",
}
LATENTS = {"sd15": (512, (1, 4, 64, 64)), "sdxl": (1024, (1, 4, 128, 128))}


def batch_parts(
    request: RenderRequest, wildcards: WildcardLibrary, shape: tuple[int, ...], runs: int
) -> dict[str, float]:
    """Median milliseconds of each part of one batch's preparation."""
    jobs = image_jobs(request, wildcards, (), ())

    def checks() -> None:
        validate_request(request)
        RenderLimits().refusal(request)

    def noise() -> None:
        drawn = [initial_noise_and_generator(job.seed, shape) for job in jobs]
        torch.cat([picture for picture, _ in drawn])

    parts = {
        "prompts_ms": median_ms(lambda: image_jobs(request, wildcards, (), ()), runs),
        "checks_ms": median_ms(checks, runs),
        "noise_ms": median_ms(noise, runs),
    }
    return {**parts, "total_ms": round(sum(parts.values()), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--runs", type=int, default=50)
    arguments = parser.parse_args()
    torch.set_num_threads(1)  # the device thread's own share of the CPU
    report: dict[str, object] = {"benchmark": "next_batch_prep", "pictures": arguments.count}
    with tempfile.TemporaryDirectory() as scratch:
        for name, words in WILDCARDS.items():
            (Path(scratch) / f"{name}.txt").write_text("\n".join(words))
        wildcards = WildcardLibrary(scratch)
        for family, (size, shape) in LATENTS.items():
            for kind, prompt in PROMPTS.items():
                request = RenderRequest(
                    prompt, seed=7, steps=25, width=size, height=size, count=arguments.count
                )
                report[f"{family}_{kind}"] = batch_parts(request, wildcards, shape, arguments.runs)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
