"""The txt2img pass and its hires fix (an upscaler, or a latent upscale, then an img2img pass
at the larger size). img2img, inpaint and outpaint run through the same group call, with the
pictures ``inference.passes.img2img`` loads for them."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from inference.img2img_steps import Img2ImgSteps
from inference.model_cache import LoadedModel
from inference.passes.denoise import (
    BlankRows,
    PassTools,
    longest_schedule,
    pipeline_task,
    scheduler_for,
    task_arguments,
)
from inference.passes.faces import each_picture, finish_faces
from inference.passes.img2img import RenderInputs, input_infotext
from inference.passes.jobs import ImageJob, PromptTimeline
from inference.passes.networks import JobNetworks
from inference.passes.output import base_params, call_steps, rendered
from inference.passes.refine import refining_for
from inference.progress import StepTracker, previewer_for, raise_if_cancelled
from inference.types import ProgressCallback, RenderedImage, RenderInputError, RenderRequest
from inference.upscale import LATENT_UPSCALERS, HiresOptions

# What a row set aside before the hires pass starts from (never delivered).
SET_ASIDE_GREY = (128, 128, 128)


def render_group(
    model: LoadedModel,
    request: RenderRequest,
    jobs: Sequence[ImageJob],
    inputs: RenderInputs,
    networks: JobNetworks,
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
    tools: PassTools,
    blank: BlankRows | None = None,
) -> list[RenderedImage]:
    """Render ``jobs`` (one LoRA set) in one pipeline call, plus the hires pass if asked;
    ``blank``: where pictures that decode blank are set aside (None: they fail the render)."""
    size = request.size()
    task = pipeline_task(request.mode, model.inpainting_unet)
    # Inpainting checkpoints render txt2img through the inpaint pipeline; hires fix too.
    txt2img = request.mode == "txt2img"
    hires = HiresOptions.from_options(request.options, *size) if txt2img else None
    hires_steps = hires.pass_steps(request.steps) if hires else 0
    # Validation keeps a refiner to txt2img without hires fix.
    refining = refining_for(request, model, tools) if txt2img else None
    later_steps = refining.later_steps(request.steps) if refining else hires_steps
    tracker = StepTracker(progress, cancel, tools.preview_interval_s, later_steps=later_steps)
    tracker.previewer = previewer_for(model, progress, tools.preview_interval_s)
    init_images = None if inputs.init is None else [inputs.init] * len(jobs)
    arguments = task_arguments(
        task, size, request.denoising_strength, init_images, inputs.canvas, len(jobs)
    ).running(Img2ImgSteps.img2img(request.steps, request.denoising_strength))
    # HiresOptions gives latent upscalers their web UI spelling.
    latent = hires.upscaler if hires and hires.upscaler in LATENT_UPSCALERS else None
    if latent is not None and model.inpainting_unet:
        raise RenderInputError(
            f"the {latent} hires upscaler needs an ordinary checkpoint; "
            f"{model.entry.name} is an inpainting model: choose Lanczos or a model upscaler"
        )
    if refining is not None:
        arguments = refining.base_arguments(arguments)
    controls = tools.denoise.controls_for(request, model, tools.registry)
    image_prompt = tools.denoise.image_prompt_for(request, model, tools.registry)
    first_pass = tools.denoise(
        model,
        task,
        request,
        jobs,
        size,
        request.steps,
        arguments,
        tracker,
        networks,
        output_type="pil" if latent is None and refining is None else "latent",
        controls=controls,
        image_prompt=image_prompt,
        blank=blank,
    )
    if refining is not None:
        first_pass = refining.finish(
            request, jobs, size, first_pass, tracker, networks, tools, blank
        )
    images: list[Image.Image] = first_pass
    params: dict[str, object] = {}
    # Every picture blank (never delivered, each job fails): no later pass.
    if hires is not None and not (blank is not None and blank.all_of(len(jobs))):
        # A stop during the first pass's decode: not the enlarge, encode and a hires step.
        raise_if_cancelled(cancel)
        start: list[Image.Image] | torch.Tensor | None
        if latent is not None:
            scale = model.pipeline.vae_scale_factor
            start, upscaler = resized_latents(first_pass, hires.size, scale, latent), latent
        else:
            resolved = tools.registry.resolve_upscaler(hires.upscaler)
            start = enlarged_for_hires(images, hires.size, resolved, tools, cancel, blank)
            upscaler = resolved[0]
        if start is not None:  # None: the upscaler blanked every picture left
            hires_task = pipeline_task("img2img", model.inpainting_unet)
            tracker.later_steps = 0
            # As the web UI's: exactly the hires steps, at the end of a longer schedule.
            sampler = scheduler_for(request, model)
            schedule = Img2ImgSteps.hires(hires_steps, hires.denoising, longest_schedule(sampler))
            arguments = task_arguments(
                hires_task, hires.size, hires.denoising, start, None, len(jobs)
            ).running(schedule)
            images = tools.denoise(
                model,
                hires_task,
                request,
                jobs,
                hires.size,
                schedule.schedule,
                arguments,
                tracker,
                networks,
                controls=controls,
                image_prompt=image_prompt,
                scheduler=sampler,
                # The web UI's: the prompt's edits go on from the first pass's steps.
                timeline=PromptTimeline(hires_steps, first_pass_steps=request.steps),
                blank=blank,
            )
            params = hires.infotext(upscaler)
    if inputs.canvas is not None:
        images = [inputs.canvas.composite(image) for image in images]
    if request.mode != "txt2img":
        params = input_infotext(request)
    if controls is not None:
        params |= controls.infotext()
    if image_prompt is not None:
        params |= image_prompt.infotext()
    if refining is not None:
        params |= refining.infotext()
    images, face_params = finish_faces(
        model, request, jobs, images, networks, tracker, tools, blank
    )
    params |= face_params
    warned = [networks.with_warnings(job) for job in jobs]  # the infotext says them
    made = [
        rendered(
            tools.encoder,
            job,
            image,
            {**base_params(model, request, job, size), **networks.params(job), **params},
        )
        for job, image in zip(warned, images, strict=True)
    ]
    return call_steps(made, tracker)


def enlarged_for_hires(
    images: list[Image.Image],
    size: tuple[int, int],
    upscaler: tuple[str, Path | None],
    tools: PassTools,
    cancel: threading.Event | None,
    blank: BlankRows | None,
) -> list[Image.Image] | None:
    """Each of ``images`` enlarged to the hires pass's ``size`` by ``upscaler`` (as
    ``resolve_upscaler`` gives it). A model upscaler's blank output for one of them sets
    that row aside in ``blank``, as the faces pass does (its job fails alone, its partners'
    go on; None: it fails the render); a row set aside is a grey stand-in of that size, never
    delivered, for the hires call's rows are one call. None when every row is set aside:
    no hires pass then, on stand-ins alone."""
    enlarged = each_picture(
        images, lambda _, image: tools.models.enlarge(image, size, upscaler, cancel), blank
    )
    if blank is not None and blank.all_of(len(images)):
        return None
    set_aside = set() if blank is None else blank.rows
    return [
        Image.new("RGB", size, SET_ASIDE_GREY) if row in set_aside else image
        for row, image in enumerate(enlarged)
    ]


def resized_latents(
    latents: torch.Tensor, size: tuple[int, int], vae_scale: int, upscaler: str
) -> torch.Tensor:
    """The latent hires upscalers: latents interpolated to the latent size of ``size``."""
    mode, antialias = LATENT_UPSCALERS[upscaler]
    latent_size = (size[1] // vae_scale, size[0] // vae_scale)
    # In float32: antialiased resizing has no half-precision kernel on every device.
    resized = torch.nn.functional.interpolate(
        latents.float(), size=latent_size, mode=mode, antialias=antialias
    )
    return resized.to(latents.dtype)
