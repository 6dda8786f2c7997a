"""The synchronous render engine: one instance per device, called from that device's thread.

``render`` checks a request before touching torch (``inference.validation``), loads the
model into a small per-device LRU cache, draws each image's starting noise on the CPU from
its own seed, runs the diffusers pipeline (txt2img, hires fix, img2img, inpaint, creative
upscale) with a progress/cancel hook at every step and returns PNGs with web UI infotext.
``render_batch`` runs compatible txt2img requests in one pipeline call. LoRAs, embeddings
and a VAE override (``inference.networks``) are applied per pipeline call and removed after.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import logging
import math
import secrets
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import diffusers
import numpy as np
import torch
import transformers
from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, DiffusionPipeline
from PIL import Image

from inference.checkpoints import load_single_file
from inference.compile import Compiler
from inference.conditioning import DEFAULT_CLIP_SKIP, PromptEncoder
from inference.fast import DeepCache, FastPreset, fast_infotext, fast_preset
from inference.guidance import PromptGuidance
from inference.images import InpaintCanvas, InpaintOptions, inpaint_canvas, load_input_image
from inference.infotext import (
    format_infotext,
    infotext_from_png,
    parse_infotext,
    png_with_infotext,
)
from inference.limits import MAX_BATCH_IMAGES, MAX_SEED, SIZE_MULTIPLE
from inference.model_upscale import ModelUpscaler, TileDone, load_upscaler, model_upscale
from inference.networks import (
    EmbeddingTokens,
    applied_embeddings,
    applied_loras,
    load_vae,
    merged_loras,
)
from inference.noise import initial_noise, seeded_generator, step_noise_drawn_ahead
from inference.outpaint import OutpaintOptions, outpaint_canvas
from inference.preview import LatentPreviewer
from inference.prompts import ExtraNetwork, PromptError, PromptPlan, WildcardLibrary, build_plan
from inference.registry import ModelEntry, ModelRegistry
from inference.samplers import canonical_sampler_name, make_scheduler
from inference.sizes import with_default_size
from inference.tiles import TileBlender, tile_spans
from inference.types import (
    ProgressCallback,
    RenderCancelled,
    RenderedImage,
    RenderInputError,
    RenderRequest,
    StepProgress,
)
from inference.upscale import (
    LATENT_UPSCALERS,
    HiresOptions,
    UpscaleOptions,
    lanczos_upscale,
    scaled_render_size,
)
from inference.validation import RenderLimits, validate_request

log = logging.getLogger(__name__)

# Latents (4) + mask (1) + masked-picture latents (4).
INPAINTING_UNET_CHANNELS = 9
# SD1.x's text encoder has 12 layers; the encoder checks the loaded model's own count.
MAX_CLIP_SKIP = 12
# Above this many pixels the VAE decodes in tiles, so a large picture cannot exhaust memory.
DEFAULT_VAE_TILING_PIXELS = 1024 * 1024
# ``options["vae"]`` values meaning "the model's own VAE", as the web UI's settings say it.
MODEL_VAE_NAMES = ("", "Automatic", "None")
# The creative upscale re-details this many tiles per pipeline call.
CREATIVE_TILES_PER_CALL = 4
# The web UI's short hashes: 10 hex digits for models and VAEs, 12 for extra networks.
VAE_HASH_LENGTH, NETWORK_HASH_LENGTH = 10, 12
# Pictures PNG-encoded at once, off the device thread (a batch holds up to four per request).
PNG_ENCODER_THREADS = 4

# A server logs; per-load progress bars would only clutter it.
diffusers.utils.logging.disable_progress_bar()
transformers.utils.logging.disable_progress_bar()
# DPM++ SDE asks its Brownian tree for the largest sigma in float32 while the tree was built
# with the float64 value; torchsde clamps the last digit and warns at every render.
warnings.filterwarnings("ignore", message="Should have tb<=t1", module="torchsde")


def _resolve_seed(seed: int | None) -> int:
    return secrets.randbelow(MAX_SEED + 1) if seed is None or seed == -1 else seed


@dataclass(frozen=True)
class ImageJob:
    """One picture of a (possibly batched) pipeline call.

    ``prompt``/``negative_prompt`` are the texts after wildcard expansion (what the infotext
    shows); ``template``/``negative_template`` what was typed, when expansion changed it.
    """

    prompt: str
    negative_prompt: str
    seed: int
    variation_seed: int | None
    variation_strength: float
    template: str | None = None
    negative_template: str | None = None
    warnings: tuple[str, ...] = ()
    # LoRAs found on disk (merged by name, sorted) and embedding names the prompts use.
    loras: tuple[ExtraNetwork, ...] = ()
    embeddings: tuple[str, ...] = ()

    def plan(self, steps: int, wildcards: WildcardLibrary | None) -> PromptPlan:
        """The prompt planned over ``steps`` sampling steps (same seed: same expansion)."""
        return build_plan(
            self.prompt if self.template is None else self.template,
            self.negative_prompt if self.negative_template is None else self.negative_template,
            seed=self.seed,
            steps=steps,
            wildcards=wildcards,
        )


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
    def weight_bytes(self) -> int:
        modules = [c for c in self.pipeline.components.values() if isinstance(c, torch.nn.Module)]
        return sum(t.numel() * t.element_size() for m in modules for t in m.parameters())

    @property
    def inpainting_unet(self) -> bool:
        return bool(self.pipeline.unet.config.in_channels == INPAINTING_UNET_CHANNELS)

    @functools.cached_property
    def previewer(self) -> LatentPreviewer | None:
        """The latent previewer, fitted to this model's VAE at the first preview asked for;
        None (and no previews) when the VAE gives no finite latents."""
        previewer = LatentPreviewer.fit(self.pipeline.vae, self.pipeline.vae_scale_factor)
        if previewer is None:
            log.warning("model %s: no previews, its VAE gave no finite latents", self.entry.name)
        return previewer

    def pipeline_for(self, task: PipelineTask) -> Any:
        """The pipeline for ``task``, sharing this model's weights (made once, then kept)."""
        if task == "txt2img" or (task == "inpaint" and self.inpainting_unet):
            return self.pipeline
        if task not in self.task_pipelines:
            pipeline = _TASK_PIPELINES[task].from_pipe(self.pipeline)
            pipeline.set_progress_bar_config(disable=True)  # from_pipe does not carry it over
            self.task_pipelines[task] = pipeline
        return self.task_pipelines[task]


@dataclass(frozen=True)
class JobNetworks:
    """The extra networks and VAE applied to one pipeline call, and what the infotext says."""

    tokens: EmbeddingTokens
    vae: Any | None  # an AutoencoderKL replacing the model's own for this call
    warnings: tuple[str, ...]
    shared_infotext: dict[str, object]
    embedding_hashes: dict[str, str]

    def params(self, job: ImageJob) -> dict[str, object]:
        used = {n: h for n, h in self.embedding_hashes.items() if n in job.embeddings}
        return {**self.shared_infotext, "TI hashes": _hash_list(used)}

    def with_warnings(self, job: ImageJob) -> ImageJob:
        if not self.warnings:
            return job
        return dataclasses.replace(job, warnings=(*job.warnings, *self.warnings))


def _hash_list(hashes: dict[str, str]) -> str | None:
    """The web UI's ``name: hash, name: hash`` value (None when empty)."""
    return ", ".join(f"{name}: {short}" for name, short in hashes.items()) or None


@contextmanager
def _vae_in_use(pipeline: Any, vae: Any | None) -> Iterator[None]:
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


@contextmanager
def _vae_tiling(pipeline: Any, tiled: bool) -> Iterator[None]:
    if not tiled:
        yield
        return
    pipeline.vae.enable_tiling()
    try:
        yield
    finally:
        pipeline.vae.disable_tiling()


def _outpainted(request: RenderRequest) -> RenderRequest:
    """An outpaint / zoom-out request as the inpainting of its grown canvas."""
    options = OutpaintOptions.from_options(request.options)
    if options is None:
        return request
    assert request.init_image is not None  # validate_request made sure
    width, height = load_input_image(request.init_image, "init image").size
    size = options.margins(width, height).canvas_size(width, height)
    if (request.width, request.height) not in ((None, None), size):
        raise RenderInputError(
            f"outpainting makes a {size[0]}x{size[1]} picture; leave width and height "
            f"unset (got {request.width}x{request.height})"
        )
    return dataclasses.replace(request, mode="inpaint", width=size[0], height=size[1])


class Engine:
    """Renders requests on one device; not thread-safe by design (one thread per device)."""

    def __init__(
        self,
        models_dir: Path,
        device: str = "cpu",
        default_model: str | None = None,
        *,
        default_upscaler: str | None = None,
        allow_pickle: bool = False,
        dtype: torch.dtype | None = None,
        max_loaded_models: int = 1,
        memory_budget_bytes: int | None = None,
        wildcards_dir: Path | None = None,
        vae_tiling_pixels: int | None = DEFAULT_VAE_TILING_PIXELS,
        cpu_offload: bool = False,
        preview_interval_s: float | None = None,
        limits: RenderLimits | None = None,
        compiler: Compiler | None = None,
    ) -> None:
        """``max_loaded_models`` and ``memory_budget_bytes`` bound the per-device model cache;
        the least recently used model is dropped first (the last one loaded always stays).
        ``wildcards_dir`` holds the ``__name__`` wildcard files (``None``: no wildcards).
        Pictures above ``vae_tiling_pixels`` (width x height; ``None``: never) decode in
        tiles. ``cpu_offload`` keeps each model part in CPU memory until the pipeline needs it
        (CUDA devices only; ignored elsewhere): slower, but fits small GPUs.
        ``preview_interval_s`` (``None``: never) makes progress reports carry a cheap preview
        of the pictures at most that often (0: every step). ``limits`` are the server's own
        ceilings on pixels and steps (default: the hard ranges only). ``compiler`` compiles
        each model's UNet and VAE decoder as it loads (``inference.compile``; not with
        ``cpu_offload``, which moves the weights between calls)."""
        self.registry = ModelRegistry(models_dir, allow_pickle=allow_pickle)
        self.wildcards = None if wildcards_dir is None else WildcardLibrary(wildcards_dir)
        self.device = device
        self.default_model = default_model
        self.default_upscaler = default_upscaler
        # Half precision halves GPU memory and time; CPUs are faster (and exact) in float32.
        self.dtype = dtype or (torch.float16 if device.startswith("cuda") else torch.float32)
        self.max_loaded_models = max_loaded_models
        self.memory_budget_bytes = memory_budget_bytes
        self.vae_tiling_pixels = vae_tiling_pixels
        self.cpu_offload = cpu_offload and device.startswith("cuda")
        self.preview_interval_s = preview_interval_s
        self.limits = limits or RenderLimits()
        self.compiler = None if self.cpu_offload else compiler
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        # The last VAE override, kept while it is asked for again: (file, model, VAE).
        self._vae_override: tuple[Path, LoadedModel, Any] | None = None
        # The last model upscaler, kept while it is asked for again.
        self._upscaler: ModelUpscaler | None = None
        # PNG encoding is CPU work the device must not wait for: pictures leave ``render``
        # with their PNG still encoding here (see ``RenderedImage.png``).
        self._png_encoder = ThreadPoolExecutor(PNG_ENCODER_THREADS, thread_name_prefix="easel-png")

    def list_models(self) -> list[str]:
        return self.registry.names()

    def loaded_models(self) -> list[str]:
        """Names of the models in this device's cache, least recently used first."""
        return list(self._loaded)

    def unload(self) -> None:
        """Drop every cached model (for shutdown or to free the device)."""
        self._loaded.clear()
        self._vae_override = None
        self._upscaler = None
        self._release_device_memory()

    def render(
        self,
        request: RenderRequest,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[RenderedImage]:
        validate_request(request)
        if request.mode == "upscale":
            self._check_limits(request)  # the steps of a creative pass
            return self._upscale(request, progress, cancel)
        self._vae_file(request)  # an unknown VAE name is refused before any model loads
        entry = self.registry.resolve(request.model, self.default_model)
        request = self._sized(_outpainted(request), entry)
        jobs = self._image_jobs(request)
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
        """Render compatible txt2img requests (equal ``pipeline_key()``) in one pipeline call.

        Each picture matches its solo render up to float rounding (see the tests' tolerance).
        Other modes carry per-request pictures and are rendered one request at a time.
        """
        if not requests:
            return []
        keys = {request.pipeline_key() for request in requests}
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
            self._vae_file(request)
        entry = self.registry.resolve(requests[0].model, self.default_model)
        requests = [self._sized(request, entry) for request in requests]
        jobs_per_request = [self._image_jobs(request) for request in requests]
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

    def _sized(self, request: RenderRequest, entry: ModelEntry) -> RenderRequest:
        """Fill a missing width/height (loading the model for its native size), then check it
        against the request ranges and this server's limits."""
        if request.width is None or request.height is None:
            native = _native_size(self._load(entry).pipeline)
            init_size = None
            if request.mode in ("img2img", "inpaint") and request.init_image:
                init_size = load_input_image(request.init_image, "init image").size
            request = with_default_size(request, native, init_size)
            validate_request(request)
        self._check_limits(request)
        return request

    def _check_limits(self, request: RenderRequest) -> None:
        refusal = self.limits.refusal(request)
        if refusal is not None:
            raise RenderInputError(refusal)

    def _load(self, entry: ModelEntry) -> LoadedModel:
        cached = self._loaded.get(entry.name)
        if cached is not None and cached.entry == entry:
            self._loaded.move_to_end(entry.name)
            return cached
        while len(self._loaded) >= self.max_loaded_models:
            self._loaded.popitem(last=False)
        self._release_device_memory()
        pipeline = self._load_pipeline(entry)
        if self.cpu_offload:
            pipeline.enable_model_cpu_offload(device=self.device)
        else:
            pipeline.to(self.device)
        if self.device.startswith("cuda"):
            # NHWC convolutions are the fast path of cuDNN's half-precision kernels.
            pipeline.unet.to(memory_format=torch.channels_last)
            pipeline.vae.to(memory_format=torch.channels_last)
        if self.compiler is not None:
            self.compiler.install(pipeline)
        pipeline.set_progress_bar_config(disable=True)
        loaded = LoadedModel(
            entry=entry,
            pipeline=pipeline,
            scheduler_config=dict(pipeline.scheduler.config),
            short_hash=self.registry.short_hash(entry),
        )
        self._loaded[entry.name] = loaded
        self._fit_memory_budget()
        return loaded

    def _fit_memory_budget(self) -> None:
        if self.memory_budget_bytes is None:
            return
        evicted = False
        while len(self._loaded) > 1 and self._cache_bytes() > self.memory_budget_bytes:
            self._loaded.popitem(last=False)
            evicted = True
        if evicted:
            self._release_device_memory()

    def _cache_bytes(self) -> int:
        return sum(model.weight_bytes for model in self._loaded.values())

    def _release_device_memory(self) -> None:
        if self.compiler is not None:
            gc.collect()  # a compiled twin is freed in a cycle with torch.compile's wrapper
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

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

    def _image_jobs(self, request: RenderRequest) -> list[ImageJob]:
        return _image_jobs(
            request,
            self.wildcards,
            self.registry.network_files("lora"),
            self.registry.network_files("embedding"),
        )

    def _vae_file(self, request: RenderRequest) -> Path | None:
        """The file ``options["vae"]`` names (None: the model's own VAE)."""
        name = request.options.get("vae")
        if name is None or name in MODEL_VAE_NAMES:
            return None
        files = self.registry.network_files("vae")
        # The web UI records the file name (``VAE: x.safetensors``); both spellings work.
        path = files.get(str(name)) or files.get(Path(str(name)).stem)
        if path is None:
            available = ", ".join(sorted(files)) or "none (put .safetensors files in models/vae)"
            raise RenderInputError(f"unknown VAE {name!r}; available: {available}")
        return path

    def _vae_for(self, model: LoadedModel, path: Path) -> Any:
        cached = self._vae_override
        if cached is not None and cached[0] == path and cached[1] is model:
            return cached[2]
        self._vae_override = None  # drop the old one before loading the next
        vae = load_vae(path, model.pipeline.vae)
        self._vae_override = (path, model, vae)
        return vae

    @contextmanager
    def _networks(
        self, model: LoadedModel, request: RenderRequest, jobs: Sequence[ImageJob]
    ) -> Iterator[JobNetworks]:
        """Apply the jobs' LoRAs (one set: ``_run`` groups by it), embeddings and the VAE
        override to ``model`` for one pipeline call; everything is removed afterwards."""
        pipeline = model.pipeline
        lora_files = self.registry.network_files("lora")
        embedding_files = self.registry.network_files("embedding")
        embeddings = sorted({name for job in jobs for name in job.embeddings})
        vae_path = self._vae_file(request)
        vae = None if vae_path is None else self._vae_for(model, vae_path)
        with (
            applied_loras(pipeline, jobs[0].loras, lora_files) as loras,
            applied_embeddings(pipeline, embeddings, embedding_files) as (tokens, applied),
        ):
            yield JobNetworks(
                tokens=tokens,
                vae=vae,
                warnings=(*loras.warnings, *applied.warnings),
                shared_infotext={
                    "VAE hash": None
                    if vae_path is None
                    else self.registry.sha256(vae_path)[:VAE_HASH_LENGTH],
                    "VAE": None if vae_path is None else vae_path.name,
                    "Lora hashes": _hash_list(self._short_hashes(loras.names, lora_files)),
                },
                embedding_hashes=self._short_hashes(applied.names, embedding_files),
            )

    def _redetail_in_tiles(
        self,
        model: LoadedModel,
        request: RenderRequest,
        job: ImageJob,
        image: Image.Image,
        strength: float,
        tracker: _StepTracker,
        networks: JobNetworks,
    ) -> tuple[Image.Image, int]:
        """The creative upscale's img2img pass over ``image``, in tiles of the model's native
        size overlapping by an eighth of it, a few per pipeline call, blended across the
        overlaps: any output size in the memory of one batch of native-size tiles. Tile i
        uses seed + i. Returns the picture and the overlap (for the infotext)."""
        native = _native_size(model.pipeline)
        overlap = max(SIZE_MULTIPLE, native // 8 // SIZE_MULTIPLE * SIZE_MULTIPLE)
        rows = tile_spans(image.height, native, overlap, SIZE_MULTIPLE)
        columns = tile_spans(image.width, native, overlap, SIZE_MULTIPLE)
        boxes = [(left, top, right, bottom) for top, bottom in rows for left, right in columns]
        tile_size = (boxes[0][2] - boxes[0][0], boxes[0][3] - boxes[0][1])
        task = _pipeline_task("img2img", model.inpainting_unet)
        blender = TileBlender(image.height, image.width, 3, overlap)
        steps_per_call = max(1, int(request.steps * strength))
        for first in range(0, len(boxes), CREATIVE_TILES_PER_CALL):
            batch = boxes[first : first + CREATIVE_TILES_PER_CALL]
            tracker.later_steps = steps_per_call * math.ceil(
                (len(boxes) - first - len(batch)) / CREATIVE_TILES_PER_CALL
            )
            jobs = [dataclasses.replace(job, seed=job.seed + first + i) for i in range(len(batch))]
            crops = [image.crop(box) for box in batch]
            arguments = _task_arguments(task, tile_size, strength, crops, None, len(batch))
            tiles = self._denoise(
                model, task, request, jobs, tile_size, request.steps, arguments, tracker, networks
            )
            for (left, top, _, _), tile in zip(batch, tiles, strict=True):
                blender.add(top, left, np.asarray(tile.convert("RGB"), dtype=np.float32))
        blended = np.round(np.clip(blender.result(), 0, 255)).astype(np.uint8)
        return Image.fromarray(blended), overlap

    def _previewer(
        self, model: LoadedModel, progress: ProgressCallback | None
    ) -> LatentPreviewer | None:
        """The model's latent previewer, when previews were asked for and someone listens."""
        if self.preview_interval_s is None or progress is None:
            return None
        return model.previewer

    def _enlarge(
        self,
        image: Image.Image,
        size: tuple[int, int],
        upscaler: tuple[str, Path | None],
        cancel: threading.Event | None,
        on_tile: TileDone | None = None,
    ) -> Image.Image:
        """``image`` resized to ``size`` by ``upscaler`` (as ``registry.resolve_upscaler``
        gives it: a name, and its file unless it is Lanczos)."""
        name, path = upscaler
        if path is None:
            return lanczos_upscale(image, size)
        cached = self._upscaler
        if cached is None or not cached.is_current(path):
            self._upscaler = None  # drop the old one before loading the next
            self._release_device_memory()
            cached = self._upscaler = load_upscaler(name, path, self.device)
        return model_upscale(cached, image, size, cancel=cancel, on_tile=on_tile)

    def _short_hashes(self, names: Sequence[str], files: dict[str, Path]) -> dict[str, str]:
        return {name: self.registry.sha256(files[name])[:NETWORK_HASH_LENGTH] for name in names}

    def _run(
        self,
        model: LoadedModel,
        request: RenderRequest,
        jobs: Sequence[ImageJob],
        inputs: RenderInputs,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> list[RenderedImage]:
        """Render ``jobs``; pictures whose prompts ask for different LoRA sets (wildcards can
        pick LoRAs per picture) run in separate pipeline calls, in their original order."""
        preset = _fast_preset(model, request)
        if preset is not None:
            request = preset.applied(request)
        groups: dict[tuple[ExtraNetwork, ...], list[int]] = {}
        for index, job in enumerate(jobs):
            groups.setdefault(job.loras, []).append(index)
        rendered: dict[int, RenderedImage] = {}
        for indices in groups.values():
            group = [jobs[index] for index in indices]
            with self._networks(model, request, group) as networks:
                images = self._run_group(model, request, group, inputs, networks, progress, cancel)
            rendered.update(zip(indices, images, strict=True))
        return [rendered[index] for index in range(len(jobs))]

    def _run_group(
        self,
        model: LoadedModel,
        request: RenderRequest,
        jobs: Sequence[ImageJob],
        inputs: RenderInputs,
        networks: JobNetworks,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> list[RenderedImage]:
        size = request.size()
        task = _pipeline_task(request.mode, model.inpainting_unet)
        # Inpainting checkpoints render txt2img through the inpaint pipeline; hires fix too.
        txt2img = request.mode == "txt2img"
        hires = HiresOptions.from_options(request.options, *size) if txt2img else None
        hires_steps = (hires.steps or request.steps) if hires else 0
        tracker = _StepTracker(progress, cancel, self.preview_interval_s, later_steps=hires_steps)
        tracker.previewer = self._previewer(model, progress)
        init_images = None if inputs.init is None else [inputs.init] * len(jobs)
        arguments = _task_arguments(
            task, size, request.denoising_strength, init_images, inputs.canvas, len(jobs)
        )
        # HiresOptions gives latent upscalers their web UI spelling.
        latent = hires.upscaler if hires and hires.upscaler in LATENT_UPSCALERS else None
        if latent is not None and model.inpainting_unet:
            raise RenderInputError(
                f"the {latent} hires upscaler needs an ordinary checkpoint; "
                f"{model.entry.name} is an inpainting model: choose Lanczos or a model upscaler"
            )
        first_pass = self._denoise(
            model,
            task,
            request,
            jobs,
            size,
            request.steps,
            arguments,
            tracker,
            networks,
            output_type="pil" if latent is None else "latent",
        )
        images: list[Image.Image] = first_pass
        params: dict[str, object] = {}
        if hires is not None:
            hires_size = scaled_render_size(*size, hires.scale)
            start: list[Image.Image] | torch.Tensor
            if latent is not None:
                scale = model.pipeline.vae_scale_factor
                start, upscaler = _resized_latents(first_pass, hires_size, scale, latent), latent
            else:
                resolved = self.registry.resolve_upscaler(hires.upscaler)
                start = [self._enlarge(image, hires_size, resolved, cancel) for image in images]
                upscaler = resolved[0]
            hires_task = _pipeline_task("img2img", model.inpainting_unet)
            tracker.later_steps = 0
            arguments = _task_arguments(
                hires_task, hires_size, hires.denoising, start, None, len(jobs)
            )
            images = self._denoise(
                model,
                hires_task,
                request,
                jobs,
                hires_size,
                hires_steps,
                arguments,
                tracker,
                networks,
            )
            params = {
                "Denoising strength": hires.denoising,
                "Hires upscale": hires.scale,
                "Hires steps": hires.steps or None,
                "Hires upscaler": upscaler,
            }
        if inputs.canvas is not None:
            images = [inputs.canvas.composite(image) for image in images]
        if request.mode != "txt2img":
            params = {
                "Denoising strength": request.denoising_strength,
                **_inpaint_infotext(request),
            }
        return [
            _rendered(
                self._png_encoder,
                networks.with_warnings(job),
                image,
                {**_base_params(model, request, job, size), **networks.params(job), **params},
            )
            for job, image in zip(jobs, images, strict=True)
        ]

    def _denoise(
        self,
        model: LoadedModel,
        task: PipelineTask,
        request: RenderRequest,
        jobs: Sequence[ImageJob],
        size: tuple[int, int],
        steps: int,
        arguments: TaskArguments,
        tracker: _StepTracker,
        networks: JobNetworks,
        output_type: Literal["pil", "latent"] = "pil",
    ) -> Any:
        """One pipeline call: every picture starts from its own seeded CPU noise. Returns the
        pictures, or with ``output_type="latent"`` the final latents (no VAE decode)."""
        pipeline = model.pipeline_for(task)
        scheduler = make_scheduler(request.sampler, model.scheduler_config)
        pipeline.scheduler = scheduler
        scale = pipeline.vae_scale_factor
        latent_shape = (1, pipeline.vae.config.latent_channels, size[1] // scale, size[0] // scale)
        noise = torch.cat(
            [
                initial_noise(job.seed, latent_shape, job.variation_seed, job.variation_strength)
                for job in jobs
            ]
        ).to(self.device, self.dtype)
        _use_noise_for_img2img(scheduler, noise, arguments.latent_fill)
        _seed_brownian_noise(scheduler, jobs)
        start = {"latents": noise} if arguments.starts_from_noise else {}
        tracker.begin_pass()
        with torch.inference_mode():
            # Prompts are encoded here (web UI syntax, schedules, AND), not by the pipeline.
            guidance = PromptGuidance(
                PromptEncoder(pipeline, _clip_skip(request)),
                lambda steps_run: [
                    networks.tokens.plan(job.plan(steps_run, self.wildcards)) for job in jobs
                ],
                pad_conds=_pad_conds(request),
            )
            tiled = self.vae_tiling_pixels is not None and (
                size[0] * size[1] > self.vae_tiling_pixels
            )
            # The cache wraps the real UNet, so it goes on before the guidance's stand-in.
            use_cache = request.fast and _fast_preset(model, request) is None
            # The same per-image CPU generators also drive ancestral samplers' noise.
            generators = [seeded_generator(job.seed) for job in jobs]
            with (
                step_noise_drawn_ahead(scheduler, generators, steps),
                DeepCache(pipeline.unet).installed() if use_cache else nullcontext(),
                guidance.installed(pipeline),
                _vae_in_use(pipeline, networks.vae),
                _vae_tiling(pipeline, tiled),
            ):
                images = pipeline(
                    **guidance.pipeline_arguments(len(jobs)),
                    num_inference_steps=steps,
                    guidance_scale=request.cfg_scale,
                    generator=generators,
                    callback_on_step_end=guidance.step_callback(tracker.on_step_end),
                    output_type=output_type,
                    **arguments.values,
                    **start,
                ).images
        return images

    def _upscale(
        self,
        request: RenderRequest,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
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
        resolved = self.registry.resolve_upscaler(options.upscaler, self.default_upscaler)
        original = infotext_from_png(Path(request.init_image).read_bytes())
        prompt, negative, params = (
            parse_infotext(original) if original else (request.prompt, request.negative_prompt, {})
        )
        tracker = _StepTracker(progress, cancel, self.preview_interval_s)
        image = self._enlarge(source, size, resolved, cancel, tracker.on_tile)
        postprocess = {
            "Postprocess upscale by": options.factor,
            "Postprocess upscaler": resolved[0],
        }
        if options.mode == "fast":
            _raise_if_cancelled(cancel)
            original_seed = params.get("Seed")
            seed = original_seed if isinstance(original_seed, int) else _resolve_seed(request.seed)
            job = ImageJob(prompt, negative, seed, None, 0.0)
            return [_rendered(self._png_encoder, job, image, {**params, **postprocess})]
        # The request's prompt, else the picture's own, guides the re-detailing.
        job = ImageJob(
            request.prompt or prompt,
            request.negative_prompt or negative,
            _resolve_seed(request.seed),
            None,
            0.0,
        )
        entry = self.registry.resolve(request.model, self.default_model)
        _raise_if_cancelled(cancel)
        model = self._load(entry)
        tracker.previewer = self._previewer(model, progress)
        with self._networks(model, request, [job]) as networks:
            image, overlap = self._redetail_in_tiles(
                model, request, job, image, options.strength, tracker, networks
            )
        creative: dict[str, object] = {
            "Denoising strength": options.strength,
            "SD upscale overlap": overlap,
            **postprocess,
        }
        infotext: dict[str, object] = {
            **_base_params(model, request, job, size),
            **networks.params(job),
            **creative,
        }
        return [_rendered(self._png_encoder, job, image, infotext)]


def _resized_latents(
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


def _native_size(pipeline: Any) -> int:
    """The side the model was trained at (512 for SD1.5, 1024 for SDXL)."""
    return int(pipeline.unet.config.sample_size * pipeline.vae_scale_factor)


def _fast_preset(model: LoadedModel, request: RenderRequest) -> FastPreset | None:
    """The few-step recipe a fast request gets on this model, if the model has one."""
    if not request.fast:
        return None
    return fast_preset(model.entry.name, model.scheduler_config)


def _base_params(
    model: LoadedModel, request: RenderRequest, job: ImageJob, size: tuple[int, int]
) -> dict[str, object]:
    varied = job.variation_seed is not None and job.variation_strength > 0
    clip_skip = _clip_skip(request)
    return {
        "Steps": request.steps,
        "Sampler": canonical_sampler_name(request.sampler),
        "CFG scale": float(request.cfg_scale),
        "Seed": job.seed,
        "Size": f"{size[0]}x{size[1]}",
        "Model hash": model.short_hash,
        "Model": model.entry.name,
        "Variation seed": job.variation_seed if varied else None,
        "Variation seed strength": job.variation_strength if varied else None,
        "Clip skip": clip_skip if clip_skip != DEFAULT_CLIP_SKIP else None,
        "Pad conds": True if _pad_conds(request) else None,
        "Fast": fast_infotext(request, _fast_preset(model, request)),
        # The dynamic-prompts extension's keys: what was typed, when expansion changed it.
        "Template": job.template,
        "Negative Template": job.negative_template,
        "Prompt warnings": "; ".join(job.warnings) or None,
    }


def _rendered(
    encoder: Executor, job: ImageJob, image: Image.Image, params: dict[str, object]
) -> RenderedImage:
    infotext = format_infotext(job.prompt, job.negative_prompt, params)
    return RenderedImage(
        encoded=encoder.submit(png_with_infotext, image, infotext),
        seed=job.seed,
        infotext=infotext,
        width=image.width,
        height=image.height,
    )


class _StepTracker:
    """Step progress and cancel checks across one or two denoising passes (hires fix)."""

    def __init__(
        self,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
        preview_interval_s: float | None = None,
        later_steps: int = 0,
    ) -> None:
        self.progress = progress
        self.cancel = cancel
        self.later_steps = later_steps  # an estimate for passes still to come
        # Set once the model is loaded (and only when previews were asked for).
        self.previewer: LatentPreviewer | None = None
        self.preview_interval_s = preview_interval_s
        self.started = time.monotonic()
        self.last_preview = float("-inf")
        self.finished_steps = 0
        self.pass_steps = 0

    def begin_pass(self) -> None:
        self.finished_steps += self.pass_steps
        self.pass_steps = 0

    def _preview_due(self, now: float) -> bool:
        interval = self.preview_interval_s
        return interval is not None and now - self.last_preview >= interval

    def on_tile(self, done: int, total: int) -> None:
        """Progress of a model upscale, tile by tile (it has no denoising steps)."""
        if self.progress is not None:
            self.progress(StepProgress(done, total, time.monotonic() - self.started))

    def on_step_end(
        self, pipeline: Any, step_index: int, _timestep: Any, tensors: dict[str, Any]
    ) -> dict[str, Any]:
        self.pass_steps = step_index + 1
        if self.progress is not None:
            total = self.finished_steps + pipeline.num_timesteps + self.later_steps
            now = time.monotonic()
            preview = None
            if self.previewer is not None and self._preview_due(now):
                preview = self.previewer.jpeg(tensors["latents"])
                self.last_preview = now
            step = self.finished_steps + self.pass_steps
            self.progress(StepProgress(step, total, now - self.started, preview))
        _raise_if_cancelled(self.cancel)
        return tensors


def _image_jobs(
    request: RenderRequest,
    wildcards: WildcardLibrary | None,
    loras: Collection[str],
    embeddings: Collection[str],
) -> list[ImageJob]:
    """One job per picture: image i uses seed + i (and variation seed + i), as the web UI,
    and its wildcards are expanded with that seed. Prompt errors surface here, before any
    model loads. ``loras`` and ``embeddings`` are the names on disk: unknown LoRA tags
    become prompt warnings."""
    _clip_skip(request)
    seed = _resolve_seed(request.seed)
    variation_seed = (
        None if request.variation_seed is None else _resolve_seed(request.variation_seed)
    )
    jobs = []
    for index in range(request.count):
        try:
            plan = build_plan(
                request.prompt,
                request.negative_prompt,
                seed=seed + index,
                steps=request.steps,
                wildcards=wildcards,
                loras=loras,
                embeddings=embeddings,
            )
        except PromptError as error:
            raise RenderInputError(str(error)) from error
        jobs.append(
            ImageJob(
                prompt=plan.prompt,
                negative_prompt=plan.negative_prompt,
                seed=seed + index,
                variation_seed=None if variation_seed is None else variation_seed + index,
                variation_strength=request.variation_strength,
                template=request.prompt if plan.prompt != request.prompt else None,
                negative_template=(
                    request.negative_prompt
                    if plan.negative_prompt != request.negative_prompt
                    else None
                ),
                warnings=plan.warnings,
                loras=merged_loras(plan.loras(loras)),
                embeddings=plan.embeddings_used,
            )
        )
    return jobs


def _clip_skip(request: RenderRequest) -> int:
    """``options["clip_skip"]``: 1 (the last layer, default) to 12."""
    value = request.options.get("clip_skip", DEFAULT_CLIP_SKIP)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RenderInputError(
            f"clip skip must be a whole number in 1..{MAX_CLIP_SKIP}, got {value!r}"
        )
    if not 1 <= value <= MAX_CLIP_SKIP:
        raise RenderInputError(f"clip skip must be in 1..{MAX_CLIP_SKIP}, got {value}")
    return value


def _pad_conds(request: RenderRequest) -> bool:
    return bool(request.options.get("pad_conds", False))


@dataclass(frozen=True)
class RenderInputs:
    """Pictures a request brings, loaded and checked before the model is."""

    init: Image.Image | None = None
    canvas: InpaintCanvas | None = None


def _load_inputs(request: RenderRequest, seed: int) -> RenderInputs:
    size = request.size()
    if request.mode == "img2img" and request.init_image:
        init = load_input_image(request.init_image, "init image")
        return RenderInputs(init=init.resize(size, Image.Resampling.LANCZOS))
    outpaint = OutpaintOptions.from_options(request.options)
    if outpaint is not None and request.init_image:
        init = load_input_image(request.init_image, "init image")
        return RenderInputs(canvas=outpaint_canvas(init, outpaint.margins(*init.size)))
    if request.mode == "inpaint" and request.init_image and request.mask_image:
        init = load_input_image(request.init_image, "init image")
        mask = load_input_image(request.mask_image, "mask image")
        options = InpaintOptions.from_options(request.options)
        return RenderInputs(canvas=inpaint_canvas(init, mask, size, options))
    return RenderInputs()


def _pipeline_task(mode: str, inpainting_unet: bool) -> PipelineTask:
    # A 9-channel inpainting UNet cannot run without a mask: everything goes through inpaint.
    if inpainting_unet or mode == "inpaint":
        return "inpaint"
    return "img2img" if mode == "img2img" else "txt2img"


@dataclass(frozen=True)
class TaskArguments:
    values: dict[str, Any]
    # At full strength the pipeline starts from our noise as ``latents`` instead of noising
    # the picture.
    starts_from_noise: bool
    latent_fill: LatentFill | None = None


def _task_arguments(
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
        strength = strength if init_images else 1.0
    values = {**dimensions, "image": images, "mask_image": masks, "strength": strength}
    fill = None
    if canvas is not None and canvas.latent_fill is not None:
        fill = LatentFill(canvas.latent_fill, canvas.mask)
    return TaskArguments(values, starts_from_noise=strength == 1.0, latent_fill=fill)


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


def _use_noise_for_img2img(
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


def _seed_brownian_noise(scheduler: Any, jobs: Sequence[ImageJob]) -> None:
    """DPM++ SDE draws its noise from a Brownian tree; one tree per picture, seeded with the
    picture's seed as the web UI does, keeps a picture the same whether batched or alone."""
    if hasattr(scheduler, "noise_sampler_seed"):
        scheduler.noise_sampler_seed = [job.seed for job in jobs]


def _inpaint_infotext(request: RenderRequest) -> dict[str, object]:
    if request.mode != "inpaint":
        return {}
    outpaint = OutpaintOptions.from_options(request.options)
    if outpaint is not None and request.init_image:
        width, height = load_input_image(request.init_image, "init image").size
        return {"Masked content": "fill", "Outpaint": outpaint.margins(width, height).describe()}
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
