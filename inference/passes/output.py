"""A finished picture: its web UI infotext parameters and its PNG, encoded off the device
thread (``RenderedImage.png``)."""

from __future__ import annotations

import dataclasses
from concurrent.futures import Executor

from PIL import Image

from inference.conditioning import DEFAULT_CLIP_SKIP
from inference.fast import fast_infotext
from inference.infotext import (
    PROMPT_WARNINGS,
    VERSION,
    easel_version,
    format_infotext,
    png_with_infotext,
    web_ui_sampler_fields,
)
from inference.model_cache import LoadedModel
from inference.passes.denoise import fast_preset_for
from inference.passes.jobs import ImageJob, clip_skip_of, pad_conds
from inference.progress import StepTracker
from inference.types import RenderedImage, RenderRequest

# SDXL's text encoders always give their penultimate layer (``PromptEncoder``).
SDXL_IGNORES_CLIP_SKIP = "SDXL ignores clip skip (as the web UI does)"


def base_params(
    model: LoadedModel, request: RenderRequest, job: ImageJob, size: tuple[int, int]
) -> dict[str, object]:
    """The infotext's parameters of ``job``'s picture, rendered by a call made as ``request``:
    what the call does not share (seeds, chaos, relax) is the job's own request's."""
    varied = job.variation_seed is not None and job.variation_strength > 0
    clip_skip = clip_skip_of(request)
    own = job.own_request
    # Kept in the text, as the web UI writes it (its SDXL renders ignore it too), and said.
    ignored = clip_skip != DEFAULT_CLIP_SKIP and model.is_sdxl_base
    warnings = (*job.warnings, *([SDXL_IGNORES_CLIP_SKIP] if ignored else []))
    return {
        "Steps": request.steps,
        **web_ui_sampler_fields(request.sampler, request.schedule_type),
        "CFG scale": float(request.cfg_scale),
        "Seed": job.seed,
        "Size": f"{size[0]}x{size[1]}",
        "Model hash": model.short_hash,
        "Model": model.entry.name,
        "Quantization": model.quantization,
        "Variation seed": job.variation_seed if varied else None,
        "Variation seed strength": job.variation_strength if varied else None,
        "Clip skip": clip_skip if clip_skip != DEFAULT_CLIP_SKIP else None,
        "Pad conds": True if pad_conds(request) else None,
        # Midjourney-style flags (bot.requests): absent unless asked for.
        "Tiling": True if request.options.get("tile") else None,
        "Chaos": own.chaos,
        "Stop at": f"{request.options['stop']}%" if "stop" in request.options else None,
        "Relax": True if own.relax else None,
        # Initial and step noise come from per-picture CPU generators (the web UI's "CPU").
        "RNG": "CPU",
        "Fast": fast_infotext(request, fast_preset_for(model, request)),
        # The dynamic-prompts extension's keys: what was typed, when expansion changed it.
        "Template": job.template,
        "Negative Template": job.negative_template,
        PROMPT_WARNINGS: "; ".join(warnings) or None,
    }


def call_steps(images: list[RenderedImage], tracker: StepTracker) -> list[RenderedImage]:
    """``images`` of one pipeline call (and its later passes), the first carrying the steps
    ``tracker`` counted (``RenderedImage.steps_run``)."""
    if not images:
        return images
    return [dataclasses.replace(images[0], steps_run=tracker.steps_run), *images[1:]]


def rendered(
    encoder: Executor, job: ImageJob, image: Image.Image, params: dict[str, object]
) -> RenderedImage:
    # Last, where the web UI writes its own version.
    infotext = format_infotext(
        job.prompt, job.negative_prompt, {**params, VERSION: easel_version()}
    )
    return RenderedImage(
        encoded=encoder.submit(png_with_infotext, image, infotext),
        seed=job.seed,
        infotext=infotext,
        width=image.width,
        height=image.height,
        picture=image,
    )
