"""One denoising pipeline call, shared by every pass: each picture's seeded CPU noise, the
prompt guidance, fast mode's DeepCache, the VAE override and tiling; and the arguments each
pipeline task (txt2img, img2img, inpaint) takes, with inpainting's latent fill."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from inference.conditioning import PromptEncoder
from inference.controlnet import ControlNetCache, Controls
from inference.fast import DeepCache, FastPreset, fast_preset
from inference.guidance import PromptGuidance, StepCallback
from inference.images import InpaintCanvas
from inference.img2img_steps import Img2ImgSteps
from inference.ip_adapter import ImagePromptCache, ImagePrompting
from inference.model_cache import LoadedModel, ModelCache, PipelineTask
from inference.noise import initial_noise_and_generator, seeded_generator, step_noise_drawn_ahead
from inference.passes.jobs import ImageJob, PromptTimeline, clip_skip_of, pad_conds
from inference.passes.networks import JobNetworks
from inference.progress import StepTracker
from inference.prompts import WildcardLibrary
from inference.registry import ModelRegistry
from inference.samplers import calls_per_step, make_scheduler
from inference.tiling import seamless
from inference.types import BlankPicture, RenderRequest


@contextmanager
def vae_in_use(pipeline: Any, vae: Any | None) -> Iterator[None]:
    """``vae`` decodes (and encodes) for this call; the model's own VAE comes back after."""
    if vae is None:
        yield
        return
    original = pipeline.vae
    pipeline.vae = vae
    try:
        yield
    finally:
        pipeline.vae = original


class _PosteriorMean:
    """A VAE posterior whose sample is its mean (the rest: the posterior's own)."""

    def __init__(self, posterior: Any) -> None:
        self.posterior = posterior

    def __getattr__(self, name: str) -> Any:
        return getattr(self.posterior, name)

    def sample(self, generator: Any = None) -> torch.Tensor:
        mean: torch.Tensor = self.posterior.mode()
        return mean

    mode = sample


@contextmanager
def encoding_to_the_mean(pipeline: Any) -> Iterator[None]:
    """For this call the pipeline's VAE encodes a picture to its posterior's mean. The web UI
    samples the posterior from its unseeded global RNG, which on a trained VAE (a posterior
    far narrower than a latent's step) is its mean; diffusers' draw would also take numbers
    from the pictures' generators that the web UI keeps for the ancestral steps."""
    vae = pipeline.vae
    encode = vae.encode

    def encode_to_mean(*args: Any, **kwargs: Any) -> Any:
        output = encode(*args, **kwargs)
        return dataclasses.replace(output, latent_dist=_PosteriorMean(output.latent_dist))

    vae.encode = encode_to_mean
    try:
        yield
    finally:
        del vae.encode  # the class's own again


@contextmanager
def noising_the_picture(pipeline: Any) -> Iterator[None]:
    """For this call an inpaint pipeline at strength 1 starts from the picture noised at the
    schedule's largest sigma, as the web UI's img2img does, not from pure noise (diffusers'
    reading of strength 1, which would drop the picture)."""

    prepare_latents = pipeline.prepare_latents

    def prepare_from_the_picture(*args: Any, **kwargs: Any) -> Any:
        return prepare_latents(*args, **{**kwargs, "is_strength_max": False})

    pipeline.prepare_latents = prepare_from_the_picture
    try:
        yield
    finally:
        del pipeline.prepare_latents  # the class's own again


class BlankRows:
    """The rows of a batch's pipeline calls (its pictures, in the order of its jobs) that
    came out blank, set aside: decoded as grey (or left as they were), so that the call's
    other pictures, other members' jobs, go on to be delivered; their own jobs fail
    (``Engine.render_batch``). The faces pass skips them, and a call whose every row is set
    aside runs no later pass (``all_of``); a partly blank call's hires pass still works on
    every row, its rows being one call."""

    def __init__(self) -> None:
        self.rows: set[int] = set()
        # Rows set aside by a later pass with why (a face restorer's blank output): their
        # jobs are told that, not the first pass's reasons.
        self.failures: dict[int, BlankPicture] = {}

    def set_aside(self, row: int, failure: BlankPicture) -> None:
        self.rows.add(row)
        self.failures[row] = failure

    def all_of(self, rows: int) -> bool:
        """Whether every one of a call's ``rows`` is set aside: its later passes are skipped."""
        return len(self.rows) == rows


@contextmanager
def vae_decoding(
    pipeline: Any,
    jobs: Sequence[ImageJob],
    dtype: torch.dtype,
    tiled: bool = False,
    blank: BlankRows | None = None,
) -> Iterator[None]:
    """For this call the pipeline's VAE decodes (and encodes) a batch one picture at a time,
    in tiles when ``tiled``. A batch's peak is then one picture's: on the CPU a 2x2 grid at
    512x512 peaked at a third, in the same time (docs/performance.md); pictures within 1/255
    of a batched decode. A decode to values that are not numbers (the pictures of ``jobs``,
    in order, run at ``dtype``) would deliver black: those rows go to ``blank`` (the call's
    rows being ``jobs``), else the call fails (``blank_pictures``)."""
    vae = pipeline.vae
    decode = vae.decode

    def decode_checked(*args: Any, **kwargs: Any) -> Any:
        output = decode(*args, **kwargs)
        finite = torch.isfinite(output[0]).flatten(1).all(dim=1).tolist()
        if all(finite):
            return output
        rows = [row for row, ok in enumerate(finite) if not ok]
        if blank is None or len(finite) != len(jobs):
            named = [jobs[row] for row in rows] if len(finite) == len(jobs) else jobs
            raise blank_pictures(named, dtype)
        blank.rows.update(rows)
        output[0][rows] = 0  # grey, never delivered: no not-a-number reaches the PNG encoder
        return output

    vae.decode = decode_checked
    vae.enable_slicing()
    if tiled:
        vae.enable_tiling()
    try:
        yield
    finally:
        del vae.decode  # the class's own again
        vae.disable_slicing()
        if tiled:
            vae.disable_tiling()


def blank_pictures(jobs: Sequence[ImageJob], dtype: torch.dtype) -> BlankPicture:
    """What the member of ``jobs``, whose pictures decoded to not-a-number or infinite values,
    is told: the add-ons they use, which may be broken (finite weights that overflow: those that are
    not finite are skipped as they load, ``inference.networks``), and whether half precision
    may have overflowed (only where the model runs in it)."""
    addons = dict.fromkeys(
        [f"LoRA {lora.name}" for job in jobs for lora in job.loras]
        + [f"embedding {name}" for job in jobs for name in job.embeddings]
    )
    half = dtype == torch.float16
    if addons:
        cause = f"a LoRA or embedding it uses may be broken ({', '.join(addons)})"
        cause += ", or the model may have overflowed in half precision" if half else ""
        cause += "; try without them"
    elif half:
        cause = "the model may have overflowed in half precision (float16), or it is broken; "
        cause += "ask an admin"
    else:
        cause = "the model or its VAE may be broken; ask an admin to check them"
    return BlankPicture(f"a picture came out blank (not-a-number or infinite values): {cause}")


def stopping_early(request: RenderRequest, then: StepCallback) -> StepCallback:
    """``--stop N``: after N% of the pass's UNet iterations the pipeline skips the rest and
    decodes what it has (as Midjourney's ``--stop``: softer, less finished pictures)."""
    stop = request.options.get("stop")
    if stop is None:
        return then

    def on_step_end(
        pipeline: Any, iteration: int, timestep: Any, tensors: dict[str, Any]
    ) -> dict[str, Any]:
        result = then(pipeline, iteration, timestep, tensors)
        if iteration + 1 >= max(1, math.ceil(pipeline.num_timesteps * stop / 100)):
            pipeline._interrupt = True  # diffusers skips the remaining iterations
        return result

    return on_step_end


@dataclass(frozen=True)
class Denoiser:
    """The pipeline calls of one engine: its device and dtype, wildcards, and the picture
    size (width x height; ``None``: never) above which the VAE decodes in tiles."""

    device: str
    dtype: torch.dtype
    wildcards: WildcardLibrary | None
    vae_tiling_pixels: int | None
    controlnets: ControlNetCache = field(default_factory=ControlNetCache)
    image_prompts: ImagePromptCache = field(default_factory=ImagePromptCache)

    def controls_for(
        self, request: RenderRequest, model: LoadedModel, registry: ModelRegistry
    ) -> Controls | None:
        """The ControlNets ``request`` asks for, loaded for ``model`` (None: no ControlNet)."""
        return self.controlnets.controls(request, model.pipeline, registry, self.device, self.dtype)

    def image_prompt_for(
        self, request: RenderRequest, model: LoadedModel, registry: ModelRegistry
    ) -> ImagePrompting | None:
        """The IP-Adapter image prompt ``request`` asks for (None: it has none)."""
        return self.image_prompts.prompting(
            request, model.pipeline, registry, self.device, self.dtype
        )

    def __call__(
        self,
        model: LoadedModel,
        task: PipelineTask,
        request: RenderRequest,
        jobs: Sequence[ImageJob],
        size: tuple[int, int],
        steps: int,
        arguments: TaskArguments,
        tracker: StepTracker,
        networks: JobNetworks,
        output_type: Literal["pil", "latent"] = "pil",
        controls: Controls | None = None,
        image_prompt: ImagePrompting | None = None,
        scheduler: Any | None = None,
        timeline: PromptTimeline | None = None,
        blank: BlankRows | None = None,
    ) -> Any:
        """One pipeline call: every picture starts from its own seeded CPU noise. Returns the
        pictures, or with ``output_type="latent"`` the final latents (no VAE decode).
        ``controls``: the ControlNets that guide it; ``image_prompt``: its IP-Adapter;
        ``scheduler``: the request's sampler, when the pass built it already (a fresh one);
        ``timeline``: the steps its prompts are planned over (None: ``steps``, the schedule,
        of which a pass from a picture runs the last); ``blank``: where pictures that decode
        blank are set aside (None: they fail the call)."""
        if timeline is None:
            timeline = PromptTimeline(steps)
        pipeline = model.pipeline_for(task)
        if scheduler is None:
            scheduler = scheduler_for(request, model)
        pipeline.scheduler = scheduler
        scale = pipeline.vae_scale_factor
        latent_shape = (1, pipeline.vae.config.latent_channels, size[1] // scale, size[0] // scale)
        # Each picture's generator, left where its initial noise ends, drives ancestral
        # samplers' step noise (drawn once, not a second time to move the generator on).
        drawn = [
            initial_noise_and_generator(
                job.seed, latent_shape, job.variation_seed, job.variation_strength
            )
            for job in jobs
        ]
        noise = torch.cat([picture for picture, _ in drawn]).to(self.device, self.dtype)
        generators = [generator for _, generator in drawn]
        # A pipeline noising a picture draws a noise of its own (ours replaces it) before the
        # steps: from other generators, so that each picture's goes on from its initial noise
        # to the ancestral steps, as the web UI's does.
        asked_with = (
            generators
            if arguments.starts_from_noise
            else [seeded_generator(job.seed) for job in jobs]
        )
        use_noise_for_img2img(scheduler, noise, arguments.latent_fill)
        seed_brownian_noise(scheduler, jobs)
        start = {"latents": noise} if arguments.starts_from_noise else {}
        tracker.begin_pass()
        with torch.inference_mode():
            # Prompts are encoded here (web UI syntax, schedules, AND), not by the pipeline.
            guidance = PromptGuidance(
                PromptEncoder(pipeline, clip_skip_of(request)),
                lambda: [
                    networks.tokens.of(job.embeddings).plan(
                        job.plan(
                            timeline.steps,
                            self.wildcards,
                            timeline.first_pass_steps,
                            calls_per_step(request.sampler, request.schedule_type),
                        )
                    )
                    for job in jobs
                ],
                pad_conds=pad_conds(request),
                control=None if controls is None else controls.residuals,
                image_tokens=None if image_prompt is None else image_prompt.tokens,
                finishes_schedule=timeline.finishes_schedule,
            )
            tiled = self.vae_tiling_pixels is not None and (
                size[0] * size[1] > self.vae_tiling_pixels
            )
            # The cache wraps the real UNet, so it goes on before the guidance's stand-in.
            # Not with a ControlNet or an image prompt: skipped UNet blocks would drop their
            # residuals or image tokens.
            use_cache = (
                request.fast
                and fast_preset_for(model, request) is None
                and controls is None
                and image_prompt is None
            )
            with (
                # First, while pipeline.unet is the real UNet; the VAE that will decode.
                seamless(
                    bool(request.options.get("tile")), pipeline.unet, networks.vae or pipeline.vae
                ),
                step_noise_drawn_ahead(
                    scheduler, generators, arguments.steps_run or steps, asked_with
                ),
                # On the real UNet, before any stand-in wraps it.
                image_prompt.installed(pipeline.unet) if image_prompt else nullcontext(),
                DeepCache(pipeline.unet).installed() if use_cache else nullcontext(),
                guidance.installed(pipeline),
                vae_in_use(pipeline, networks.vae),
                encoding_to_the_mean(pipeline),
                (
                    noising_the_picture(pipeline)
                    if arguments.noises_picture_at_full_strength
                    else nullcontext()
                ),
                vae_decoding(pipeline, jobs, self.dtype, tiled, blank),
            ):
                images = pipeline(
                    **guidance.pipeline_arguments(len(jobs)),
                    num_inference_steps=steps,
                    guidance_scale=request.cfg_scale,
                    generator=asked_with,
                    callback_on_step_end=stopping_early(
                        request, guidance.step_callback(tracker.on_step_end)
                    ),
                    output_type=output_type,
                    **arguments.values,
                    **start,
                ).images
        return images


@dataclass(frozen=True)
class PassTools:
    """What every pass of one engine uses: its pipeline calls, model cache and registry, the
    pool encoding its PNGs, and how often progress reports carry a preview."""

    denoise: Denoiser
    models: ModelCache
    registry: ModelRegistry
    encoder: Executor
    preview_interval_s: float | None


def scheduler_for(request: RenderRequest, model: LoadedModel) -> Any:
    """A fresh scheduler for the request's sampler on ``model``. Plain LCM is the web UI's,
    except on a model distilled as an LCM (a word of its name or its scheduler says so, as
    for the fast preset), where it is the model's own: diffusers' LCM."""
    preset = fast_preset(model.entry.name, model.scheduler_config)
    return make_scheduler(
        request.sampler,
        model.scheduler_config,
        request.schedule_type,
        distilled_lcm=preset is not None and preset.family == "LCM",
    )


def fast_preset_for(model: LoadedModel, request: RenderRequest) -> FastPreset | None:
    """The few-step recipe a fast request gets on this model, if the model has one."""
    if not request.fast:
        return None
    return fast_preset(model.entry.name, model.scheduler_config)


def pipeline_task(mode: str, inpainting_unet: bool) -> PipelineTask:
    # A 9-channel inpainting UNet cannot run without a mask: everything goes through inpaint.
    if inpainting_unet or mode == "inpaint":
        return "inpaint"
    return "img2img" if mode == "img2img" else "txt2img"


def longest_schedule(scheduler: Any) -> int:
    """The most steps ``scheduler`` lays out: an LCM's original steps (50), any other's
    training timesteps (diffusers refuses more)."""
    config = scheduler.config
    return int(config.get("original_inference_steps") or config["num_train_timesteps"])


@dataclass(frozen=True)
class TaskArguments:
    values: dict[str, Any]
    # At full strength the pipeline starts from our noise as ``latents`` instead of noising
    # the picture.
    starts_from_noise: bool
    latent_fill: LatentFill | None = None
    # The steps that run, when fewer than the schedule's (how much step noise to draw ahead).
    steps_run: int | None = None
    # An inpaint that runs the whole schedule from the picture noised at the largest sigma.
    noises_picture_at_full_strength: bool = False

    def running(self, steps: Img2ImgSteps) -> TaskArguments:
        """These arguments with the strength that runs ``steps`` (a pass from noise keeps
        its own). Inpaint pipelines take strength 1 to mean "from pure noise"; the web UI
        noises the picture at the largest sigma even at denoising 1, and so does Easel."""
        if self.starts_from_noise:
            return self
        strength = steps.strength
        return dataclasses.replace(
            self,
            values={**self.values, "strength": strength},
            steps_run=steps.run,
            noises_picture_at_full_strength="mask_image" in self.values and strength == 1.0,
        )


def task_arguments(
    task: PipelineTask,
    size: tuple[int, int],
    strength: float,
    init_images: list[Image.Image] | torch.Tensor | None,
    canvas: InpaintCanvas | None,
    count: int,
) -> TaskArguments:
    dimensions = {"width": size[0], "height": size[1]}
    if task == "txt2img":
        return TaskArguments(dimensions, starts_from_noise=True)
    if task == "img2img":
        return TaskArguments({"image": init_images, "strength": strength}, False)
    if canvas is not None:
        images, masks = [canvas.image] * count, [canvas.mask] * count
    else:  # an inpainting model asked for txt2img / img2img: repaint everything
        assert not isinstance(init_images, torch.Tensor)  # latent hires refuses these models
        images = init_images or [Image.new("RGB", size, (127, 127, 127))] * count
        masks = [Image.new("L", size, 255)] * count
    # Only a txt2img (no picture to keep) starts from pure noise.
    from_noise = canvas is None and not init_images
    strength = 1.0 if from_noise else strength
    values = {**dimensions, "image": images, "mask_image": masks, "strength": strength}
    fill = None
    if canvas is not None and canvas.latent_fill is not None:
        fill = LatentFill(canvas.latent_fill, canvas.mask)
    return TaskArguments(values, starts_from_noise=from_noise, latent_fill=fill)


@dataclass(frozen=True)
class LatentFill:
    """Inpainting's "latent noise" / "latent nothing": the encoded picture's latents under
    the mask replaced by the picture's own seeded noise or by zeros, blended by the (blurred)
    mask at latent size, before they are noised to the first step, as the web UI does."""

    kind: str
    mask: Image.Image  # at render size, white = filled

    def apply(self, latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        height, width = latents.shape[-2:]
        small = self.mask.convert("L").resize((width, height), Image.Resampling.BILINEAR)
        weight = torch.from_numpy(np.asarray(small, dtype=np.float32) / 255).to(latents)
        if self.kind == "latent noise":
            replacement = noise.to(latents)
        else:
            replacement = torch.zeros_like(latents)
        return latents * (1 - weight) + replacement * weight


def use_noise_for_img2img(
    scheduler: Any, noise: torch.Tensor, fill: LatentFill | None = None
) -> None:
    """Make the pipeline noise the init picture with our seeded noise, not its own draw
    (after ``fill`` replaced its masked latents, when given).

    Diffusers' img2img and inpaint pipelines draw that noise internally; the scheduler is a
    fresh instance per render, so overriding its ``add_noise`` affects this render only.
    The inpaint pipelines also re-noise the encoded picture at every step to keep what lies
    outside the mask; the fill only touches what lies inside.
    """
    add_noise = scheduler.add_noise

    def add_seeded_noise(
        original: torch.Tensor, _pipeline_noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        if fill is not None:
            original = fill.apply(original, noise)
        noised: torch.Tensor = add_noise(
            original, noise.to(original.device, original.dtype), timesteps
        )
        return noised

    scheduler.add_noise = add_seeded_noise


def seed_brownian_noise(scheduler: Any, jobs: Sequence[ImageJob]) -> None:
    """DPM++ SDE draws its noise from a Brownian tree; one tree per picture, seeded with the
    picture's seed as the web UI does, keeps a picture the same whether batched or alone."""
    if hasattr(scheduler, "noise_sampler_seed"):
        scheduler.noise_sampler_seed = [job.seed for job in jobs]
