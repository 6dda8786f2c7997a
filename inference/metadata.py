"""What the lists show about a model file, read from its header only (never its weights):
a checkpoint's family, a LoRA's or embedding's base model and trigger words (the kohya
``ss_*`` and ``modelspec.*`` metadata keys).

Pure Python (no torch): a ``.safetensors`` file starts with an 8-byte length and that many
bytes of JSON naming every tensor (with its shape) and, under ``__metadata__``, strings.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import reprlib
import struct
import zipfile
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeGuard

from inference.file_versions import PerFileVersion, problem_of, unreadable
from inference.flow_detect import (
    FAMILY_GUIDANCE,
    FLOW_FAMILY_NAMES,
    SD3_LABEL,
    UnknownSD3Variant,
    flow_family_from_tensors,
    gguf_tensor_names,
)

if TYPE_CHECKING:  # the registry reads headers here, to leave out files that do not load
    from inference.registry import ModelEntry

log = logging.getLogger(__name__)

# safetensors itself refuses headers above 100 MB; a list reads no more.
MAX_HEADER_BYTES = 100 * 1024 * 1024
# How torch's pickle weights files start since torch 1.6: a zip archive's first entry.
_ZIP_START = b"PK\x03\x04"
# The bits of one element of each safetensors type, to check a tensor's shape against its data.
_DTYPE_BITS = {
    **dict.fromkeys(
        ("BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E5M2FNUZ", "F8_E4M3FNUZ"), 8
    ),
    **dict.fromkeys(("U16", "I16", "F16", "BF16"), 16),
    **dict.fromkeys(("U32", "I32", "F32"), 32),
    **dict.fromkeys(("U64", "I64", "F64", "C64"), 64),
    "F4": 4,
    **dict.fromkeys(("F6_E2M3", "F6_E3M2"), 6),
}
# safetensors multiplies a shape's numbers in unsigned 64 bits, and torch takes each one as a
# signed 64-bit size: past either, a file does not load.
_MAX_ELEMENTS = 2**64 - 1
_MAX_DIMENSION = 2**63 - 1
_NOT_WHOLE = "not a whole safetensors file"
UNET_INPUT_CONV = "model.diffusion_model.input_blocks.0.0.weight"
# A VAE's decoder input (shape: out, latent channels, 3, 3), in a VAE file of its own (both
# the original and diffusers names) or under a checkpoint's prefixes.
_VAE_DECODER_INPUT = "decoder.conv_in.weight"
_VAE_PREFIXES = ("", "first_stage_model.", "vae.")
# One tensor name that only each family's text encoder has (shipped config folder, name).
FAMILY_MARKERS = (
    ("sdxl-base", "conditioner.embedders.1.model.ln_final.weight"),
    # The SDXL refiner has only the OpenCLIP encoder, as its first embedder.
    ("sdxl-refiner", "conditioner.embedders.0.model.ln_final.weight"),
    ("sd2-v", "cond_stage_model.model.ln_final.weight"),
    ("sd15", "cond_stage_model.transformer.text_model.final_layer_norm.weight"),
)
FAMILY_NAMES = {
    "sd15": "SD 1.5",
    "sd15-inpainting": "SD 1.5 inpainting",
    "sd2-v": "SD 2.x",
    "sdxl-base": "SDXL",
    "sdxl-refiner": "SDXL refiner",
    **FLOW_FAMILY_NAMES,
    "sd3": SD3_LABEL,
}
# kohya's ss_base_model_version and the start of modelspec.architecture, as people say them.
_BASE_MODELS = (
    ("sdxl", "SDXL"),
    ("stable-diffusion-xl", "SDXL"),
    ("sd_v2", "SD 2.x"),
    ("stable-diffusion-v2", "SD 2.x"),
    ("sd_v1", "SD 1.5"),
    ("stable-diffusion-v1", "SD 1.5"),
    ("flux", "FLUX"),
    ("sd3", "SD 3"),
    ("stable-diffusion-v3", "SD 3"),
)
UNKNOWN = "unknown"
MAX_TRIGGER_WORDS = 5
# The families whose VAE decodes 16 latent channels, and those whose VAE decodes 4 (as
# tensors, configs or metadata tell them; a modelspec's bare "FLUX" is neither: unknown).
FLOW_LABELS = frozenset({*FLOW_FAMILY_NAMES.values(), SD3_LABEL})
_SD_LABELS = frozenset(FAMILY_NAMES.values()) - FLOW_LABELS


@dataclass(frozen=True)
class NetworkInfo:
    """A LoRA's or embedding's card: base model and trigger words (most used tags first)."""

    base_model: str
    trigger_words: tuple[str, ...]


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a ``.safetensors`` file (``ValueError`` if it is not one)."""
    return _sized_header(path)[1]


def safetensors_problem(path: Path, stat: os.stat_result | None = None) -> str | None:
    """Why the ``.safetensors`` file at ``path`` would not load: its header does not read,
    the file is shorter than its header says (still being copied), its tensors' data do not
    run on from byte 0 (``_layout_problem``), or a tensor's shape does not fit its data
    (``_size_problem``); None when it is whole.
    Read once per file version (``stat``: the file as the caller found it; None: statted)."""
    return problem_of(_SAFETENSORS_PROBLEMS, path, stat)


def _read_safetensors_problem(path: Path, size: int) -> str | None:
    try:
        header_bytes, header = _sized_header(path)
    except OSError as error:
        return unreadable(path, error)
    except ValueError as error:
        return str(error)
    # Each tensor's shape and offsets are whole numbers (``_sized_header``).
    tensors = [(name, info) for name, info in header.items() if name != "__metadata__"]
    expected = 8 + header_bytes + max((info["data_offsets"][1] for _, info in tensors), default=0)
    if size < expected:
        return f"{path.name} is incomplete ({size} of {expected} bytes): still copying?"
    if size > expected:  # safetensors refuses a file whose data does not end where it says
        return (
            f"{path.name} has {size - expected} bytes past the end its header gives "
            f"({expected} bytes): {_NOT_WHOLE}"
        )
    return tensors_problem(path, header)


def tensors_problem(path: Path, header: Mapping[str, Any]) -> str | None:
    """Why the tensors ``header`` (``safetensors_header``'s, of the file at ``path``) gives
    would not load as safetensors loads them: their data do not run on from byte 0
    (``_layout_problem``), or a tensor's shape does not fit its data (``_size_problem``);
    None when they would."""
    tensors = [(name, info) for name, info in header.items() if name != "__metadata__"]
    return _layout_problem(path, tensors) or next(
        (problem for name, tensor in tensors if (problem := _size_problem(path, name, tensor))),
        None,
    )


def _layout_problem(path: Path, tensors: list[tuple[str, dict[str, Any]]]) -> str | None:
    """Why the tensors' data offsets (checked by ``_check_tensor``) would not load: taken in
    order, as safetensors takes them, each must start where the one before it ends, the
    first at 0 (no gap, no overlap); None when they do."""
    end, before = 0, None
    for name, tensor in sorted(tensors, key=lambda item: item[1]["data_offsets"]):
        start, stop = tensor["data_offsets"]
        if start != end:
            after = (
                "where the data starts" if before is None else f"where {reprlib.repr(before)} ends"
            )
            return (
                f"{path.name}'s header puts tensor {reprlib.repr(name)} at byte {start}, not at "
                f"byte {end} ({after}): a safetensors file's tensors run on from byte 0, with "
                f"no gap or overlap; {_NOT_WHOLE}"
            )
        if stop < start:
            return (
                f"{path.name}'s header gives tensor {reprlib.repr(name)} data_offsets "
                f"[{start}, {stop}], which run backwards: {_NOT_WHOLE}"
            )
        end, before = stop, name
    return None


def _size_problem(path: Path, name: str, tensor: dict[str, Any]) -> str | None:
    """Why tensor ``name`` (its header entry, checked by ``_check_tensor``) would not load:
    its shape's size in bytes, in its type, overflows or is not the span of its data offsets
    (None: it loads)."""
    bits = _DTYPE_BITS.get(str(tensor.get("dtype")))
    if bits is None:  # a type this list does not know: its loading says whether it reads
        return None
    shape = tensor["shape"]
    span = tensor["data_offsets"][1] - tensor["data_offsets"][0]
    said = f"{path.name}'s header gives tensor {reprlib.repr(name)} the shape {reprlib.repr(shape)}"
    # Factor by factor, as safetensors does, stopping at the first overflow (even where a
    # later 0 would make the size 0, its loader refuses it): a hostile shape of many huge
    # numbers never grows a product whose time is quadratic in its digits.
    elements = 1
    for dimension in shape:
        elements *= dimension
        if dimension > _MAX_DIMENSION or elements > _MAX_ELEMENTS:
            return f"{said}, past the 64-bit sizes safetensors and torch read: {_NOT_WHOLE}"
    if elements * bits == span * 8:
        return None
    needs = "more" if elements * bits > span * 8 else "less"
    return (
        f"{said} of {tensor['dtype']}, which needs {needs} than its {span} bytes of data: "
        f"{_NOT_WHOLE}"
    )


def pickle_problem(path: Path, stat: os.stat_result | None = None) -> str | None:
    """Why the pickle weights file (``.ckpt``, ``.pt``, ``.pth``) at ``path`` would not load,
    where that shows cheaply: it is empty (or a few bytes), or it is a zip archive (as torch
    saves them) with no directory, which is at its very end, so a file still being copied or
    cut short has none (read once per file version: its directory only, never its weights).
    Anything else (torch's older format, which says nothing of its length; a directory naming
    a zip version Python does not know) is taken as whole: its loading says what is wrong.
    ``stat`` as for ``safetensors_problem``."""
    return problem_of(_PICKLE_PROBLEMS, path, stat)


def _read_pickle_problem(path: Path, size: int) -> str | None:
    try:
        with path.open("rb") as stream:
            start = stream.read(len(_ZIP_START))
        if len(start) < len(_ZIP_START):  # no weights file is this short
            return f"{path.name} is {f'only {size} bytes' if start else 'empty'}: still copying?"
        if start != _ZIP_START:
            return None
        with zipfile.ZipFile(path):
            return None
    except OSError as error:
        return unreadable(path, error)
    except NotImplementedError:
        # Its directory read, and names a zip version zipfile does not know (torch.load does
        # not look at it): a whole file, as far as this heuristic can tell.
        return None
    except (zipfile.BadZipFile, ValueError) as error:
        return f"{path.name} is not a whole zip archive ({size} bytes; {error}): still copying?"


_SAFETENSORS_PROBLEMS = PerFileVersion(_read_safetensors_problem)
_PICKLE_PROBLEMS = PerFileVersion(_read_pickle_problem)


def _sized_header(path: Path) -> tuple[int, dict[str, Any]]:
    """A ``.safetensors`` file's header length in bytes, and its JSON."""
    with path.open("rb") as stream:
        prefix = stream.read(8)
        if len(prefix) != 8:
            raise ValueError(f"{path.name} is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"{path.name} announces a {length}-byte header, over the limit")
        raw = stream.read(length)
    if len(raw) != length:
        raise ValueError(f"{path.name} ends inside its header")
    try:
        header = json.loads(raw, parse_float=_finite_number, parse_constant=_not_a_number)
    except ValueError as error:
        raise ValueError(f"{path.name}'s header is not JSON: {error}") from error
    except RecursionError:  # the decoder recurses once per level, up to Python's limit
        raise ValueError(f"{path.name}'s header nests too deep to read") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path.name}'s header is not a JSON object")
    for name, tensor in header.items():
        if name != "__metadata__":
            _check_tensor(path, name, tensor)
    return length, header


def _finite_number(text: str) -> float:
    """A JSON number with a fraction or exponent; one past a float's range is refused (Python
    reads ``1e999`` as infinity, which no size holds; safetensors refuses it)."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"the number {reprlib.repr(text)} is out of range")
    return number


def _not_a_number(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _check_tensor(path: Path, name: str, tensor: object) -> None:
    """``ValueError`` naming the problem unless the header's entry for tensor ``name`` gives
    its shape and its two data offsets in whole numbers, as safetensors requires (the readers
    take them as sizes)."""
    shape = tensor.get("shape") if isinstance(tensor, dict) else None
    offsets = tensor.get("data_offsets") if isinstance(tensor, dict) else None
    if not _whole_numbers(shape):
        raise ValueError(
            f"{path.name}'s header gives tensor {reprlib.repr(name)} a shape that is not a "
            f"list of whole numbers: {reprlib.repr(shape)}"
        )
    if not (_whole_numbers(offsets) and len(offsets) == 2):
        raise ValueError(
            f"{path.name}'s header gives tensor {reprlib.repr(name)} data_offsets that are "
            f"not two whole numbers: {reprlib.repr(offsets)}"
        )


def _whole_numbers(value: object) -> TypeGuard[list[int]]:
    """Whether ``value`` is a list of whole numbers, none negative (JSON's true is none)."""
    return isinstance(value, list) and all(type(item) is int and item >= 0 for item in value)


def network_info(path: Path) -> NetworkInfo:
    """What ``path``'s metadata says (``unknown`` and no words when it says nothing, or the
    file cannot be read)."""
    stat = path.stat()
    return _network_info(path, stat.st_mtime_ns, stat.st_size)


def vae_latent_channels(path: Path) -> int | None:
    """The latent channels a VAE file decodes (4: SD1.x/2.x/SDXL, 16: SD3 and Flux), from its
    decoder's first convolution in its header (cached per file version); None when the file
    says nothing readable."""
    stat = path.stat()
    return _vae_latent_channels(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=1024)
def _vae_latent_channels(path: Path, mtime_ns: int, size: int) -> int | None:
    try:
        header = safetensors_header(path)
    except (OSError, ValueError) as error:
        log.info("cannot read %s for its latent channels: %s", path, error)
        return None
    for prefix in _VAE_PREFIXES:
        tensor = header.get(prefix + _VAE_DECODER_INPUT)
        if isinstance(tensor, dict) and len(tensor.get("shape", ())) == 4:
            return int(tensor["shape"][1])
    return None


def checkpoint_family(entry: ModelEntry) -> str:
    """The model family as people say it (``SDXL``), from a diffusers folder's configs or a
    single file's tensor names and metadata; pickles are not opened for a list."""
    return model_families(entry)[1]


def tensor_family(entry: ModelEntry) -> str:
    """The family the engine loads ``entry`` as: a diffusers folder's configs or a single
    file's tensor names, never its metadata, which may name another base model (a merge's
    stale kohya fields); ``UNKNOWN`` when they tell none (its load tells)."""
    return model_families(entry)[0]


def model_families(entry: ModelEntry) -> tuple[str, str]:
    """``entry``'s family as its tensors tell it (``tensor_family``), and as people say it
    (``checkpoint_family``): one read for both, where a diffusers folder's configs and a
    GGUF's header are read again on every call (a single file's are cached)."""
    try:
        if entry.format == "diffusers":
            family = _diffusers_family(entry.path)
            return family, family
        if entry.format == "safetensors":
            stat = entry.path.stat()
            return _file_families(entry.path, stat.st_mtime_ns, stat.st_size)
        if entry.format == "gguf":
            flow = _flow_family_or_sd3(gguf_tensor_names(entry.path))
            family = UNKNOWN if flow is None else FAMILY_NAMES[flow]
            return family, family
    except Exception as error:
        # It only labels a list (and which models take embeddings, at every admission): a
        # file or config no reader foresaw is "unknown", never every listing failing.
        log.info("cannot read %s for its family: %r", entry.path, error)
    return UNKNOWN, UNKNOWN


def reads_textual_inversion(family: str) -> bool:
    """Whether a model of ``family`` (as ``tensor_family`` says it) may read
    textual-inversion embeddings: SD3 and Flux take none (they read the names as words); an
    unknown family may."""
    return family not in FLOW_LABELS


def takes_distilled_guidance(family: str) -> bool:
    """Whether a model of ``family`` (as ``tensor_family`` says it) takes its CFG as Flux's
    distilled guidance (dev's; schnell takes none), not a true CFG as SD's and SD3's
    (``FAMILY_GUIDANCE``): a picture's ``Distilled CFG Scale`` is its CFG (``guidance_of``)."""
    return FAMILY_GUIDANCE.get(family, "cfg") != "cfg"


def latent_channels_of(entry: ModelEntry) -> int | None:
    """The latent channels ``entry``'s VAE decodes, from its family as the engine loads it
    (``tensor_family``: header only, cached; not the metadata, which may name another base
    model): 16 for SD3 and Flux, 4 for the SD families, None when the family is unknown (its
    loading tells)."""
    family = tensor_family(entry)
    if family in FLOW_LABELS:
        return 16
    return 4 if family in _SD_LABELS else None


def family_from_tensors(header: dict[str, Any]) -> str | None:
    """The shipped config folder (``sd15``, ``sdxl-base``, ``flux-dev``...) that fits these
    tensor names and the UNet's input channels, or None when no family's marker is there."""
    family = next((family for family, marker in FAMILY_MARKERS if marker in header), None)
    if family is None:
        return _flow_family_or_sd3(header)
    in_channels = second_side(header.get(UNET_INPUT_CONV))
    if family == "sd15" and in_channels == 9:
        return "sd15-inpainting"
    return family


def second_side(tensor: object) -> int | None:
    """The second side of a tensor's shape as a checked header gives it (``_check_tensor``:
    whole numbers, but any count of them), or None: no entry (``tensor`` None), or a shape of
    fewer than two sides, which no reader of a width may take as a fault of its own."""
    shape: list[int] = tensor["shape"] if isinstance(tensor, dict) else []
    return shape[1] if len(shape) > 1 else None


def _flow_family_or_sd3(names: Collection[str]) -> str | None:
    """The flow family's config folder, ``sd3`` for an SD3 of a size none is shipped for."""
    try:
        return flow_family_from_tensors(names)
    except UnknownSD3Variant:
        return "sd3"


def trigger_words(metadata: dict[str, str]) -> tuple[str, ...]:
    """``modelspec.trigger_phrase`` when set, else the most frequent training tags."""
    phrase = metadata.get("modelspec.trigger_phrase", "").strip()
    if phrase:
        words = [word.strip() for word in phrase.split(",")]
        return tuple(word for word in words if word)[:MAX_TRIGGER_WORDS]
    try:
        datasets = json.loads(metadata.get("ss_tag_frequency", "{}"))
    except (ValueError, RecursionError):  # RecursionError: nested past Python's limit
        return ()
    counts: Counter[str] = Counter()
    for tags in datasets.values() if isinstance(datasets, dict) else ():
        if isinstance(tags, dict):
            counts.update({str(tag).strip(): int(n) for tag, n in tags.items() if _is_count(n)})
    return tuple(tag for tag, _ in counts.most_common(MAX_TRIGGER_WORDS) if tag)


def base_model(metadata: dict[str, str]) -> str:
    for key in ("ss_base_model_version", "modelspec.architecture"):
        value = metadata.get(key, "").strip().casefold()
        for prefix, name in _BASE_MODELS:
            if value.startswith(prefix):
                return name
    return UNKNOWN


def _is_count(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@functools.lru_cache(maxsize=4096)
def _network_info(path: Path, mtime_ns: int, size: int) -> NetworkInfo:
    """Cached by modification time and size: a list reads each changed file once."""
    try:
        metadata = safetensors_header(path).get("__metadata__") or {}
    except (OSError, ValueError) as error:
        log.info("cannot read the metadata of %s: %s", path, error)
        return NetworkInfo(UNKNOWN, ())
    metadata = {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}
    return NetworkInfo(base_model(metadata), trigger_words(metadata))


@functools.lru_cache(maxsize=1024)
def _file_families(path: Path, mtime_ns: int, size: int) -> tuple[str, str]:
    """The file's family by its tensors, and as people say it (one header read for both)."""
    header = safetensors_header(path)
    metadata = header.get("__metadata__")
    family = family_from_tensors(header)
    tensors = UNKNOWN if family is None else FAMILY_NAMES[family]
    # A refiner's modelspec says "stable-diffusion-xl-v1-refiner", which reads as SDXL; a
    # Flux file's says "flux", not dev or schnell: the tensors know better.
    if family == "sdxl-refiner" or family in FLOW_FAMILY_NAMES or family == "sd3":
        return tensors, tensors
    if isinstance(metadata, dict) and (said := base_model(metadata)) != UNKNOWN:
        return tensors, said
    return tensors, tensors


# The configs a diffusers folder's family is read from, relative to it: the one list
# (inference.model_list watches them for a rewrite in place).
INDEX_CONFIG = "model_index.json"
TRANSFORMER_CONFIG = "transformer/config.json"
UNET_CONFIG = "unet/config.json"
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
FAMILY_CONFIGS = (INDEX_CONFIG, TRANSFORMER_CONFIG, UNET_CONFIG, SCHEDULER_CONFIG)


def _diffusers_family(folder: Path) -> str:
    index = json.loads((folder / INDEX_CONFIG).read_text())
    pipeline = str(index.get("_class_name", ""))
    if pipeline.startswith("StableDiffusion3"):
        return FAMILY_NAMES["sd3"]
    if pipeline.startswith("Flux"):
        transformer = json.loads((folder / TRANSFORMER_CONFIG).read_text())
        return FAMILY_NAMES["flux-dev" if transformer.get("guidance_embeds") else "flux-schnell"]
    if "XL" in pipeline and index.get("text_encoder", [None])[0] is None:
        return FAMILY_NAMES["sdxl-refiner"]
    if "XL" in pipeline:
        return FAMILY_NAMES["sdxl-base"]
    unet = folder / UNET_CONFIG
    if unet.is_file() and json.loads(unet.read_text()).get("in_channels") == 9:
        return FAMILY_NAMES["sd15-inpainting"]
    scheduler = folder / SCHEDULER_CONFIG
    if (
        scheduler.is_file()
        and json.loads(scheduler.read_text()).get("prediction_type") == "v_prediction"
    ):
        return FAMILY_NAMES["sd2-v"]
    return FAMILY_NAMES["sd15"]
