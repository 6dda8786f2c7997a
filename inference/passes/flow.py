"""The flow-matching pass (SD3/SD3.5, Flux dev and schnell): txt2img with its hires fix (an
img2img second pass), img2img and inpaint through the family's own diffusers pipelines.

As for SD, every picture starts from its own seeded CPU noise (drawn in the unpacked
``[16, H/8, W/8]`` shape, then packed for Flux), so a seed gives the same picture alone or
batched; variation seeds blend two noises; progress, previews and cancel run at every step.
Prompts are plain text (``inference.flow_families.flow_prompt``); LoRAs go in through
diffusers' ``load_lora_weights`` (which reads Kohya and BFL layouts) and out after the call.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from inference.family_rules import check_flow_request, flow_sampler
from inference.flow_families import FlowFamily, flow_prompt, make_flow_scheduler
from inference.infotext import CFG_SCALE, DISTILLED_CFG_SCALE
from inference.model_cache import LoadedModel, PipelineTask
from inference.networks import AppliedNetworks, broken_lora, lora_not_loadable
from inference.noise import initial_noise, seeded_generator
from inference.passes.denoise import (
    BlankRows,
    LatentFill,
    PassTools,
    stopping_early,
    vae_decoding,
    vae_in_use,
)
from inference.passes.img2img import RenderInputs, input_infotext
from inference.passes.jobs import ImageJob
from inference.passes.networks import hash_list, short_hashes, vae_params
from inference.passes.output import base_params, call_steps, rendered
from inference.passes.txt2img import enlarged_for_hires
from inference.progress import StepTracker, previewer_for, raise_if_cancelled
from inference.prompts import ExtraNetwork
from inference.registry import NO_LONGER_INSTALLED
from inference.types import ProgressCallback, RenderedImage, RenderInputError, RenderRequest
from inference.upscale import LATENT_UPSCALERS, HiresOptions
from inference.vae_files import vae_file

log = logging.getLogger(__name__)

# Both families cut the latents into 2x2 patches (Flux packs them, the MMDiT embeds them):
# sides must divide by 8 x 2.
SIDE_MULTIPLE = 16


@dataclass(frozen=True)
class FlowCall:
    """What every pipeline call of one group shares: the family, plain prompts, the pass's
    progress tracker and the tools."""

    model: LoadedModel
    family: FlowFamily
    request: RenderRequest
    jobs: Sequence[ImageJob]
    prompts: list[tuple[str, str]]
    tracker: StepTracker
    tools: PassTools
    # Where pictures that decode blank are set aside (None: they fail the render).
    blank: BlankRows | None = None

    def __call__(
        self,
        task: PipelineTask,
        size: tuple[int, int],
        steps: int,
        images: Sequence[Image.Image] | None = None,
        strength: float = 1.0,
        mask: Image.Image | None = None,
        fill: LatentFill | None = None,
    ) -> list[Image.Image]:
        """One pipeline call; each picture starts from its own seeded CPU noise."""
        denoiser, request, count = self.tools.denoise, self.request, len(self.jobs)
        pipeline = self.model.pipeline_for(task)
        scheduler = make_flow_scheduler(
            request.sampler, self.model.scheduler_config, request.schedule_type
        )
        pipeline.scheduler = scheduler
        scale = pipeline.vae_scale_factor
        height, width = size[1] // scale, size[0] // scale
        shape = (1, pipeline.vae.config.latent_channels, height, width)
        noise = torch.cat(
            [
                initial_noise(job.seed, shape, job.variation_seed, job.variation_strength)
                for job in self.jobs
            ]
        ).to(denoiser.device, denoiser.dtype)
        packs = hasattr(pipeline, "_pack_latents")
        use_seeded_noise(scheduler, noise, fill, packed=packs)
        arguments: dict[str, Any] = {"width": size[0], "height": size[1]}
        if images is not None:
            arguments |= {"image": list(images), "strength": strength}
        if mask is not None:
            arguments["mask_image"] = [mask] * count
        if task == "txt2img":
            arguments["latents"] = (
                pipeline._pack_latents(noise, count, shape[1], height, width) if packs else noise
            )
        elif strength == 1.0 and task == "inpaint":
            arguments["latents"] = noise  # the inpaint pipelines take unpacked noise
        if self.family.guidance == "cfg":
            arguments["negative_prompt"] = [negative for _, negative in self.prompts]
        self.tracker.begin_pass()
        with (
            torch.inference_mode(),
            vae_decoding(pipeline, self.jobs, denoiser.dtype, blank=self.blank),
        ):
            result = pipeline(
                prompt=[positive for positive, _ in self.prompts],
                num_inference_steps=steps,
                guidance_scale=float(request.cfg_scale) if self.family.guidance != "none" else 0,
                generator=[seeded_generator(job.seed) for job in self.jobs],
                max_sequence_length=self.family.max_sequence_length,
                callback_on_step_end=stopping_early(
                    request, unpacked_for(self.tracker, pipeline, size)
                ),
                **arguments,
            )
        return list(result.images)


def render_flow_group(
    model: LoadedModel,
    family: FlowFamily,
    request: RenderRequest,
    jobs: Sequence[ImageJob],
    inputs: RenderInputs,
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
    tools: PassTools,
    blank: BlankRows | None = None,
) -> list[RenderedImage]:
    """Render ``jobs`` (one LoRA set) in one pipeline call, plus the hires pass if asked;
    ``blank``: where pictures that decode blank are set aside (None: they fail the render)."""
    check_flow_request(family.label, request)
    if request.mode != "txt2img":
        check_some_step_runs(family, request.steps, request.denoising_strength)
    sampler, sampler_note = flow_sampler(family.label, request.sampler)
    request = dataclasses.replace(request, sampler=sampler)  # the infotext says what ran
    # These families take no textual inversion: an embedding's name is plain words here.
    jobs = [dataclasses.replace(job, embeddings=()) for job in jobs]
    size = request.size()
    check_size(family, size)
    txt2img = request.mode == "txt2img"
    hires = HiresOptions.from_options(request.options, *size) if txt2img else None
    if hires is not None:
        check_size(family, hires.size)
    if hires is not None and hires.upscaler in LATENT_UPSCALERS:
        raise RenderInputError(
            f"the {hires.upscaler} hires upscaler works on SD latents; with {family.label} "
            "choose Lanczos or a model upscaler"
        )
    hires_steps = hires.pass_steps(request.steps) if hires else 0
    tracker = StepTracker(progress, cancel, tools.preview_interval_s, later_steps=hires_steps)
    tracker.previewer = previewer_for(model, progress, tools.preview_interval_s)
    read = [flow_prompt(job.plan(request.steps, tools.denoise.wildcards), family) for job in jobs]
    notes = tuple(note for note in (sampler_note,) if note)
    jobs = [
        dataclasses.replace(job, warnings=(*job.warnings, *notes, *warnings))
        for job, (_, _, warnings) in zip(jobs, read, strict=True)
    ]
    call = FlowCall(
        model,
        family,
        request,
        jobs,
        [(positive, negative) for positive, negative, _ in read],
        tracker,
        tools,
        blank,
    )
    lora_files = tools.registry.network_files("lora")
    vae_path = vae_file(tools.registry, request, model.pipeline.vae.config.latent_channels)
    override = None if vae_path is None else tools.models.vae_for(model, vae_path)
    params: dict[str, object] = {}
    with (
        flow_loras(model.pipeline, jobs[0].loras, lora_files) as loras,
        vae_in_use(model.pipeline, None if override is None else override.vae),
    ):
        canvas = inputs.canvas
        if canvas is not None:
            fill = (
                None if canvas.latent_fill is None else LatentFill(canvas.latent_fill, canvas.mask)
            )
            strength = request.denoising_strength
            images = call(
                "inpaint",
                size,
                request.steps,
                [canvas.image] * len(jobs),
                strength,
                canvas.mask,
                fill,
            )
        elif inputs.init is not None:
            images = call(
                "img2img",
                size,
                request.steps,
                [inputs.init] * len(jobs),
                request.denoising_strength,
            )
        else:
            images = call("txt2img", size, request.steps)
        if hires is not None:
            # A stop during the first pass's decode: not the enlarge, encode and a hires step.
            raise_if_cancelled(cancel)
            resolved = tools.registry.resolve_upscaler(hires.upscaler)
            start = enlarged_for_hires(images, hires.size, resolved, tools, cancel, blank)
            if start is not None:  # None: every picture blank (each job fails)
                tracker.later_steps = 0
                images = call("img2img", hires.size, hires_steps, start, hires.denoising)
                params = hires.infotext(resolved[0])
    if canvas is not None:
        images = [canvas.composite(image) for image in images]
    if not txt2img:
        params = input_infotext(request)
    params["Lora hashes"] = hash_list(
        short_hashes(tools.registry, loras.names, lora_files, tensor_data=True)
    )
    params |= vae_params(override)
    if family.guidance != "cfg":
        # Flux runs no true CFG (Forge's text for it: CFG scale 1); dev's CFG is its guidance.
        params[CFG_SCALE] = 1.0
    if family.guidance == "distilled":
        params[DISTILLED_CFG_SCALE] = float(request.cfg_scale)
    # Every picture of the call applied the same LoRAs (``Engine._run`` groups by them).
    jobs = [dataclasses.replace(job, warnings=(*job.warnings, *loras.warnings)) for job in jobs]
    made = [
        rendered(
            tools.encoder,
            job,
            image,
            {**base_params(model, request, job, size), **params},
        )
        for job, image in zip(jobs, images, strict=True)
    ]
    return call_steps(made, tracker)


def check_some_step_runs(family: FlowFamily, steps: int, strength: float) -> None:
    """Diffusers' flow-matching img2img and inpaint run the last ``steps - int(steps - steps x
    strength)`` steps: one below 1/steps too, but none at 0 or where ``steps x strength`` is
    lost in the subtraction (1e-17 of 20 steps), where the SD families run one as the web UI
    does. Refused at render time (the family is known only then), so the job is refunded."""
    if steps - int(max(steps - min(steps * strength, steps), 0)) >= 1:
        return
    raise RenderInputError(
        f"{family.label} img2img runs no step at denoising strength {strength!r} of "
        f"{steps} steps: raise it to at least 1/{steps}"
    )


def check_size(family: FlowFamily, size: tuple[int, int]) -> None:
    if any(side % SIDE_MULTIPLE for side in size):
        raise RenderInputError(
            f"{family.label} models render sizes in multiples of {SIDE_MULTIPLE} pixels, "
            f"got {size[0]}x{size[1]}"
        )


def use_seeded_noise(
    scheduler: Any, noise: torch.Tensor, fill: LatentFill | None, packed: bool
) -> None:
    """img2img and inpaint noise the picture with our seeded noise, not their own draw:
    ``x_t = sigma * noise + (1 - sigma) * x_0`` with ``sigma = t / T``, as flow matching's
    ``scale_noise`` does (set on every scheduler, which DPM++ and UniPC lack). Flux inpaint
    re-noises its packed latents at every step with the same noise, packed."""
    train_steps = scheduler.config.num_train_timesteps

    def scale_noise(
        sample: torch.Tensor, timestep: torch.Tensor, pipeline_noise: torch.Tensor
    ) -> torch.Tensor:
        ours = noise.to(sample.device, sample.dtype)
        if packed and sample.dim() == 3:
            batch, channels, height, width = ours.shape
            ours = (
                ours.view(batch, channels, height // 2, 2, width // 2, 2)
                .permute(0, 2, 4, 1, 3, 5)
                .reshape(pipeline_noise.shape)
            )
        elif fill is not None:
            sample = fill.apply(sample, ours)
        sigma = (timestep.to(sample.device, torch.float32) / train_steps).to(sample.dtype)
        sigma = sigma.reshape(-1, *[1] * (sample.dim() - 1))
        noised: torch.Tensor = sigma * ours + (1 - sigma) * sample
        return noised

    scheduler.scale_noise = scale_noise


def unpacked_for(tracker: StepTracker, pipeline: Any, size: tuple[int, int]) -> Any:
    """The tracker's step callback, shown latents as ``[B, 16, H/8, W/8]`` (Flux packs them)."""

    def on_step_end(
        step_pipeline: Any, iteration: int, timestep: Any, tensors: dict[str, Any]
    ) -> dict[str, Any]:
        latents = tensors["latents"]
        if latents.dim() == 3:
            latents = pipeline._unpack_latents(latents, size[1], size[0], pipeline.vae_scale_factor)
        tracker.on_step_end(step_pipeline, iteration, timestep, {"latents": latents})
        return tensors

    return on_step_end


@contextmanager
def flow_loras(
    pipeline: Any, loras: Sequence[ExtraNetwork], files: dict[str, Path]
) -> Iterator[AppliedNetworks]:
    """The LoRAs of one pipeline call, loaded as diffusers adapters at their tag weights
    and unloaded after. One removed since its folder was listed, still being written, or
    whose weights are not finite numbers, is skipped with a warning, as on SD; one that does
    not fit refuses the call, with nothing of it left loaded."""
    adapters: list[str] = []
    weights: list[float] = []
    skipped: dict[str, str] = {}
    try:
        for index, network in enumerate(loras):
            adapter = f"easel_lora_{index}"
            path = files[network.name]
            if (why := lora_not_loadable(network.name, path)) is not None:
                skipped[network.name] = why
                continue
            try:
                pipeline.load_lora_weights(str(path), adapter_name=adapter)
            except FileNotFoundError:  # removed since
                skipped[network.name] = (
                    f"LoRA {network.name!r} skipped: it is {NO_LONGER_INSTALLED}"
                )
                continue
            except (ValueError, KeyError, RuntimeError) as error:
                # diffusers' text names the server's folders: for the operator's log only.
                log.warning("LoRA %s does not fit: %s", network.name, error)
                raise RenderInputError(f"LoRA {network.name} does not fit this model") from None
            if (broken := broken_lora(pipeline, adapter, network.name)) is not None:
                skipped[network.name] = broken
                continue
            adapters.append(adapter)
            weights.append(network.unet_weight)
        if adapters:
            pipeline.set_adapters(adapters, adapter_weights=weights)
        applied = (network.name for network in loras if network.name not in skipped)
        yield AppliedNetworks(tuple(applied), skipped)
    finally:
        # Whatever is listed, not only what applied: a LoRA refused as not fitting has left
        # its transformer part (and some of its text encoder's) on the shared pipeline.
        if any(pipeline.get_list_adapters().values()):
            pipeline.unload_lora_weights()
