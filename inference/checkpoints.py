"""Single-file checkpoints (the web UI's ``.safetensors`` files, and ``.ckpt`` pickles where
allowed, read weights-only): family detection and loading with the configs shipped in
``inference/configs`` (or a sidecar config folder), offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import diffusers
import torch
from safetensors import safe_open

from inference.flow_families import load_flow_single_file
from inference.metadata import FAMILY_MARKERS, UNET_INPUT_CONV
from inference.pickles import pickled_state_dict
from inference.registry import PICKLE_SUFFIXES, SIDECAR_SUFFIX, ModelEntry
from inference.split_parts import CONFIGS_DIR, flow_config, flow_file_family, part_files
from inference.tiny import load_clip_tokenizer
from inference.types import RenderInputError

# OpenCLIP tokenizers (SD2, SDXL's second encoder) pad with "!" where OpenAI's CLIP pads with
# its end token.
_OPEN_CLIP_PAD = "!"


def _names_and_input_channels(checkpoint: Path) -> tuple[set[str], int | None]:
    """The checkpoint's tensor names, and its UNet's input channels (None: no UNet)."""
    if checkpoint.suffix in PICKLE_SUFFIXES:
        state = pickled_state_dict(checkpoint)
        conv = state.get(UNET_INPUT_CONV)
        return set(state), None if conv is None else int(conv.shape[1])
    with safe_open(str(checkpoint), framework="pt") as weights:
        names = set(weights.keys())
        if UNET_INPUT_CONV not in names:
            return names, None
        return names, int(weights.get_slice(UNET_INPUT_CONV).get_shape()[1])


def detect_family(checkpoint: Path) -> str:
    """The shipped config folder that fits ``checkpoint``, read from tensor names and shapes."""
    names, in_channels = _names_and_input_channels(checkpoint)
    flow = flow_file_family(checkpoint, names, has_sidecar=False)
    if flow is not None:
        return flow
    if in_channels is None:
        raise RenderInputError(
            f"{checkpoint.name} is not a Stable Diffusion checkpoint (no UNet weights found)"
        )
    family = next((family for family, marker in FAMILY_MARKERS if marker in names), None)
    if family is None:
        raise RenderInputError(
            f"cannot tell which model family {checkpoint.name} is (SD1.x, SD2.x, SDXL, "
            "SD3.5 and Flux are known); put a diffusers config folder next to it as "
            f"{checkpoint.stem}{SIDECAR_SUFFIX}/"
        )
    if in_channels == 9 and family == "sd15":
        return "sd15-inpainting"
    if in_channels != 4:
        raise RenderInputError(
            f"{checkpoint.name} has a {in_channels}-channel UNet input, which the shipped "
            f"{family} config does not fit; add a sidecar config folder "
            f"{checkpoint.stem}{SIDECAR_SUFFIX}/"
        )
    return family


def split_part_files(entry: ModelEntry) -> dict[str, tuple[str, Path]]:
    """The separate files the loader reads an SD3.5/Flux file's missing parts from (a split
    release's T5, CLIP and VAE), by component; empty for any other model. Headers only."""
    config = flow_config(entry)
    return {} if config is None else part_files(entry.path, config)


def load_single_file(entry: ModelEntry, dtype: torch.dtype) -> Any:
    """Load a single-file checkpoint as a diffusers pipeline, without touching the network.

    The config comes from a sidecar folder ``<stem>.config/`` next to the file when there is
    one (which may also hold its own tokenizer folders), else from the detected family.
    """
    flow = flow_config(entry)
    if flow is not None:
        return load_flow_single_file(entry, flow, dtype)
    sidecar = entry.path.with_name(entry.path.stem + SIDECAR_SUFFIX)
    if entry.format == "gguf":
        raise RenderInputError(
            f"{entry.path.name} is not an SD3 or Flux transformer: Easel reads .gguf files in "
            "the models folder for those only (an SD UNet in GGUF goes in a diffusers folder's "
            "unet/)"
        )
    family = None if sidecar.is_dir() else detect_family(entry.path)
    if sidecar.is_dir() and entry.format == "pickle":
        # Detection reads a pickle weights-only; with no detection, this does: a file that
        # holds more than weights is refused, by name, before diffusers (weights-only too)
        # reads it.
        pickled_state_dict(entry.path)
    config = sidecar if family is None else CONFIGS_DIR / family
    index: dict[str, Any] = diffusers.DiffusionPipeline.load_config(str(config))
    pipeline_class = getattr(diffusers, index["_class_name"])
    first_pad = _OPEN_CLIP_PAD if family == "sd2-v" else "<|endoftext|>"
    tokenizers = {
        name: load_clip_tokenizer(first_pad if name == "tokenizer" else _OPEN_CLIP_PAD)
        for name in ("tokenizer", "tokenizer_2")
        # The SDXL refiner's config names no first tokenizer ([null, null]).
        if index.get(name, [None])[0] is not None and not (config / name).is_dir()
    }
    return pipeline_class.from_single_file(
        str(entry.path), config=str(config), local_files_only=True, dtype=dtype, **tokenizers
    )
