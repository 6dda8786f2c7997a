"""Median timings of the prompt language on a realistic 500-character prompt, as JSON.

Run: ``python benchmarks/prompts.py``. Goal: parsing (schedule + attention) under 1 ms.
``encode_*_ms`` time the text encoder on the tiny random-weight models (CPU, no cache):
the cost of our chunking, weighting and concatenation around 2-layer encoders, so it is
a floor, not a real model's figure.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from inference.conditioning import PromptEncoder
from inference.prompts import (
    build_plan,
    chunk_tokens,
    default_tokenizer,
    expand_prompt,
    parse_attention,
    schedule_prompt,
)
from inference.tiny import build_tiny_pipeline

PROMPT = (
    "masterpiece, best quality, (ultra-detailed:1.2), a {majestic|weathered} lighthouse on a "
    "rocky cliff at [dawn:dusk:0.4], crashing waves, ((dramatic clouds)), [oil painting|"
    "watercolor], volumetric light, god rays, seagulls in flight, (intricate stonework:1.1), "
    "warm glow from the lantern room, moss on the rocks, [[muted colors]], wide angle, 35mm, "
    "depth of field, sharp focus, highly detailed foreground, atmospheric perspective, "
    "BREAK cinematic composition, by a famous marine painter, trending on artstation, 8k"
)


def median_ms(work: Callable[[], object], repeats: int = 300) -> float:
    work()  # warm caches (vocabulary, BPE cache, dynamicprompts parser)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        samples.append(time.perf_counter() - start)
    return round(statistics.median(samples) * 1000, 4)


def encode_figures() -> dict[str, object]:
    """Encoding one scheduled text, and the whole plan (the encoder's cache skips repeats)."""
    plan = build_plan(PROMPT, seed=1, steps=20)
    texts = [entry.chunks for sub in plan.subprompts for entry in sub.schedule]
    figures: dict[str, object] = {
        "scheduled_texts": len(texts),
        "distinct_texts": len(set(texts)),
        "chunks_per_text": len(texts[0]),
    }
    # One thread: the tiny encoders gain nothing from more, and on a shared CPU the
    # threads' spin-waits would make the figures noise.
    torch.set_num_threads(1)
    for family in ("sd15", "sdxl"):
        pipeline = build_tiny_pipeline(family)

        def encode_one(pipeline: object = pipeline) -> None:
            PromptEncoder(pipeline).encode(texts[0])

        def encode_plan(pipeline: object = pipeline) -> None:
            encoder = PromptEncoder(pipeline)
            for chunks in texts:
                encoder.encode(chunks)

        with torch.inference_mode():
            figures[f"encode_text_{family}_tiny_ms"] = median_ms(encode_one, repeats=30)
            figures[f"encode_plan_{family}_tiny_ms"] = median_ms(encode_plan, repeats=30)
    return figures


def main() -> None:
    expanded = expand_prompt(PROMPT, 1)[0].text
    segments = schedule_prompt(expanded, 20)
    parsed = parse_attention(segments[0].text)
    tokenizer = default_tokenizer()

    def parse() -> None:
        for segment in schedule_prompt(expanded, 20):
            parse_attention(segment.text)

    figures = {
        "prompt_chars": len(PROMPT),
        "schedule_segments": len(segments),
        "parse_ms": median_ms(parse),
        "parse_one_text_ms": median_ms(lambda: parse_attention(segments[0].text)),
        "expand_ms": median_ms(lambda: expand_prompt(PROMPT, 1)),
        "chunk_tokens_ms": median_ms(lambda: chunk_tokens(parsed, tokenizer)),
        "tokens": sum(len(c.token_ids) for c in chunk_tokens(parsed, tokenizer)),
        **encode_figures(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
