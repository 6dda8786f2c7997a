"""The upscale pass: enlarge a picture with a model upscaler or Lanczos, keeping its infotext;
``creative`` then re-details it with img2img in blended native-size tiles."""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Mapping

import numpy as np
from PIL import Image

from inference.family_rules import CREATIVE_UPSCALE
from inference.images import load_input_image
from inference.img2img_steps import Img2ImgSteps
from inference.infotext import without_easel_keys
from inference.limits import written_seed
from inference.model_cache import LoadedModel, native_size
from inference.passes.denoise import Denoiser, PassTools, pipeline_task, task_arguments
from inference.passes.jobs import ImageJob, OwnRequest, planned_draws, resolve_seed
from inference.passes.networks import JobNetworks, job_networks
from inference.passes.output import base_params, call_steps, rendered
from inference.passes.picture_prompts import picture_infotext, rendered_prompts
from inference.progress import StepTracker, previewer_for, raise_if_cancelled
from inference.tiles import TileBlender
from inference.types import ProgressCallback, RenderedImage, RenderRequest
from inference.upscale import UpscaleOptions, creative_tiles

# The creative upscale re-details this many tiles per pipeline call.
CREATIVE_TILES_PER_CALL = 4


def upscale(
    request: RenderRequest,
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
    tools: PassTools,
    *,
    default_model: str | None,
    default_upscaler: str | None,
) -> list[RenderedImage]:
    """Enlarge ``init_image`` with the upscaler asked for (a model, or Lanczos);
    ``creative`` then re-details it with img2img.

    The picture's own infotext is kept (plus the postprocessing keys), so an upscaled
    result still says how it was made.
    """
    assert request.init_image is not None  # validate_request made sure
    options = UpscaleOptions.from_options(request.options)
    source = load_input_image(request.init_image, "image to upscale")
    size = options.output_size(*source.size)
    # An unknown name fails before any work.
    resolved = tools.registry.resolve_upscaler(options.upscaler, default_upscaler)
    picture = picture_infotext(request)
    prompt, negative, params = picture
    tracker = StepTracker(progress, cancel, tools.preview_interval_s)
    image = tools.models.enlarge(source, size, resolved, cancel, tracker.on_tile)
    postprocess = {
        "Postprocess upscale by": options.factor,
        "Postprocess upscaler": resolved[0],
    }
    if options.mode == "fast":
        raise_if_cancelled(cancel)
        written = written_seed(params.get("Seed"))
        seed = resolve_seed(request.seed) if written is None else written
        job = ImageJob(prompt, negative, seed, None, 0.0, own_request=OwnRequest.of(request))
        # Less the picture's own warnings and version: this render's are written. Its text's
        # Size (and hires fields) are the picture's before any fast upscale: the factor counts
        # from there, so an upscale of an upscale says by 4, not by 2.
        postprocess["Postprocess upscale by"] = options.factor * _upscaled_by(params)
        carried = {**without_easel_keys(params), **postprocess}
        return [rendered(tools.encoder, job, image, carried)]
    # The request's prompt, else the picture's own, guides the re-detailing.
    job = ImageJob(
        *rendered_prompts(request, picture),
        resolve_seed(request.seed),
        None,
        0.0,
        draws=planned_draws(request),
        own_request=OwnRequest.of(request),
    )
    entry = tools.registry.resolve(request.model, default_model)
    raise_if_cancelled(cancel)
    model = tools.models.load(entry)
    if model.flow is not None:  # its tiles would need the flow pass (the bot refuses it first)
        raise model.flow.refusal(CREATIVE_UPSCALE)
    tracker.previewer = previewer_for(model, progress, tools.preview_interval_s)
    with job_networks(tools.registry, tools.models, model, request, [job]) as networks:
        image, overlap = redetail_in_tiles(
            model, request, job, image, options.strength, tracker, networks, tools.denoise
        )
    creative: dict[str, object] = {
        "Denoising strength": options.strength,
        "SD upscale overlap": overlap,
        **postprocess,
    }
    infotext: dict[str, object] = {
        **base_params(model, request, job, size),
        **networks.params(job),
        **creative,
    }
    return call_steps([rendered(tools.encoder, job, image, infotext)], tracker)


def _upscaled_by(params: Mapping[str, object]) -> int | float:
    """How many times a fast upscale enlarged the picture past what its text's Size (and
    hires fields) describe: 1 for a rendered picture, and for a creative upscale, whose Size
    is the size it rendered at."""
    by = params.get("Postprocess upscale by")
    if "SD upscale overlap" in params or not isinstance(by, int | float) or by <= 0:
        return 1
    return by


def redetail_in_tiles(
    model: LoadedModel,
    request: RenderRequest,
    job: ImageJob,
    image: Image.Image,
    strength: float,
    tracker: StepTracker,
    networks: JobNetworks,
    denoise: Denoiser,
) -> tuple[Image.Image, int]:
    """The creative upscale's img2img pass over ``image``, in tiles of the model's native
    size overlapping by an eighth of it, a few per pipeline call, blended across the
    overlaps: any output size in the memory of one batch of native-size tiles. Tile i
    uses seed + i for its noise and the picture's prompt as drawn at seed (the text the bot
    checked: ``{a|b}`` and wildcards are not drawn again per tile); each runs img2img's
    steps (the web UI's SD upscale script runs its tiles through img2img). Returns the
    picture and the overlap (for the infotext)."""
    boxes, overlap = creative_tiles(image.width, image.height, native_size(model))
    tile_size = (boxes[0][2] - boxes[0][0], boxes[0][3] - boxes[0][1])
    task = pipeline_task("img2img", model.inpainting_unet)
    blender = TileBlender(image.height, image.width, 3, overlap)
    steps = Img2ImgSteps.img2img(request.steps, strength)
    for first in range(0, len(boxes), CREATIVE_TILES_PER_CALL):
        batch = boxes[first : first + CREATIVE_TILES_PER_CALL]
        tracker.later_steps = steps.run * math.ceil(
            (len(boxes) - first - len(batch)) / CREATIVE_TILES_PER_CALL
        )
        jobs = [
            dataclasses.replace(job, seed=job.seed + first + i, prompt_seed=job.seed)
            for i in range(len(batch))
        ]
        crops = [image.crop(box) for box in batch]
        arguments = task_arguments(task, tile_size, strength, crops, None, len(batch)).running(
            steps
        )
        tiles = denoise(
            model, task, request, jobs, tile_size, request.steps, arguments, tracker, networks
        )
        for (left, top, _, _), tile in zip(batch, tiles, strict=True):
            blender.add(top, left, np.asarray(tile.convert("RGB"), dtype=np.float32))
    blended = np.round(np.clip(blender.result(), 0, 255)).astype(np.uint8)
    return Image.fromarray(blended), overlap
