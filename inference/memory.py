"""How much memory each model needs, read from its files' headers (never its weights), for
``easel doctor``.

Per component (UNet or transformer, VAE, text encoders): its parameters and their bytes as
stored (dtype x element count; a GGUF tensor's packed blocks), and its bytes at the dtype it
runs in: float tensors convert to the engine's dtype, GGUF tensors stay packed, and with
``EASEL_QUANTIZE`` the 2-D weights of the denoiser and of a T5 encoder (its linear layers, as
torchao quantizes them) take one byte each plus a scale per row.

The peak for one 2x2 grid (four pictures) at the model's native size is an estimate:

    peak = weights + max(denoiser activations, VAE decode)
    denoiser activations = 4 x guidance batches x tokens x width x item size x DENOISER_COPIES
    VAE decode          = VAE_DECODE_COPIES x decoder width x side^2 x item size

``tokens`` is the latent's pixel count, (side/8)^2 for a UNet and (side/16)^2 for a transformer
(2x2 patches); ``width`` is the denoiser's first layer's output channels (320 for SD1.5, 3072 for
Flux); guidance batches are 2 with classifier-free guidance and 1 for Flux (distilled). The VAE
decodes a batch one picture at a time (``inference.passes.denoise.vae_decoding``), so its term
is one picture's. Both terms end before the other starts, so only the larger counts. The copies
were measured on the CPU for SD1.5 (see the constants); on a GPU they are unmeasured.

Pure Python apart from ``gguf`` (numpy): no torch, so listing costs nothing.
"""

from __future__ import annotations

import dataclasses
import json
import reprlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from inference.flow_detect import UnknownSD3Variant, flow_family_from_tensors
from inference.gguf_header import TensorInfo, gguf_tensors
from inference.metadata import family_from_tensors, safetensors_header
from inference.quantization import T5_ENCODER_CLASS
from inference.registry import (
    GGUF_SUFFIX,
    SIDECAR_SUFFIX,
    ModelEntry,
    denoiser_gguf,
    folder_weights,
)

# Pictures in one 2x2 grid.
GRID_PICTURES = 4
# How many tensors of the widest layer's size the working memory comes to. Measured on the CPU
# (float32, growth of the process's peak RSS, random-weight SD1.5 from the shipped config, 512x512):
# one UNet call with CFG grew it 461 MiB, 46 x (2 x 64^2 x 320 x 4 B); one picture's VAE decode
# 962 MiB, 7.5 x (128 x 512^2 x 4 B), and four decoded one at a time 1001 MiB, 7.8 x
# (benchmarks/vae_decode.py; all four at once: 3100 MiB). Unmeasured on a GPU, and for
# transformers (the UNet's is used).
DENOISER_COPIES = 46
VAE_DECODE_COPIES = 8
# Native side when no config says it (SD3 and Flux are trained at 1024).
DEFAULT_NATIVE_SIDE = 1024
VAE_SCALE = 8
TRANSFORMER_PATCH = 2
# Single-file prefixes (the original layouts, as the web UI and ComfyUI save them).
_COMPONENT_PREFIXES = (
    ("model.diffusion_model.", "denoiser"),
    ("first_stage_model.", "vae"),
    ("vae.", "vae"),
    ("cond_stage_model.", "text_encoder"),
    ("conditioner.embedders.0.", "text_encoder"),
    ("conditioner.embedders.1.", "text_encoder_2"),
    ("text_encoders.clip_l.", "text_encoder"),
    ("text_encoders.clip_g.", "text_encoder_2"),
    ("text_encoders.t5xxl.", "text_encoder_3"),
)
# What EASEL_QUANTIZE quantizes besides the denoiser: the T5 encoder (inference.quantization).
_SINGLE_FILE_T5 = "text_encoder_3"
# The first layer whose output channels are the denoiser's width, in each layout.
_WIDTH_TENSORS = (
    "input_blocks.0.0.weight",  # LDM UNet
    "conv_in.weight",  # diffusers UNet
    "img_in.weight",  # Flux, original
    "x_embedder.weight",  # Flux, diffusers
    "x_embedder.proj.weight",  # SD3, original
    "pos_embed.proj.weight",  # SD3, diffusers
)
# The VAE decoder's full-resolution width: its last conv's input channels.
_VAE_WIDTH_TENSOR = "decoder.conv_out.weight"
_DENOISER_FOLDERS = ("unet", "transformer")


@dataclass(frozen=True)
class ComponentMemory:
    name: str
    parameters: int
    stored_bytes: int
    run_bytes: int


@dataclass(frozen=True)
class ModelMemory:
    name: str
    components: tuple[ComponentMemory, ...]
    native_side: int
    peak_bytes: int
    # What could not be read (a pickle, a ``.bin`` folder): its figures are missing.
    unread: tuple[str, ...] = ()

    @property
    def weight_bytes(self) -> int:
        """All components at the dtype they run in."""
        return sum(component.run_bytes for component in self.components)


def safetensors_tensors(path: Path) -> list[TensorInfo]:
    header = safetensors_header(path)
    return [
        TensorInfo(
            name,
            tuple(info["shape"]),  # whole numbers, as the header's reader checked
            info["data_offsets"][1] - info["data_offsets"][0],
        )
        for name, info in header.items()
        if name != "__metadata__"
    ]


def file_tensors(path: Path) -> Sequence[TensorInfo]:
    """The tensors of a ``.gguf`` or ``.safetensors`` file, from its header."""
    return gguf_tensors(path) if path.suffix == GGUF_SUFFIX else safetensors_tensors(path)


def run_bytes(tensor: TensorInfo, item_size: int, quantized: bool) -> int:
    """``tensor``'s bytes on the device: packed GGUF blocks as stored; with ``quantized`` (the
    denoiser under EASEL_QUANTIZE) a linear weight is one byte a value plus a scale per row;
    any other tensor at ``item_size`` bytes a value."""
    if tensor.packed is not None:
        return tensor.stored_bytes
    if quantized and len(tensor.shape) == 2 and tensor.name.endswith(".weight"):
        return tensor.numel + tensor.shape[0] * item_size
    return tensor.numel * item_size


def _component_of(name: str) -> tuple[str, str]:
    """(component, name inside it) for a single file's tensor name."""
    for prefix, component in _COMPONENT_PREFIXES:
        if name.startswith(prefix):
            return component, name.removeprefix(prefix)
    return "denoiser", name  # a denoiser saved alone (Flux's split transformer, a GGUF)


def _components(
    parts: Iterable[tuple[str, Sequence[TensorInfo]]], item_size: int, quantized: set[str]
) -> tuple[ComponentMemory, ...]:
    """Each part's figures; those named in ``quantized`` under EASEL_QUANTIZE."""
    return tuple(
        ComponentMemory(
            name,
            sum(t.numel for t in tensors),
            sum(t.stored_bytes for t in tensors),
            sum(run_bytes(t, item_size, name in quantized) for t in tensors),
        )
        for name, tensors in parts
    )


def _shape_of(tensors: Iterable[TensorInfo], suffixes: Sequence[str]) -> tuple[int, ...]:
    """The shape of the first tensor named with one of ``suffixes`` (``(0, 0)``: none)."""
    found = (t.shape for t in tensors if any(t.name.endswith(suffix) for suffix in suffixes))
    return next(found, (0, 0))


def peak_bytes(
    weights: int,
    side: int,
    denoiser: Sequence[TensorInfo],
    vae: Sequence[TensorInfo],
    item_size: int,
    *,
    transformer: bool,
    guidance_batches: int,
) -> int:
    """The module docstring's estimate for one 2x2 grid at ``side`` x ``side`` pixels."""
    latent_side = side // VAE_SCALE // (TRANSFORMER_PATCH if transformer else 1)
    width = _shape_of(denoiser, _WIDTH_TENSORS)[0]
    denoising = (
        GRID_PICTURES * guidance_batches * latent_side**2 * width * item_size * DENOISER_COPIES
    )
    vae_width = _shape_of(vae, (_VAE_WIDTH_TENSOR,))[1]
    decoding = VAE_DECODE_COPIES * vae_width * side**2 * item_size  # one picture at a time
    return weights + max(denoising, decoding)


def model_memory(
    entry: ModelEntry,
    item_size: int,
    quantize: bool,
    part_files: Mapping[str, tuple[str, Path]] | None = None,
) -> ModelMemory:
    """``entry``'s memory figures when its float weights run at ``item_size`` bytes a value
    (``quantize``: under EASEL_QUANTIZE int8/fp8). ``part_files``: the files of the parts a
    split release's transformer is loaded with, by component, each with its part (``T5``,
    ``VAE``...), as ``inference.checkpoints.split_part_files`` gives them."""
    if entry.format == "pickle":
        return ModelMemory(entry.name, (), DEFAULT_NATIVE_SIDE, 0, (entry.path.name,))
    if entry.format == "diffusers":
        return _folder_memory(entry, item_size, quantize)
    tensors = file_tensors(entry.path)  # a .gguf: an SD3/Flux transformer alone
    names = {tensor.name for tensor in tensors}
    split: dict[str, list[TensorInfo]] = {}
    for tensor in tensors:
        component, inner = _component_of(tensor.name)
        split.setdefault(component, []).append(dataclasses.replace(tensor, name=inner))
    unet = _has_unet(names)
    denoiser_name = "unet" if unet else "transformer"
    parts = {denoiser_name if k == "denoiser" else k: v for k, v in split.items()}
    separate = part_files or {}
    # A part's GGUF file (T5) is unpacked as it loads (transformers' reader): it runs unpacked.
    parts |= {
        component: [dataclasses.replace(tensor, packed=None) for tensor in file_tensors(path)]
        for component, (_, path) in separate.items()
    }
    t5 = {component for component, (part, _) in separate.items() if part == "T5"}
    quantized = {denoiser_name, _SINGLE_FILE_T5, *t5} if quantize else set()
    components = _components(sorted(parts.items()), item_size, quantized)
    try:
        flux = (flow_family_from_tensors(names) or "").startswith("flux")
    except UnknownSD3Variant:
        flux = False
    side = _file_side(entry.path, names)
    weights = sum(component.run_bytes for component in components)
    peak = peak_bytes(
        weights,
        side,
        parts.get(denoiser_name, []),
        parts.get("vae", []),
        item_size,
        transformer=not unet,
        guidance_batches=1 if flux else 2,
    )
    return ModelMemory(entry.name, components, side, peak)


def native_side(entry: ModelEntry) -> int:
    """The side ``entry`` renders at when a request names no size (512 for SD1.5, 1024 for
    SDXL, SD3 and Flux), from its configs or its tensor names as ``model_memory`` reads it.
    Raises ``OSError`` or ``ValueError`` when its files cannot be read."""
    if entry.format == "pickle":
        return DEFAULT_NATIVE_SIDE
    if entry.format == "diffusers":
        return _folder_side(entry.path, transformer=(entry.path / "transformer").is_dir())
    return _file_side(entry.path, {tensor.name for tensor in file_tensors(entry.path)})


def native_side_sources(entry: ModelEntry) -> tuple[Path, ...]:
    """What ``native_side(entry)`` reads: a change to one of these paths can change it."""
    if entry.format == "diffusers":
        return entry.path, *(entry.path / part / "config.json" for part in ("unet", "vae"))
    return entry.path, _sidecar_unet_config(entry.path)


def _has_unet(names: set[str]) -> bool:
    return any(name.endswith("input_blocks.0.0.weight") for name in names)


def _file_side(checkpoint: Path, names: set[str]) -> int:
    """A single file's native side: its UNet's, else (SD3, Flux) the default."""
    return _single_file_side(checkpoint, names) if _has_unet(names) else DEFAULT_NATIVE_SIDE


def _folder_side(folder: Path, *, transformer: bool) -> int:
    """A diffusers folder's native side: its transformer model's VAE's sample size, else its
    UNet's sample size in pixels."""
    if transformer:  # the VAE's size is in pixels
        return _file_sample_size(folder / "vae" / "config.json", DEFAULT_NATIVE_SIDE)
    return (
        _file_sample_size(folder / "unet" / "config.json", DEFAULT_NATIVE_SIDE // VAE_SCALE)
        * VAE_SCALE
    )


def _single_file_side(checkpoint: Path, names: set[str]) -> int:
    """The native side from the checkpoint's sidecar config, else the shipped config of the
    detected SD family."""
    config = _sidecar_unet_config(checkpoint)
    if not config.is_file():
        family = family_from_tensors(dict.fromkeys(names)) or "sd15"
        config = Path(__file__).parent / "configs" / family / "unet" / "config.json"
    return _file_sample_size(config) * VAE_SCALE


def _file_sample_size(config_file: Path, default: int | None = None) -> int:
    """The ``sample_size`` a UNet's or VAE's ``config.json`` gives (``sample_size``)."""
    return sample_size(json.loads(config_file.read_text()), str(config_file), default)


def sample_size(config: object, source: str, default: int | None = None) -> int:
    """The ``sample_size`` a UNet's or VAE's config gives (``default`` when it gives none; of
    a list, as diffusers also takes, its first value); ``ValueError`` naming ``source`` when
    that is not a positive whole number. One rule for pricing (the file) and the engine (the
    loaded pipeline's config)."""
    size = config.get("sample_size", default) if isinstance(config, Mapping) else None
    if isinstance(size, list):
        size = size[0] if size else None
    if type(size) is not int or size <= 0:
        raise ValueError(
            f"{source} gives sample_size {reprlib.repr(size)}, not a positive whole number"
        )
    return size


def _sidecar_unet_config(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.stem + SIDECAR_SUFFIX) / "unet" / "config.json"


def _config_class(folder: Path) -> str | None:
    """The class a diffusers or transformers component folder's config names."""
    if not (folder / "config.json").is_file():
        return None
    config = json.loads((folder / "config.json").read_text())
    named = config.get("_class_name") or (config.get("architectures") or [None])[0]
    return None if named is None else str(named)


def _folder_memory(entry: ModelEntry, item_size: int, quantize: bool) -> ModelMemory:
    parts: list[tuple[str, list[TensorInfo]]] = []
    unread: list[str] = []
    for folder in sorted(p for p in entry.path.iterdir() if p.is_dir()):
        files = folder_weights(folder)
        if files:
            parts.append((folder.name, [t for f in files for t in file_tensors(f)]))
        elif any(folder.glob("*.bin")):
            unread.append(f"{folder.name} (.bin)")
    by_name = dict(parts)
    t5 = {name for name in by_name if _config_class(entry.path / name) == T5_ENCODER_CLASS}
    quantized = {*_DENOISER_FOLDERS, *t5} if quantize else set()
    components = _components(parts, item_size, quantized)
    transformer = "transformer" in by_name
    side = _folder_side(entry.path, transformer=transformer)
    index = json.loads((entry.path / "model_index.json").read_text())
    flux = "Flux" in str(index.get("_class_name", ""))
    weights = sum(component.run_bytes for component in components)
    peak = peak_bytes(
        weights,
        side,
        by_name.get("transformer" if transformer else "unet", []),
        by_name.get("vae", []),
        item_size,
        transformer=transformer,
        guidance_batches=1 if flux else 2,
    )
    return ModelMemory(entry.name, components, side, peak, tuple(unread))


def gguf_quantization(entry: ModelEntry) -> str | None:
    """The GGUF type most of a model's GGUF denoiser (a ``.gguf`` transformer file, or one in a
    diffusers folder) is packed in (``Q8_0``), for the model list; None when it has none."""
    path = entry.path if entry.format == "gguf" else None
    if entry.format == "diffusers":
        path = denoiser_gguf(entry.path)
    if path is None:
        return None
    try:
        tensors = gguf_tensors(path)
    except (OSError, ValueError):  # cut short since the scan found it whole: the next leaves it out
        return None
    packed: Counter[str] = Counter()
    for tensor in tensors:
        if tensor.packed is not None:
            packed[tensor.packed] += tensor.numel
    return packed.most_common(1)[0][0] if packed else None
