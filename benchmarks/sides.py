"""Easel's engine and a plain diffusers pipeline side by side on the same weights, for the
benchmarks that compare one sampling step of each (``step_overhead.py``, ``step_profile.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import diffusers
import torch

from inference.engine import Engine
from inference.samplers import make_scheduler

PROMPT = "a lighthouse on a cliff at dusk, oil painting"


def easel_and_plain(
    models_dir: Path, folder: Path, device: str, dtype: torch.dtype, sampler: str | None = None
) -> tuple[Engine, Any]:
    """Easel's engine over ``models_dir`` and a plain pipeline of ``folder`` (a model in it)
    with ``sampler`` as Easel makes it, so only the loop around the scheduler differs."""
    engine = Engine(models_dir, device=device, dtype=dtype)
    loader: Any = diffusers.DiffusionPipeline
    pipeline = loader.from_pretrained(folder, dtype=dtype).to(device)
    pipeline.set_progress_bar_config(disable=True)
    if sampler is not None:
        use_sampler(pipeline, sampler)
    return engine, pipeline


def use_sampler(pipeline: Any, sampler: str) -> None:
    pipeline.scheduler = make_scheduler(sampler, pipeline.scheduler.config)
