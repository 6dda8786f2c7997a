"""The synchronous render engine: one instance per device, called from that device's thread.

``render`` validates a request before touching torch, loads (and caches) the model, draws
each image's starting noise on the CPU from its own seed, runs the diffusers pipeline with a
progress/cancel hook at every step and returns PNGs that carry web UI infotext.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import diffusers
import torch
import transformers
from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, DiffusionPipeline
from PIL import Image

from inference.checkpoints import load_single_file
from inference.images import InpaintCanvas, InpaintOptions, inpaint_canvas, load_input_image
from inference.infotext import format_infotext, png_with_infotext
from inference.noise import initial_noise, seeded_generator
from inference.registry import ModelEntry, ModelRegistry
from inference.samplers import canonical_sampler_name, make_scheduler
from inference.types import (
    ProgressCallback,
    RenderCancelled,
    RenderedImage,
    RenderInputError,
    RenderRequest,
    StepProgress,
)

MIN_SIZE, MAX_SIZE, SIZE_MULTIPLE = 64, 2048, 8
MIN_STEPS, MAX_STEPS = 1, 150
MIN_CFG, MAX_CFG = 0.0, 30.0
MIN_COUNT, MAX_COUNT = 1, 8
MAX_BATCH_IMAGES = 16
MAX_SEED = 2**32 - 1
# Latents (4) + mask (1) + masked-picture latents (4).
INPAINTING_UNET_CHANNELS = 9

# A server logs; per-load progress bars would only clutter it.
diffusers.utils.logging.disable_progress_bar()
transformers.utils.logging.disable_progress_bar()


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise RenderInputError(f"{name} must be between {low:g} and {high:g}, got {value:g}")


def _check_seed(name: str, seed: int | None, allow_random: bool) -> None:
    if seed is None or (allow_random and seed == -1):
        return
    if not 0 <= seed <= MAX_SEED:
        random_hint = " (or -1 for a random seed)" if allow_random else ""
        raise RenderInputError(f"{name} must be between 0 and {MAX_SEED}{random_hint}, got {seed}")


def validate_request(request: RenderRequest) -> None:
    """Refuse a request with a message that names the problem and the accepted range."""
    for name, size in (("width", request.width), ("height", request.height)):
        if not MIN_SIZE <= size <= MAX_SIZE or size % SIZE_MULTIPLE:
            raise RenderInputError(
                f"{name} must be a multiple of {SIZE_MULTIPLE} between {MIN_SIZE} and "
                f"{MAX_SIZE}, got {size}"
            )
    _check_range("steps", request.steps, MIN_STEPS, MAX_STEPS)
    if request.steps != int(request.steps):
        raise RenderInputError(f"steps must be a whole number, got {request.steps}")
    _check_range("cfg scale", request.cfg_scale, MIN_CFG, MAX_CFG)
    _check_range("count", request.count, MIN_COUNT, MAX_COUNT)
    _check_seed("seed", request.seed, allow_random=True)
    _check_seed("variation seed", request.variation_seed, allow_random=True)
    _check_range("variation strength", request.variation_strength, 0.0, 1.0)
    _check_range("denoising strength", request.denoising_strength, 0.0, 1.0)
    canonical_sampler_name(request.sampler)
    if request.mode == "upscale":
        raise RenderInputError("mode 'upscale' is not supported by the engine yet")
    if request.mode in ("img2img", "inpaint") and not request.init_image:
        raise RenderInputError(f"{request.mode} needs an init image")
    if request.mode == "inpaint":
        if not request.mask_image:
            raise RenderInputError("inpaint needs a mask image (white = repaint)")
        InpaintOptions.from_options(request.options)


def _resolve_seed(seed: int | None) -> int:
    return secrets.randbelow(MAX_SEED + 1) if seed is None or seed == -1 else seed


@dataclass(frozen=True)
class ImageJob:
    """One picture of a (possibly batched) pipeline call."""

    prompt: str
    negative_prompt: str
    seed: int
    variation_seed: int | None
    variation_strength: float


PipelineTask = Literal["txt2img", "img2img", "inpaint"]
_TASK_PIPELINES = {"img2img": AutoPipelineForImage2Image, "inpaint": AutoPipelineForInpainting}


@dataclass
class LoadedModel:
    entry: ModelEntry
    pipeline: Any  # the diffusers Stable Diffusion (XL) pipeline the model loads as
    scheduler_config: dict[str, Any]
    short_hash: str
    task_pipelines: dict[str, Any] = field(default_factory=dict)

    @property
    def inpainting_unet(self) -> bool:
        return bool(self.pipeline.unet.config.in_channels == INPAINTING_UNET_CHANNELS)

    def pipeline_for(self, task: PipelineTask) -> Any:
        """The pipeline for ``task``, sharing this model's weights (made once, then kept)."""
        if task == "txt2img" or (task == "inpaint" and self.inpainting_unet):
            return self.pipeline
        if task not in self.task_pipelines:
            self.task_pipelines[task] = _TASK_PIPELINES[task].from_pipe(self.pipeline)
        return self.task_pipelines[task]


class Engine:
    """Renders requests on one device; not thread-safe by design (one thread per device)."""

    def __init__(
        self,
        models_dir: Path,
        device: str = "cpu",
        default_model: str | None = None,
        *,
        allow_pickle: bool = False,
        dtype: torch.dtype | None = None,
        max_loaded_models: int = 1,
    ) -> None:
        self.registry = ModelRegistry(models_dir, allow_pickle=allow_pickle)
        self.device = device
        self.default_model = default_model
        # Half precision halves GPU memory and time; CPUs are faster (and exact) in float32.
        self.dtype = dtype or (torch.float16 if device.startswith("cuda") else torch.float32)
        self.max_loaded_models = max_loaded_models
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()

    def list_models(self) -> list[str]:
        return self.registry.names()

    def render(
        self,
        request: RenderRequest,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[RenderedImage]:
        validate_request(request)
        entry = self.registry.resolve(request.model, self.default_model)
        jobs = _image_jobs(request)
        inputs = _load_inputs(request, jobs[0].seed)
        _raise_if_cancelled(cancel)
        model = self._load(entry)
        return self._run(model, request, jobs, inputs, progress, cancel)

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]:
        """Render compatible txt2img requests (equal ``batch_key()``) in one pipeline call.

        Each picture matches its solo render up to float rounding (see the tests' tolerance).
        Other modes carry per-request pictures and are rendered one request at a time.
        """
        if not requests:
            return []
        keys = {request.batch_key() for request in requests}
        if len(keys) > 1:
            raise RenderInputError(
                "a batch must share model, size, sampler, steps, cfg scale and mode; "
                f"got {len(keys)} different combinations"
            )
        total = sum(request.count for request in requests)
        if total > MAX_BATCH_IMAGES:
            raise RenderInputError(
                f"a batch may hold at most {MAX_BATCH_IMAGES} images, got {total}"
            )
        if requests[0].mode != "txt2img":
            return [self.render(request, progress, cancel) for request in requests]
        for request in requests:
            validate_request(request)
        entry = self.registry.resolve(requests[0].model, self.default_model)
        jobs_per_request = [_image_jobs(request) for request in requests]
        _raise_if_cancelled(cancel)
        model = self._load(entry)
        # Everything but the per-image prompts and seeds is shared, so the first request
        # stands for the batch.
        images = self._run(
            model,
            requests[0],
            [job for jobs in jobs_per_request for job in jobs],
            RenderInputs(),
            progress,
            cancel,
        )
        results: list[list[RenderedImage]] = []
        for jobs in jobs_per_request:
            results.append(images[: len(jobs)])
            images = images[len(jobs) :]
        return results

    def _load(self, entry: ModelEntry) -> LoadedModel:
        cached = self._loaded.get(entry.name)
        if cached is not None and cached.entry == entry:
            self._loaded.move_to_end(entry.name)
            return cached
        while len(self._loaded) >= self.max_loaded_models:
            self._loaded.popitem(last=False)
        pipeline = self._load_pipeline(entry)
        pipeline.to(self.device)
        pipeline.set_progress_bar_config(disable=True)
        loaded = LoadedModel(
            entry=entry,
            pipeline=pipeline,
            scheduler_config=dict(pipeline.scheduler.config),
            short_hash=self.registry.short_hash(entry),
        )
        self._loaded[entry.name] = loaded
        return loaded

    def _load_pipeline(self, entry: ModelEntry) -> Any:
        if entry.format != "diffusers":
            return load_single_file(entry, self.dtype)
        index = json.loads((entry.path / "model_index.json").read_text())
        no_safety_checker: dict[str, Any] = (
            {"safety_checker": None, "requires_safety_checker": False}
            if "safety_checker" in index
            else {}
        )
        return DiffusionPipeline.from_pretrained(
            entry.path, dtype=self.dtype, local_files_only=True, **no_safety_checker
        )

    def _run(
        self,
        model: LoadedModel,
        request: RenderRequest,
        jobs: Sequence[ImageJob],
        inputs: RenderInputs,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> list[RenderedImage]:
        task = _pipeline_task(request.mode, model.inpainting_unet)
        pipeline = model.pipeline_for(task)
        scheduler = make_scheduler(request.sampler, model.scheduler_config)
        pipeline.scheduler = scheduler
        scale = pipeline.vae_scale_factor
        latent_shape = (
            1,
            pipeline.vae.config.latent_channels,
            request.height // scale,
            request.width // scale,
        )
        noise = torch.cat(
            [
                initial_noise(job.seed, latent_shape, job.variation_seed, job.variation_strength)
                for job in jobs
            ]
        ).to(self.device, self.dtype)
        _use_noise_for_img2img(scheduler, noise)
        # The same per-image CPU generators also drive ancestral samplers' step noise.
        generators = [seeded_generator(job.seed) for job in jobs]
        arguments = _task_arguments(task, request, inputs, noise, len(jobs))
        started = time.monotonic()

        def on_step_end(
            pipe: Any, step_index: int, _timestep: Any, tensors: dict[str, Any]
        ) -> dict[str, Any]:
            if progress is not None:
                elapsed = time.monotonic() - started
                progress(StepProgress(step_index + 1, pipe.num_timesteps, elapsed))
            _raise_if_cancelled(cancel)
            return tensors

        with torch.inference_mode():
            images: list[Image.Image] = pipeline(
                prompt=[job.prompt for job in jobs],
                negative_prompt=[job.negative_prompt for job in jobs],
                num_inference_steps=request.steps,
                guidance_scale=request.cfg_scale,
                generator=generators,
                callback_on_step_end=on_step_end,
                output_type="pil",
                **arguments,
            ).images
        if inputs.canvas is not None:
            images = [inputs.canvas.composite(image) for image in images]
        return [
            self._rendered(model, request, job, image)
            for job, image in zip(jobs, images, strict=True)
        ]

    def _rendered(
        self, model: LoadedModel, request: RenderRequest, job: ImageJob, image: Image.Image
    ) -> RenderedImage:
        varied = job.variation_seed is not None and job.variation_strength > 0
        params: dict[str, object] = {
            "Steps": request.steps,
            "Sampler": canonical_sampler_name(request.sampler),
            "CFG scale": float(request.cfg_scale),
            "Seed": job.seed,
            "Size": f"{request.width}x{request.height}",
            "Model hash": model.short_hash,
            "Model": model.entry.name,
            "Variation seed": job.variation_seed if varied else None,
            "Variation seed strength": job.variation_strength if varied else None,
            "Denoising strength": request.denoising_strength if request.mode != "txt2img" else None,
            **_inpaint_infotext(request),
        }
        infotext = format_infotext(job.prompt, job.negative_prompt, params)
        return RenderedImage(
            png=png_with_infotext(image, infotext),
            seed=job.seed,
            infotext=infotext,
            width=image.width,
            height=image.height,
        )


def _image_jobs(request: RenderRequest) -> list[ImageJob]:
    """One job per picture: image i uses seed + i (and variation seed + i), as the web UI."""
    seed = _resolve_seed(request.seed)
    variation_seed = (
        None if request.variation_seed is None else _resolve_seed(request.variation_seed)
    )
    return [
        ImageJob(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            seed=seed + index,
            variation_seed=None if variation_seed is None else variation_seed + index,
            variation_strength=request.variation_strength,
        )
        for index in range(request.count)
    ]


@dataclass(frozen=True)
class RenderInputs:
    """Pictures a request brings, loaded and checked before the model is."""

    init: Image.Image | None = None
    canvas: InpaintCanvas | None = None


def _load_inputs(request: RenderRequest, seed: int) -> RenderInputs:
    size = (request.width, request.height)
    if request.mode == "img2img" and request.init_image:
        init = load_input_image(request.init_image, "init image")
        return RenderInputs(init=init.resize(size, Image.Resampling.LANCZOS))
    if request.mode == "inpaint" and request.init_image and request.mask_image:
        init = load_input_image(request.init_image, "init image")
        mask = load_input_image(request.mask_image, "mask image")
        options = InpaintOptions.from_options(request.options)
        return RenderInputs(canvas=inpaint_canvas(init, mask, size, options, seed))
    return RenderInputs()


def _pipeline_task(mode: str, inpainting_unet: bool) -> PipelineTask:
    # A 9-channel inpainting UNet cannot run without a mask: everything goes through inpaint.
    if inpainting_unet or mode == "inpaint":
        return "inpaint"
    return "img2img" if mode == "img2img" else "txt2img"


def _task_arguments(
    task: PipelineTask, request: RenderRequest, inputs: RenderInputs, noise: torch.Tensor,
    count: int,
) -> dict[str, Any]:
    size = {"width": request.width, "height": request.height}
    if task == "txt2img":
        return {**size, "latents": noise}
    if task == "img2img":
        return {"image": [inputs.init] * count, "strength": request.denoising_strength}
    if inputs.canvas is not None:
        image, mask = inputs.canvas.image, inputs.canvas.mask
        strength = request.denoising_strength
    else:  # an inpainting model asked for txt2img / img2img: repaint everything
        image = inputs.init or Image.new("RGB", (request.width, request.height), (127, 127, 127))
        mask = Image.new("L", image.size, 255)
        strength = request.denoising_strength if inputs.init else 1.0
    # At full strength the pipeline starts from ``latents`` instead of noising the picture.
    start = {"latents": noise} if strength == 1.0 else {}
    return {**size, **start, "image": [image] * count, "mask_image": [mask] * count,
            "strength": strength}


def _use_noise_for_img2img(scheduler: Any, noise: torch.Tensor) -> None:
    """Make the pipeline noise the init picture with our seeded noise, not its own draw.

    Diffusers' img2img and inpaint pipelines draw that noise internally; the scheduler is a
    fresh instance per render, so overriding its ``add_noise`` affects this render only.
    """
    add_noise = scheduler.add_noise

    def add_seeded_noise(
        original: torch.Tensor, _pipeline_noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        noised: torch.Tensor = add_noise(
            original, noise.to(original.device, original.dtype), timesteps
        )
        return noised

    scheduler.add_noise = add_seeded_noise


def _inpaint_infotext(request: RenderRequest) -> dict[str, object]:
    if request.mode != "inpaint":
        return {}
    options = InpaintOptions.from_options(request.options)
    return {
        "Mask blur": options.mask_blur,
        "Masked content": options.masked_content,
        "Inpaint area": "Only masked" if options.only_masked else None,
        "Masked area padding": options.padding if options.only_masked else None,
        "Mask mode": "Inpaint not masked" if options.invert else None,
    }


def _raise_if_cancelled(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise RenderCancelled("render cancelled")
