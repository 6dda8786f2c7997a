"""The per-device model cache: loaded pipelines kept least recently used first, bounded by a
count and a memory budget (``EASEL_MODEL_CACHE_GB``), plus the last VAE override and model
upscaler, each kept while it is asked for again. A model is compiled as it loads when the
engine has a compiler (``inference.compile``).

Each model and VAE override is kept with its files' versions (``file_versions.file_stamp``)
and the hash of the weights loaded: one replaced under its name is loaded again at its next
use (a ``stat`` per file and job), and the infotext gives the hash of what rendered. A
diffusers folder is judged by the folder and each weight file its components load: a VAE or
text encoder replaced inside it alone is loaded again too (``stamped_files``).
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import torch
from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, DiffusionPipeline
from PIL import Image

from inference.checkpoints import load_single_file
from inference.compile import Compiler
from inference.cuda_graphs import (
    GraphedForward,
    RecorderFactory,
    empty_device_cache,
    graphed_unet,
    install_graphs,
)
from inference.faces import FaceRestorer, load_face_restorer
from inference.family_rules import REFINER_FAMILY, refiner_as_model
from inference.file_versions import FileStamp, being_written, file_stamp, written_lately
from inference.flow_families import FlowFamily, flow_family
from inference.memory import DEFAULT_NATIVE_SIDE, VAE_SCALE, sample_size
from inference.metadata import checkpoint_family
from inference.model_upscale import SpandrelModel, TileDone, load_upscaler, model_upscale
from inference.networks import load_vae
from inference.owned_weights import own_weights
from inference.preview import LatentPreviewer
from inference.quantization import Quantize, gguf_denoiser, quantize_denoiser, tensor_bytes
from inference.registry import (
    SIDECAR_SUFFIX,
    ModelEntry,
    ModelRegistry,
    entry_weights,
    stat_and_problem,
)
from inference.types import RenderFailed
from inference.upscale import lanczos_upscale

log = logging.getLogger(__name__)

# Latents (4) + mask (1) + masked-picture latents (4).
INPAINTING_UNET_CHANNELS = 9

PipelineTask = Literal["txt2img", "img2img", "inpaint"]
Kept = TypeVar("Kept", bound=SpandrelModel)
Read = TypeVar("Read")
_TASK_PIPELINES = {"img2img": AutoPipelineForImage2Image, "inpaint": AutoPipelineForInpainting}
# Loads of a model or VAE whose files changed while it was read (a copy ending) before the job
# fails (refunded) rather than render weights its infotext's hash is not of.
READ_TRIES = 3
# The fields of a ``FileStamp``, as the log names those that changed.
_STAMP_FIELDS = ("device", "inode", "modification time", "change time", "size")
# Fields that change with no new content: a file system whose inode numbers are not stable
# (CIFS ``noserverino``, FUSE without ``use_ino``), a ``chmod``/``chown``, a hard-link snapshot.
_METADATA_FIELDS = frozenset({"device", "inode", "change time"})


def stamped_files(entry: ModelEntry) -> tuple[Path, ...]:
    """The files whose versions say which weights ``entry`` loads: its file or folder (links
    followed: a folder swapped by a link), the file its hash is of (a diffusers folder's
    denoiser weights), the other weight files its load reads (``entry_weights``: a diffusers
    folder's VAE and text encoders, a split release's T5, CLIP and VAE files), and a single
    file's sidecar config folder (one added or removed). Listed as the model loads; each job
    then stats them."""
    files = [entry.path, entry.hashed_file, *entry_weights(entry)]
    if entry.format != "diffusers":
        files.append(entry.path.with_name(entry.path.stem + SIDECAR_SUFFIX))
    return tuple(dict.fromkeys(files))


def stamps_of(files: tuple[Path, ...]) -> tuple[FileStamp, ...]:
    return tuple(file_stamp(file) for file in files)


def reload_warning(what: str, before: tuple[FileStamp, ...], after: tuple[FileStamp, ...]) -> str:
    """The operator's line for ``what`` loaded again because its files' versions went from
    ``before`` to ``after``, naming the fields that changed: when none is its size or
    modification time, the content is likely the same, and each such change costs a load."""
    changed: dict[str, None] = {}
    for old, new in zip(before, after, strict=True):
        if old is None or new is None:
            if old != new:
                changed["added" if old is None else "removed"] = None
            continue
        for name, was, now in zip(_STAMP_FIELDS, old, new, strict=True):
            if was != now:
                changed[name] = None
    line = f"{what} changed on disk ({', '.join(changed)}): loading it again"
    if changed.keys() <= _METADATA_FIELDS:
        line += (
            "; its size and modification time are the same, so likely not its content: a file "
            "system whose inode numbers are not stable, or a chmod/chown, reloads it each time"
        )
    return line


@dataclass
class LoadedModel:
    entry: ModelEntry
    pipeline: Any  # the diffusers Stable Diffusion (XL) pipeline the model loads as
    scheduler_config: dict[str, Any]
    short_hash: str
    # What the infotext calls its denoiser's quantization (Q8_0, int8); None: not quantized.
    quantization: str | None = None
    task_pipelines: dict[str, Any] = field(default_factory=dict)
    # ``stamped_files(entry)`` and their versions before the load: another version is a
    # replaced model, loaded again at its next use.
    files: tuple[Path, ...] = ()
    stamps: tuple[FileStamp, ...] = ()

    @property
    def weight_bytes(self) -> int:
        modules = [c for c in self.pipeline.components.values() if isinstance(c, torch.nn.Module)]
        return sum(tensor_bytes(t) for m in modules for t in m.parameters())

    @property
    def is_refiner(self) -> bool:
        """An SDXL refiner: the second text encoder alone, an img2img pipeline."""
        return getattr(self.pipeline, "text_encoder_2", None) is not None and (
            self.pipeline.text_encoder is None
        )

    @property
    def is_sdxl_base(self) -> bool:
        two_encoders = getattr(self.pipeline, "text_encoder_2", None) is not None
        return two_encoders and not self.is_refiner and self.flow is None

    @property
    def inpainting_unet(self) -> bool:
        unet = getattr(self.pipeline, "unet", None)  # SD3 and Flux have a transformer
        return unet is not None and bool(unet.config.in_channels == INPAINTING_UNET_CHANNELS)

    @functools.cached_property
    def flow(self) -> FlowFamily | None:
        """The flow-matching family (SD3, Flux dev or schnell); None for SD/SDXL UNets."""
        return flow_family(self.pipeline)

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
        if task == "img2img" and self.is_refiner:  # already an img2img pipeline
            return self.pipeline
        if task not in self.task_pipelines:
            pipeline = _TASK_PIPELINES[task].from_pipe(self.pipeline)
            pipeline.set_progress_bar_config(disable=True)  # from_pipe does not carry it over
            self.task_pipelines[task] = pipeline
        return self.task_pipelines[task]


@dataclass(frozen=True)
class VaeOverride:
    """A VAE file loaded for a model's pipeline, the file's version then, and its SHA-256."""

    path: Path
    model: LoadedModel
    stamp: FileStamp
    vae: Any  # the AutoencoderKL replacing the model's own
    sha256: str


class LastLoaded(Generic[Kept]):
    """The last spandrel model of one kind (upscaler, face restorer) on a device, kept while it
    is asked for again; the old one is dropped before the next loads, never both in memory."""

    def __init__(self, load: Callable[[str, Path, str], Kept]) -> None:
        self._load = load
        self._model: Kept | None = None

    def get(self, name: str, path: Path, device: str, release: Callable[[], None]) -> Kept:
        """The model in ``path`` on ``device``; ``release`` frees the device's memory after
        the old one is dropped."""
        if self._model is None or not self._model.is_current(path):
            self._model = None
            release()
            self._model = self._load(name, path, device)
        return self._model

    def drop(self) -> None:
        self._model = None


class ModelCache:
    """One device's loaded models; the least recently used is dropped first (the last one
    loaded always stays). ``load_pipeline`` reads a model's pipeline from disk."""

    def __init__(
        self,
        registry: ModelRegistry,
        device: str,
        load_pipeline: Callable[[ModelEntry], Any],
        *,
        max_loaded_models: int = 1,
        memory_budget_bytes: int | None = None,
        cpu_offload: bool = False,
        compiler: Compiler | None = None,
        graph_recorders: RecorderFactory | None = None,
        quantize: Quantize = "off",
    ) -> None:
        self.registry = registry
        self.device = device
        self.load_pipeline = load_pipeline
        self.max_loaded_models = max_loaded_models
        self.memory_budget_bytes = memory_budget_bytes
        self.cpu_offload = cpu_offload
        self.compiler = compiler
        # Not with a compiler (inductor replays graphs of its own in reduce-overhead mode)
        # nor offloaded (the weights move between calls, and a graph reads fixed addresses).
        self.graph_recorders = None if compiler is not None or cpu_offload else graph_recorders
        self.quantize = quantize
        self.loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        # The last VAE override, kept while it is asked for again.
        self._vae_override: VaeOverride | None = None
        self._upscaler = LastLoaded(load_upscaler)
        self._face_restorer = LastLoaded(load_face_restorer)
        # The last SDXL refiner, kept (beside the base model) while it is asked for again.
        self._refiner: LoadedModel | None = None
        # The model being read from disk and put on the device now (its name), written by the
        # device thread: a stop that cannot wait for that thread tells a load from a step.
        self.reading: str | None = None

    def clear(self) -> None:
        """Drop every cached model, VAE, upscaler and refiner (tests start afresh with it; the
        product keeps its models until the process ends)."""
        self.loaded.clear()
        self._vae_override = None
        self._upscaler.drop()
        self._face_restorer.drop()
        self._refiner = None
        self.release_device_memory()

    def load(self, entry: ModelEntry) -> LoadedModel:
        cached = self.loaded.get(entry.name)
        if cached is not None and cached.entry == entry and self._current(cached):
            self.loaded.move_to_end(entry.name)
            return cached
        if cached is not None:  # dropped before its new version loads, never both in memory
            self._forget(self.loaded.pop(entry.name))
            del cached
        if checkpoint_family(entry) == REFINER_FAMILY:
            raise refiner_as_model(entry.name)
        while len(self.loaded) >= self.max_loaded_models:
            self._evict_oldest()
        self.release_device_memory()
        loaded = self._read(entry)
        self.loaded[entry.name] = loaded
        self._fit_memory_budget()
        return loaded

    def refiner(self, entry: ModelEntry) -> LoadedModel:
        """The SDXL refiner ``entry``, held beside the loaded base models (not counted in
        ``max_loaded_models``): both are in memory while the refined pictures render."""
        if (
            self._refiner is not None
            and self._refiner.entry == entry
            and self._current(self._refiner)
        ):
            return self._refiner
        self._refiner = None  # drop the old one before loading the next (no reference kept)
        self.release_device_memory()
        self._refiner = self._read(entry)
        self._fit_memory_budget()  # base models beyond the last one make room
        return self._refiner

    def _current(self, model: LoadedModel) -> bool:
        """Whether ``model``'s files are as it was loaded from, or their new version would
        not load yet (being copied over, removed, written too lately to tell): the weights
        loaded, whose hash the infotext gives, serve the jobs until it does. Never waits: a
        copy writing the file in place keeps it young, and jobs render meanwhile."""
        stamps = stamps_of(model.files)
        if stamps == model.stamps:
            return True
        changed = [
            file
            for file, then, now in zip(model.files, model.stamps, stamps, strict=True)
            if then != now
        ]
        problem = self.registry.load_problem(model.entry) or written_lately(changed, model.files[0])
        if problem is not None:
            log.info("model %s changed on disk, not loadable yet (%s)", model.entry.name, problem)
            return True
        log.warning(reload_warning(f"model {model.entry.name}", model.stamps, stamps))
        return False

    def _read(self, entry: ModelEntry) -> LoadedModel:
        """``_on_device``, named by ``reading`` meanwhile."""
        self.reading = entry.name
        try:
            files = stamped_files(entry)
            loaded, stamps = self._unchanged_while_read(
                f"model {entry.name}",
                files,
                lambda: self._on_device(entry),
                lambda: self.registry.load_problem(entry),
            )
            return dataclasses.replace(loaded, files=files, stamps=stamps)
        finally:
            self.reading = None

    def _unchanged_while_read(
        self,
        what: str,
        files: tuple[Path, ...],
        read: Callable[[], Read],
        problem: Callable[[], str | None],
    ) -> tuple[Read, tuple[FileStamp, ...]]:
        """``read()`` (a load and its hash) and the versions of ``files`` it read, the same
        before and after it: read again when they changed meanwhile, else the hash could be
        of another version than the weights. Not read again while ``problem()`` says the new
        version would not load (a copy under way): refused, as its look-up would have been.
        Nor read while one of ``files`` is being written (``being_written``): refused (the job
        is refunded). A read that fails while the files changed (cut short as it read them)
        counts as such a change."""
        for attempt in range(READ_TRIES):
            why = (problem() if attempt > 0 else None) or being_written(files)
            if why is not None:
                raise RenderFailed(f"{what} cannot be loaded now: {why}")
            before = stamps_of(files)
            try:
                value = read()
            except Exception:
                if stamps_of(files) == before:
                    raise
            else:
                if stamps_of(files) == before:
                    return value, before
                del value  # freed before the next read
            self.release_device_memory()
            log.warning("%s changed on disk while it loaded: loading it again", what)
        raise RenderFailed(
            f"{what} kept changing on disk while it loaded (still being copied?): try again "
            "in a minute"
        )

    def _on_device(self, entry: ModelEntry) -> LoadedModel:
        """``entry`` read from disk and put on the device (offloaded, compiled as set)."""
        pipeline = self.load_pipeline(entry)
        # On the CPU when offloaded (the offload hooks move the weights), else layer by layer on
        # the device, which then never holds the whole denoiser unquantized.
        quantization = quantize_denoiser(
            pipeline, self.quantize, "cpu" if self.cpu_offload else self.device
        )
        if self.cpu_offload:
            pipeline.enable_model_cpu_offload(device=self.device)
        else:
            pipeline.to(self.device)
        # Weights left on the host (the CPU engine, offload) are the file's pages until copied:
        # the file overwritten in place would end the process (``inference.owned_weights``).
        for component in pipeline.components.values():
            if isinstance(component, torch.nn.Module):
                own_weights(component)
        # No channels_last: with it, the eager engine ran SD1.5 at 0.70x plain diffusers' steps/s
        # on an H200 (torch 2.11), and CUDA GroupNorm there gives NCHW outputs for NHWC inputs
        # (pytorch#111824), so every norm converts layouts and back. How much of the gap that
        # explains is unmeasured: benchmarks/gpu.py --channels-last measures it on a GPU.
        # The compiler knows UNets only: SD3 and Flux transformers run eager.
        if getattr(pipeline, "unet", None) is not None:
            if self.compiler is not None:
                self.compiler.install(pipeline)
            elif self.graph_recorders is not None and not install_graphs(
                pipeline, self.graph_recorders
            ):
                log.info("%s: quantized UNet, replayed from no CUDA graphs", entry.name)
        pipeline.set_progress_bar_config(disable=True)
        return LoadedModel(
            entry=entry,
            pipeline=pipeline,
            scheduler_config=dict(pipeline.scheduler.config),
            short_hash=self.registry.short_hash(entry),
            quantization=quantization,
        )

    def vae_for(self, model: LoadedModel, path: Path) -> VaeOverride:
        """The VAE in ``path`` for ``model``'s pipeline, loaded again once the file changed
        (the one loaded serves while the file is young: ``written_lately``, no wait)."""
        kept = self._vae_override
        if kept is not None and kept.path == path and kept.model is model:
            stamp = file_stamp(path)
            if stamp == kept.stamp:
                return kept
            if (problem := written_lately((path,))) is not None:
                log.info("VAE %s changed on disk, not loaded again yet (%s)", path.name, problem)
                return kept
            log.warning(reload_warning(f"VAE {path.name}", (kept.stamp,), (stamp,)))
        del kept
        self._vae_override = None  # drop the old one before loading the next

        def read() -> tuple[Any, str]:
            return load_vae(path, model.pipeline.vae), self.registry.sha256(path)

        (vae, sha256), (stamp,) = self._unchanged_while_read(
            f"VAE {path.name}", (path,), read, lambda: stat_and_problem(path)[1]
        )
        self._vae_override = VaeOverride(path, model, stamp, vae, sha256)
        return self._vae_override

    def enlarge(
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
        model = self._upscaler.get(name, path, self.device, self.release_device_memory)
        return model_upscale(model, image, size, cancel=cancel, on_tile=on_tile)

    def face_restorer(self, name: str, path: Path) -> FaceRestorer:
        """The face restorer in ``path`` on this device (as ``resolve_face_restorer`` gives it)."""
        return self._face_restorer.get(name, path, self.device, self.release_device_memory)

    def _fit_memory_budget(self) -> None:
        if self.memory_budget_bytes is None:
            return
        evicted = False
        while len(self.loaded) > 1 and self._cache_bytes() > self.memory_budget_bytes:
            self._evict_oldest()
            evicted = True
        if evicted:
            self.release_device_memory()

    def _evict_oldest(self) -> None:
        self._forget(self.loaded.popitem(last=False)[1])

    def _forget(self, dropped: LoadedModel) -> None:
        # A VAE override belongs to its model's pipeline: kept, it would keep the dropped
        # model (weights, CUDA graphs) alive until the next override.
        if self._vae_override is not None and self._vae_override.model is dropped:
            self._vae_override = None

    def _cache_bytes(self) -> int:
        refiner = 0 if self._refiner is None else self._refiner.weight_bytes
        return refiner + sum(model.weight_bytes for model in self.loaded.values())

    def give_up_graphs(self) -> list[GraphedForward]:
        """Drop the graphs of every cached UNet that holds some, which then records no more
        (the device ran out of memory); those UNets, their memory given back."""
        models = [*self.loaded.values(), *([self._refiner] if self._refiner else [])]
        unets = [graphed_unet(model.pipeline) for model in models]
        holding = [unet for unet in unets if unet is not None and unet.holds_graphs]
        for unet in holding:
            unet.give_up()
        if holding:
            self.release_device_memory()
        return holding

    def release_device_memory(self) -> None:
        if self.compiler is not None:
            gc.collect()  # a compiled twin is freed in a cycle with torch.compile's wrapper
        empty_device_cache(self.device)


def load_pipeline(entry: ModelEntry, dtype: torch.dtype) -> Any:
    """A model's pipeline read from disk (diffusers folder or single file), in ``dtype``."""
    if entry.format != "diffusers":
        return load_single_file(entry, dtype)
    index = json.loads((entry.path / "model_index.json").read_text())
    no_safety_checker: dict[str, Any] = (
        {"safety_checker": None, "requires_safety_checker": False}
        if "safety_checker" in index
        else {}
    )
    return DiffusionPipeline.from_pretrained(
        entry.path,
        dtype=dtype,
        local_files_only=True,
        **no_safety_checker,
        # A GGUF file in unet/ or transformer/ stands in for its safetensors
        # (inference.quantization).
        **gguf_denoiser(entry.path, dtype),
    )


def native_size(model: LoadedModel) -> int:
    """The side the model was trained at (512 for SD1.5, 1024 for SDXL, SD3 and Flux), by the
    rule and default the pricing reads its config with (``memory.sample_size``); RenderFailed
    naming the model (not its path) when its config gives no positive whole size."""
    pipeline = model.pipeline
    transformer = getattr(pipeline, "unet", None) is None  # SD3 and Flux: their VAE's size
    component = "VAE" if transformer else "UNet"
    config = (pipeline.vae if transformer else pipeline.unet).config
    # What diffusers filled in from the class's defaults (AutoencoderKL's 32) is treated as
    # absent: the file gave none, and the pricing then takes its default.
    defaulted = set(config.get("_use_default_values", ()))
    written = {key: value for key, value in config.items() if key not in defaulted}
    default = DEFAULT_NATIVE_SIDE if transformer else DEFAULT_NATIVE_SIDE // VAE_SCALE
    try:
        side = sample_size(written, f"{model.entry.name}'s {component} config", default)
    except ValueError as error:
        raise RenderFailed(f"{error}: ask an admin to fix the model") from None
    return side if transformer else side * int(pipeline.vae_scale_factor)
