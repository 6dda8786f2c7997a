"""The synchronous render engine: one instance per device, called from that device's thread.

``render`` checks a request before touching torch (``inference.validation``), loads the
model into a small per-device LRU cache (``inference.model_cache``), draws each image's
starting noise on the CPU from its own seed, runs the passes (``inference.passes``: txt2img
and hires fix, img2img / inpaint / outpaint, upscale and creative tiles) with a
progress/cancel hook at every step (``inference.progress``) and returns PNGs with web UI
infotext. ``render_batch`` runs compatible txt2img requests in one pipeline call. LoRAs,
embeddings and a VAE override (``inference.networks``) are applied per pipeline call and
removed after.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import diffusers
import torch
import transformers

from inference.compare import cell_requests, is_comparison
from inference.compile import Compiler
from inference.control_units import control_units
from inference.cuda_graphs import RecorderFactory, graphed_unet
from inference.devices import default_dtype
from inference.image_prompts import check_image_prompt_models, image_prompt
from inference.images import load_input_image
from inference.library_logs import through_process_logs
from inference.limits import MAX_BATCH_IMAGES
from inference.metadata import latent_channels_of
from inference.model_cache import LoadedModel, ModelCache, load_pipeline, native_size
from inference.passes.denoise import (
    BlankRows,
    Denoiser,
    PassTools,
    blank_pictures,
    fast_preset_for,
)
from inference.passes.faces import check_faces, check_faces_model, faces_of_picture
from inference.passes.flow import render_flow_group
from inference.passes.img2img import RenderInputs, load_inputs, outpainted
from inference.passes.jobs import ImageJob, image_jobs
from inference.passes.networks import job_networks
from inference.passes.txt2img import render_group
from inference.passes.upscale import upscale
from inference.prepared import PreparedJobs
from inference.preprocessors import check_controls
from inference.progress import (
    BatchProgress,
    OrderedProgress,
    for_request,
    ordered_progress,
    raise_if_cancelled,
)
from inference.prompts import ExtraNetwork, WildcardLibrary
from inference.quantization import Quantize, quantize_problem
from inference.registry import ModelEntry, ModelRegistry
from inference.sizes import with_default_size
from inference.types import (
    BlankPicture,
    PartlyRendered,
    ProgressCallback,
    RenderedImage,
    RenderFailed,
    RenderInputError,
    RenderRequest,
    StepProgress,
)
from inference.vae_files import vae_file
from inference.validation import RenderLimits, validate_request

log = logging.getLogger(__name__)
T = TypeVar("T")

# Above this many pixels the VAE decodes in tiles, so a large picture cannot exhaust memory.
DEFAULT_VAE_TILING_PIXELS = 1024 * 1024
# Pictures PNG-encoded at once, off the device thread (a batch holds up to four per request).
PNG_ENCODER_THREADS = 4
# The warm start's render: the default model at its native size, one step, one picture, with
# classifier-free guidance as a job has it (the same UNet batch rows).
WARM_UP = RenderRequest("", seed=0, steps=1)
# With CUDA graphs, three steps: the shape's first call, its recording, and its check
# (inference.cuda_graphs), so the first job replays from its first step; and the same for a
# 2x2 grid, whose UNet rows a batch of four members' pictures has too.
WARM_UP_STEPS_WITH_GRAPHS = 3
WARM_UP_GRID_COUNT = 4

for library_logging in (diffusers.utils.logging, transformers.utils.logging):
    through_process_logs(library_logging)
# DPM++ SDE asks its Brownian tree for the largest and smallest sigmas in float32 while the tree
# was built with the float64 values; torchsde clamps the last digit and warns at every render.
warnings.filterwarnings("ignore", message="Should have (tb<=t1|ta>=t0)", module="torchsde")


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
        cuda_graphs: RecorderFactory | None = None,
        quantize: Quantize = "off",
        hashes_file: Path | None = None,
    ) -> None:
        """``max_loaded_models`` and ``memory_budget_bytes`` bound the per-device model cache;
        the least recently used model is dropped first (the last one loaded always stays).
        ``wildcards_dir`` holds the ``__name__`` wildcard files (``None``: no wildcards), read
        only for a job queued without the texts the bot drew (``PlannedDraws``: an older one).
        Pictures above ``vae_tiling_pixels`` (width x height; ``None``: never) decode in
        tiles. ``cpu_offload`` keeps each model part in CPU memory until the pipeline needs it
        (CUDA devices only; ignored elsewhere): slower, but fits small GPUs.
        ``preview_interval_s`` (``None``: never) makes progress reports carry a cheap preview
        of the pictures at most that often (0: every step). ``limits`` are the server's own
        ceilings on pixels and steps (default: the hard ranges only). ``compiler`` compiles
        each model's UNet and VAE decoder as it loads (``inference.compile``; not with
        ``cpu_offload``, which moves the weights between calls). ``cuda_graphs`` records
        each model's UNet calls and replays them (``inference.cuda_graphs``; not with a
        compiler or ``cpu_offload``). ``quantize`` quantizes each
        model's UNet or transformer as it loads (``inference.quantization``); a mode this
        device cannot run is refused here, in one sentence. ``hashes_file`` keeps the model
        files' hashes between runs (``inference.file_hashes``; None: in memory only)."""
        problem = quantize_problem(quantize, device)
        if problem is not None:
            raise RenderInputError(problem)
        self.registry = ModelRegistry(
            models_dir, allow_pickle=allow_pickle, hashes_file=hashes_file
        )
        self.wildcards = None if wildcards_dir is None else WildcardLibrary(wildcards_dir)
        self.device = device
        self.default_model = default_model
        self.default_upscaler = default_upscaler
        self.dtype = dtype or default_dtype(device)
        self.limits = limits or RenderLimits()
        offload = cpu_offload and device.startswith("cuda")
        self.models = ModelCache(
            self.registry,
            device,
            self._load_pipeline,
            max_loaded_models=max_loaded_models,
            memory_budget_bytes=memory_budget_bytes,
            cpu_offload=offload,
            compiler=None if offload else compiler,
            graph_recorders=cuda_graphs,
            quantize=quantize,
        )
        self.tools = PassTools(
            denoise=Denoiser(device, self.dtype, self.wildcards, vae_tiling_pixels),
            models=self.models,
            registry=self.registry,
            # PNG encoding is CPU work the device must not wait for: pictures leave ``render``
            # with their PNG still encoding here (see ``RenderedImage.png``).
            encoder=ThreadPoolExecutor(PNG_ENCODER_THREADS, thread_name_prefix="easel-png"),
            preview_interval_s=preview_interval_s,
        )
        self._prepared = PreparedJobs(self._expanded_jobs)

    @property
    def compiler(self) -> Compiler | None:
        """What compiles each model as it loads (``None``: nothing does)."""
        return self.models.compiler

    @property
    def loading(self) -> str | None:
        """The model this engine reads from disk and puts on its device now (its name), else
        None (``inference.worker.LoadingEngine``)."""
        return self.models.reading

    def list_models(self) -> list[str]:
        return self.registry.names()

    def probe(self) -> None:
        """Raise what the device raises once its CUDA context is gone: wait for its work so
        far, run one tiny kernel and read the result back (``inference.device_loss``). Off
        CUDA, nothing to check."""
        device = torch.device(self.device)
        if device.type != "cuda":
            return
        torch.cuda.synchronize(device)
        torch.ones(1, device=device).add_(1).item()

    def warm_up(self, cancel: threading.Event | None = None, model: str | None = None) -> None:
        """Load ``model`` (the first queued job's; None, or one no longer installed: the
        default) and render one throw-away step of one picture at its native size, so that
        the first job finds the model loaded and the device's first-call set-up (kernels,
        cuDNN plans) done; with a compiler, that step's UNet and VAE decoder calls queue the
        native shapes for the background compile; with CUDA graphs, three steps record the
        UNet's graph for that shape, and three steps of a 2x2 grid its. The picture is dropped
        (its PNG encodes on the CPU pool, not here). Raises what a render would (no model, a
        bad file): the caller decides what a failed warm-up means. ``cancel`` (a shutdown)
        stops it with ``RenderCancelled`` after the load or at the step's end."""
        raise_if_cancelled(cancel)
        installed = model in self.registry.loadable()
        warm = dataclasses.replace(WARM_UP, model=model if installed else None)
        # Loaded apart from the render so that a shutdown during the load skips the step.
        loaded = self.models.load(self.registry.resolve(warm.model, self.default_model))
        graphed = graphed_unet(loaded.pipeline) is not None
        if graphed:
            warm = dataclasses.replace(warm, steps=WARM_UP_STEPS_WITH_GRAPHS)
        raise_if_cancelled(cancel)
        self.render(warm, cancel=cancel)
        if graphed:
            self.render(dataclasses.replace(warm, count=WARM_UP_GRID_COUNT), cancel=cancel)

    def render(
        self,
        request: RenderRequest,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[RenderedImage]:
        # Preview JPEGs encode on the CPU pool; every report arrives before this returns.
        with ordered_progress(progress, self.tools.encoder) as reports:
            return self._without_graphs_if_short(lambda: self._render(request, reports, cancel))

    def _render(
        self,
        request: RenderRequest,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> list[RenderedImage]:
        if is_comparison(request):
            return self._render_comparison(request, progress, cancel)
        validate_request(request)
        if request.mode == "upscale":
            self._check_limits(request)  # the steps of a creative pass
            return upscale(
                request,
                progress,
                cancel,
                self.tools,
                default_model=self.default_model,
                default_upscaler=self.default_upscaler,
            )
        if request.mode == "faces":
            self._check_limits(request)  # the steps of a fix-faces pass
            return faces_of_picture(
                request, progress, cancel, self.tools, default_model=self.default_model
            )
        entry = self.registry.resolve(request.model, self.default_model)
        self._check_inputs(request, latent_channels_of(entry))
        request = self._sized(outpainted(request), entry)
        jobs = self._image_jobs(request)
        inputs = load_inputs(request)
        raise_if_cancelled(cancel)
        model = self.models.load(entry)
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
        Each progress report names the request it is for (``StepProgress.request_index``),
        and its preview shows that request's pictures alone. A request of several whose
        pictures came out blank fails alone: ``PartlyRendered`` carries the others' pictures.
        """
        with ordered_progress(progress, self.tools.encoder) as reports:
            return self._without_graphs_if_short(
                lambda: self._render_batch(requests, reports, cancel)
            )

    def _without_graphs_if_short(self, render: Callable[[], T]) -> T:
        """``render``; if the device ran out of memory while UNet graphs held some, once more
        without them. Graphs keep their shapes' activations, which a VAE decode or an upscale
        the eager engine fits may need (``inference.cuda_graphs``)."""
        try:
            return render()
        except torch.OutOfMemoryError:
            given_up = self.models.give_up_graphs()
            if not given_up:
                raise
        # Out of the handler: its frames, and the tensors they hold, are gone by now.
        log.warning("out of memory with UNet graphs held: dropped them, rendering again")
        try:
            return render()
        except torch.OutOfMemoryError:
            for unet in given_up:  # short without them too: the graphs were not the cause
                unet.may_record = True
            raise

    def _render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: OrderedProgress | None,
        cancel: threading.Event | None,
    ) -> list[list[RenderedImage]]:
        if not requests:
            return []
        if any(is_comparison(request) for request in requests):
            # A comparison's cells differ in what one pipeline call shares: one job at a time.
            return self._render_one_by_one(requests, progress, cancel)
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
            return self._render_one_by_one(requests, progress, cancel)
        entry = self.registry.resolve(requests[0].model, self.default_model)
        latent_channels = latent_channels_of(entry)
        for request in requests:
            validate_request(request)
            self._check_inputs(request, latent_channels)
        requests = [self._sized(request, entry) for request in requests]
        jobs_per_request = [self._image_jobs(request) for request in requests]
        raise_if_cancelled(cancel)
        model = self.models.load(entry)
        # Everything but what each picture's job carries (its prompts, seeds and what its
        # text says of its own request, ``OwnRequest``) is shared: the first request stands
        # for the batch.
        owners = [index for index, jobs in enumerate(jobs_per_request) for _ in jobs]
        # One member's blank picture is no reason to render the others' again (alone, a
        # request's blank picture fails the call at once).
        blank = BlankRows()
        images = self._run(
            model,
            requests[0],
            [job for jobs in jobs_per_request for job in jobs],
            RenderInputs(),
            None if progress is None else BatchProgress(progress, owners),
            cancel,
            blank if len(requests) > 1 else None,
        )
        results: dict[int, list[RenderedImage]] = {}
        failures: dict[int, RenderFailed] = {}
        first = 0  # the index of the request's first picture among the batch's
        for index, jobs in enumerate(jobs_per_request):
            blank_jobs = [job for row, job in enumerate(jobs, first) if row in blank.rows]
            rows = range(first, first + len(jobs))
            said = [blank.failures[row] for row in rows if row in blank.failures]
            if said:  # a later pass's own reason (a face restorer's blank output)
                failures[index] = said[0]
            elif blank_jobs:
                failures[index] = blank_pictures(blank_jobs, self.dtype)
            else:
                results[index] = images[first : first + len(jobs)]
            first += len(jobs)
        if failures:
            raise PartlyRendered(results, failures)
        return list(results.values())

    def _render_one_by_one(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> list[list[RenderedImage]]:
        """Each request as its own render, in order; its reports are its own alone. Of
        several, one whose picture came out blank fails alone (``PartlyRendered``)."""
        if len(requests) == 1:
            return [self.render(requests[0], for_request(progress, 0), cancel)]
        results: dict[int, list[RenderedImage]] = {}
        failures: dict[int, RenderFailed] = {}
        for index, request in enumerate(requests):
            try:
                results[index] = self.render(request, for_request(progress, index), cancel)
            except BlankPicture as failure:
                failures[index] = failure
        if failures:
            raise PartlyRendered(results, failures)
        return list(results.values())

    def _render_comparison(
        self,
        request: RenderRequest,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> list[RenderedImage]:
        """Each cell of an X/Y comparison as its own render, in order; progress counts the
        steps of the whole grid."""
        cells = cell_requests(request)
        total = sum(cell.steps for cell in cells)
        images: list[RenderedImage] = []
        done = 0
        for cell in cells:
            images += self.render(cell, _offset_progress(progress, done, total), cancel)
            done += cell.steps
        return images

    def _sized(self, request: RenderRequest, entry: ModelEntry) -> RenderRequest:
        """Fill a missing width/height (loading the model for its native size), then check it
        against the request ranges and this server's limits."""
        if request.width is None or request.height is None:
            native = native_size(self.models.load(entry))
            init_size = None
            if request.mode in ("img2img", "inpaint") and request.init_image:
                init_size = load_input_image(request.init_image, "init image").size
            request = with_default_size(request, native, init_size)
            validate_request(request)
        self._check_limits(request)
        return request

    def _check_inputs(self, request: RenderRequest, latent_channels: int | None) -> None:
        """The files ``request`` names, refused before any model loads: an unknown VAE or
        one of the other family (by both files' headers), face restorer, ControlNet or
        IP-Adapter."""
        vae_file(self.registry, request, latent_channels)
        check_faces(request, self.registry)
        check_controls(control_units(request.options), self.registry)
        check_image_prompt_models(image_prompt(request.options), self.registry)

    def _check_limits(self, request: RenderRequest) -> None:
        refusal = self.limits.refusal(request)
        if refusal is not None:
            raise RenderInputError(refusal)

    def _load_pipeline(self, entry: ModelEntry) -> Any:
        """Read ``entry``'s pipeline from disk (a benchmark may adjust what it loads)."""
        return load_pipeline(entry, self.dtype)

    def prepare(self, requests: Sequence[RenderRequest]) -> None:
        """Expand the prompts of ``requests``, expected to render next, on the calling thread
        (a CPU thread, while this engine's device renders): see ``inference.prepared``."""
        self._prepared.prepare(requests)

    def _image_jobs(self, request: RenderRequest) -> list[ImageJob]:
        return self._prepared.jobs(request)

    def _expanded_jobs(self, request: RenderRequest) -> list[ImageJob]:
        return image_jobs(
            request,
            self.wildcards,
            self.registry.network_files("lora"),
            self.registry.network_files("embedding"),
        )

    def _run(
        self,
        model: LoadedModel,
        request: RenderRequest,
        jobs: Sequence[ImageJob],
        inputs: RenderInputs,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
        blank: BlankRows | None = None,
    ) -> list[RenderedImage]:
        """Render ``jobs``; pictures whose prompts ask for different LoRA sets (wildcards can
        pick LoRAs per picture) run in separate pipeline calls, in their original order.
        ``blank``: where pictures that decode blank are set aside, by their index in ``jobs``
        (None: they fail the render)."""
        check_faces_model(model, request)  # before any step: SD3/Flux cannot fix faces
        preset = fast_preset_for(model, request)
        if preset is not None:
            request = preset.applied(request)
        groups: dict[tuple[ExtraNetwork, ...], list[int]] = {}
        for index, job in enumerate(jobs):
            groups.setdefault(job.loras, []).append(index)
        rendered: dict[int, RenderedImage] = {}
        for indices in groups.values():
            group = [jobs[index] for index in indices]
            set_aside = None if blank is None else BlankRows()
            # A batch's reports go to the requests whose pictures this call renders.
            reports = (
                progress.of_pictures(indices) if isinstance(progress, BatchProgress) else progress
            )
            if model.flow is not None:  # SD3 and Flux: their own pass
                images = render_flow_group(
                    model,
                    model.flow,
                    request,
                    group,
                    inputs,
                    reports,
                    cancel,
                    self.tools,
                    set_aside,
                )
            else:
                with job_networks(self.registry, self.models, model, request, group) as networks:
                    images = render_group(
                        model,
                        request,
                        group,
                        inputs,
                        networks,
                        reports,
                        cancel,
                        self.tools,
                        set_aside,
                    )
            rendered.update(zip(indices, images, strict=True))
            if blank is not None and set_aside is not None:  # by their index in ``jobs``
                blank.rows.update(indices[row] for row in set_aside.rows)
                blank.failures.update(
                    (indices[row], failure) for row, failure in set_aside.failures.items()
                )
        return [rendered[index] for index in range(len(jobs))]


def _offset_progress(
    progress: ProgressCallback | None, done: int, total: int
) -> ProgressCallback | None:
    """``progress`` for one part of a longer render: ``done`` steps before it, ``total`` in all."""
    if progress is None:
        return None
    report = progress

    def offset(step: StepProgress) -> None:
        report(dataclasses.replace(step, step=done + step.step, total_steps=total))

    return offset
