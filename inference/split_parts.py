"""A split release's parts: which text encoders and VAE an SD3.5/Flux file lacks (a transformer
alone, as Flux's ``flux1-dev.safetensors`` or a city96 GGUF), and the files under the models
folder they are read from (``models/text_encoder/``, ``models/vae/``), told by their headers.

Pure Python (no torch): the registry leaves out a split release whose part is still being
copied (``split_part_choices``), and the loader reads the parts it finds (``part_files``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from inference.file_versions import PerFileVersion
from inference.flow_detect import UnknownSD3Variant, flow_family_from_tensors, gguf_tensor_names
from inference.gguf_header import gguf_tensors
from inference.metadata import safetensors_header, second_side
from inference.not_installed import not_installed
from inference.registry import (
    CHECKPOINT_FOLDERS,
    CHECKPOINT_SUBFOLDER_DEPTH,
    GGUF_SUFFIX,
    SIDECAR_SUFFIX,
    ModelEntry,
    StatAndProblem,
    config_json,
    stat_and_problem,
)
from inference.types import RenderInputError

log = logging.getLogger(__name__)

CONFIGS_DIR = Path(__file__).parent / "configs"
# A tensor each part of an all-in-one file has, as SD3's releases and ComfyUI save them.
_PARTS = {
    "T5": ("text_encoders.t5xxl.transformer.shared.weight",),
    "CLIP-L": ("text_encoders.clip_l.transformer.text_model.embeddings.position_embedding.weight",),
    "CLIP-G": ("text_encoders.clip_g.transformer.text_model.embeddings.position_embedding.weight",),
    "VAE": ("first_stage_model.decoder.conv_in.weight", "vae.decoder.conv_in.weight"),
}
# The tensor that tells each part in a file of its own, and the axis of its width.
_SEPARATE_MARKERS = {
    "T5": "shared.weight",
    "CLIP-L": "text_model.embeddings.position_embedding.weight",
    "CLIP-G": "text_model.embeddings.position_embedding.weight",
    "VAE": "decoder.conv_in.weight",
}
# Where a part in a file of its own lives, under the models folder.
PART_FOLDERS = {"T5": "text_encoder", "CLIP-L": "text_encoder", "CLIP-G": "text_encoder"}
VAE_FOLDERS = ("vae", "VAE")
# A T5 encoder's GGUF file in llama.cpp's names: its token embedding and its first block.
_GGUF_T5_EMBEDDING = "token_embd.weight"
_GGUF_T5_BLOCK = "enc.blk.0.attn_q.weight"
# A part's file, and why it is not whole yet (None: whole).
PartChoice = tuple[Path, str | None]
# Files looked at: each one's ``stat`` (None: not there) and why it would not load.
Looked = dict[Path, StatAndProblem]


def checkpoint_tensor_names(checkpoint: Path) -> Collection[str]:
    """The tensor names of a ``.safetensors`` or ``.gguf`` file, from its header (read, not
    mapped: safetensors maps the whole file copy-on-write, which Linux refuses for a file
    larger than the machine's memory, as a 33 GB all-in-one Flux file on a 32 GB machine)."""
    if checkpoint.suffix == GGUF_SUFFIX:
        return gguf_tensor_names(checkpoint)
    return {name for name in safetensors_header(checkpoint) if name != "__metadata__"}


def flow_file_family(checkpoint: Path, names: Collection[str], has_sidecar: bool) -> str | None:
    """The shipped config folder of an SD3.5/Flux file with these tensor ``names`` (``sd3``
    for an SD3 of another size, which its sidecar folder configures), or None for SD/SDXL."""
    try:
        return flow_family_from_tensors(names)
    except UnknownSD3Variant as error:
        if has_sidecar:
            return "sd3"
        raise RenderInputError(
            f"{checkpoint.name} is {error}; put a diffusers config folder next to it as "
            f"{checkpoint.stem}{SIDECAR_SUFFIX}/"
        ) from error


def flow_config(entry: ModelEntry) -> Path | None:
    """The config folder of an SD3.5/Flux file (its sidecar folder, else the shipped one of
    its family); None for any other model."""
    if entry.format not in ("safetensors", "gguf"):
        return None
    sidecar = entry.path.with_name(entry.path.stem + SIDECAR_SUFFIX)
    flow = flow_file_family(entry.path, checkpoint_tensor_names(entry.path), sidecar.is_dir())
    if flow is None:
        return None
    return sidecar if sidecar.is_dir() else CONFIGS_DIR / flow


def part_components(index: Mapping[str, Any]) -> dict[str, str]:
    """Each part's pipeline component: SD3 has CLIP-L, CLIP-G and T5; Flux CLIP-L and T5."""
    if "text_encoder_3" in index:
        return {
            "CLIP-L": "text_encoder",
            "CLIP-G": "text_encoder_2",
            "T5": "text_encoder_3",
            "VAE": "vae",
        }
    return {"CLIP-L": "text_encoder", "T5": "text_encoder_2", "VAE": "vae"}


def _held_parts(names: Collection[str]) -> frozenset[str]:
    """The parts a file with these tensor ``names`` holds itself (an all-in-one file: all)."""
    return frozenset(part for part, marks in _PARTS.items() if any(n in names for n in marks))


def part_files(checkpoint: Path, config: Path) -> dict[str, tuple[str, Path]]:
    """For each component ``checkpoint`` lacks (a split release's transformer alone), its
    part (``T5``, ``CLIP-L``, ``VAE``...) and the file it is read from: the first under the
    models folder whose tensors fit ``config`` (headers only; ``easel doctor`` counts them
    too). One sentence for a part not found, or found only still being copied."""
    held = _held_parts(checkpoint_tensor_names(checkpoint))
    found: dict[str, tuple[str, Path]] = {}
    for part, component, folders, choice in _part_choices(checkpoint, config, held):
        if choice is None:
            raise not_installed(
                f"the {part} {checkpoint.name} needs",
                f"{checkpoint.name} holds no {part} and no {part} file that fits it is in "
                f"{folders[0]}/: put one there, or use an all-in-one file or a diffusers folder",
            )
        path, problem = choice
        if problem is not None:
            raise RenderInputError(f"{checkpoint.name} finds no whole {part} file: {problem}")
        found[component] = (part, path)
    return found


def _part_choices(
    checkpoint: Path, config: Path, held: frozenset[str], looked: Looked | None = None
) -> Iterator[tuple[str, str, list[Path], PartChoice | None]]:
    """For each part ``checkpoint`` lacks (not in ``held``): the part, its component, the
    folders it is looked for in, and the file found there (``_find_part``; ``looked``: the
    files already stat'ed)."""
    index: dict[str, Any] = config_json(config / "model_index.json")
    models_dir = models_root(checkpoint)
    looked = {} if looked is None else looked  # text_encoder/ is searched for each encoder
    for part, component in part_components(index).items():
        if part in held:
            continue
        names = VAE_FOLDERS if part == "VAE" else (PART_FOLDERS[part],)
        folders = [models_dir / name for name in names]
        yield part, component, folders, _find_part(part, config / component, folders, looked)


def _read_split(path: Path, size: int) -> tuple[str | None, frozenset[str]]:
    """A checkpoint's flow family (``flow_family_from_tensors``; ``sd3`` for an SD3 of a size
    none is shipped for; None: not SD3 or Flux) and the parts it holds, from its header."""
    names = checkpoint_tensor_names(path)
    try:
        family = flow_family_from_tensors(names)
    except UnknownSD3Variant:
        family = "sd3"
    return family, _held_parts(names) if family is not None else frozenset()


_SPLITS = PerFileVersion(_read_split)


def split_part_choices(checkpoint: Path, stat: os.stat_result, looked: Looked) -> list[PartChoice]:
    """The file of each part the whole checkpoint file at ``checkpoint`` (as ``stat`` found it)
    lacks that its load would read, with why it would not load (None: whole; one still being
    copied: every job that picked the model would fail). None for a part with no file at all
    (its load names the folder); none when it is no split release. Its header is read once
    per file version; each part's files are ``stat``'ed once into ``looked`` (their headers,
    once per version)."""
    try:
        family, held = _SPLITS(checkpoint, stat)
        if family is None:
            return []
        sidecar = checkpoint.with_name(checkpoint.stem + SIDECAR_SUFFIX)
        if sidecar.is_dir():
            config = sidecar
        elif family == "sd3":  # an SD3 of another size with no config: its load says so
            return []
        else:
            config = CONFIGS_DIR / family
        return [
            choice
            for _, _, _, choice in _part_choices(checkpoint, config, held, looked)
            if choice is not None
        ]
    except Exception:
        # A header or config no check foresaw: its load says what is wrong, never the
        # listing failing.
        log.info("cannot tell the parts %s needs", checkpoint, exc_info=True)
    return []


def _width(config: Path, part: str) -> int:
    """The width the part's file must have: hidden size, T5's d_model, latent channels."""
    if part == "VAE":
        return int(config_json(config / "config.json")["latent_channels"])
    settings = config_json(config / "config.json")
    return int(settings["d_model"] if part == "T5" else settings["hidden_size"])


def _find_part(
    part: str, config: Path, folders: Sequence[Path], looked: Looked | None = None
) -> PartChoice | None:
    """The first whole file (``weights_problem``) in ``folders`` whose header holds ``part``
    at ``config``'s width; else the first one not whole (still being copied) whose header
    fits or does not read (a GGUF reader maps every tensor: a cut file's does not read), with
    why, so that its loading is refused saying so (one whose header reads but holds no such
    part is some other file: a half CLIP-L is not blamed for a missing T5); else None. Each
    file ``stat``'ed once (``looked``: the files already stat'ed, with why they would not
    load)."""
    width = _width(config, part)
    looked = {} if looked is None else looked
    # T5 may also be a GGUF file (city96's t5-v1_1-xxl-encoder-Q8_0.gguf).
    patterns = ("*.safetensors", f"*{GGUF_SUFFIX}") if part == "T5" else ("*.safetensors",)
    not_whole: PartChoice | None = None
    for folder in folders:
        for pattern in patterns if folder.is_dir() else ():
            for path in sorted(folder.glob(pattern)):
                if path not in looked:
                    looked[path] = stat_and_problem(path)
                stat, problem = looked[path]
                if problem is None:
                    if _fits(part, path, width, stat):
                        return path, None
                elif not_whole is None and _fits(part, path, width, stat) is not False:
                    not_whole = path, problem
    return not_whole


def _fits(part: str, path: Path, width: int, stat: os.stat_result | None) -> bool | None:
    """Whether ``path``'s header holds ``part`` at ``width``; None when it does not read
    (or the file, as ``stat`` found it, was not there)."""
    if stat is None:
        return None
    try:
        return _WIDTHS(path, stat).get(part) == width
    except (OSError, ValueError):
        return None


def _read_widths(path: Path, size: int) -> dict[str, int]:
    """The width of each part that ``path`` holds, from its header (``OSError`` or
    ``ValueError``: the header does not read); a GGUF T5 in llama.cpp's names, as its T5
    encoder files are written."""
    if path.suffix == GGUF_SUFFIX:
        shapes = {tensor.name: tensor.shape for tensor in gguf_tensors(path)}
        embedding = shapes.get(_GGUF_T5_EMBEDDING, ())
        if _GGUF_T5_BLOCK not in shapes or len(embedding) < 2:
            return {}
        return {"T5": embedding[1]}
    header = safetensors_header(path)
    sides = {part: second_side(header.get(marker)) for part, marker in _SEPARATE_MARKERS.items()}
    return {part: side for part, side in sides.items() if side is not None}


# Read once per file version; a header that does not read is read again at each look.
_WIDTHS = PerFileVersion(_read_widths)


def models_root(checkpoint: Path) -> Path:
    """The models folder a checkpoint file lies in: its folder, or the one holding the
    nearest checkpoint folder above it (the web UI's ``Stable-diffusion/``, and its
    subfolders such as ``Stable-diffusion/SDXL/``; Easel's ``checkpoints/``)."""
    above = checkpoint.parents[: CHECKPOINT_SUBFOLDER_DEPTH + 1]
    found = next((folder for folder in above if folder.name in CHECKPOINT_FOLDERS), None)
    return checkpoint.parent if found is None else found.parent
