"""Model upscalers (ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT, … whatever spandrel recognises),
run tile by tile so device memory stays bounded whatever the picture's size.

Neighbouring tiles overlap and are blended across the overlap (``inference.tiles``), so no
seam shows where one tile's output meets the next.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from spandrel import (
    ImageModelDescriptor,
    ModelDescriptor,
    ModelLoader,
    ModelTiling,
    UnsupportedModelError,
    canonicalize_state_dict,
)

from inference.file_versions import FileStamp, file_stamp
from inference.owned_weights import read_safetensors
from inference.pickles import load_pickled_weights
from inference.registry import NO_LONGER_INSTALLED, UPSCALER_PICKLE_SUFFIXES
from inference.tiles import TileBlender, tile_spans
from inference.types import BlankPicture, RenderCancelled, RenderInputError

# Input pixels per tile side: a 4x model's 256x256 tile is a 1024x1024 output in memory.
DEFAULT_TILE = 256
# Input pixels shared by neighbouring tiles; their outputs are cross-faded over it.
DEFAULT_TILE_OVERLAP = 16
# A 2x model asked for 8x runs three times at most, then Lanczos makes the exact size.
MAX_MODEL_PASSES = 3

TileDone = Callable[[int, int], None]  # (tiles done, tiles in all)


@dataclass
class SpandrelModel:
    """A model spandrel loaded (an upscaler, a face restorer) on its device, and the file it
    came from as it was then."""

    name: str
    path: Path
    stamp: FileStamp  # the file's version when loaded: a replaced file is loaded again
    descriptor: ImageModelDescriptor[Any]

    def is_current(self, path: Path) -> bool:
        # Removed since (no stamp): its loading says so.
        return path == self.path and file_stamp(path) == self.stamp

    def finite(self, pixels: np.ndarray, kind: str) -> np.ndarray:
        """``pixels``, this model's output, unless they hold not-a-number or infinite values
        (a picture would show them black): then ``BlankPicture`` naming this ``kind`` of
        model."""
        if not np.isfinite(pixels).all():
            raise BlankPicture(
                f"{kind} {self.name!r} ({self.path.name}) gave not-a-number or infinite "
                f"values, a blank picture: its file may be broken; try another {kind}, or ask "
                "an admin to check it"
            )
        return pixels


@dataclass
class ModelUpscaler(SpandrelModel):
    """A loaded upscaler (in half precision on CUDA where its architecture allows)."""

    @property
    def scale(self) -> int:
        return int(self.descriptor.scale)


def load_upscaler(name: str, path: Path, device: str) -> ModelUpscaler:
    """Load ``path`` with spandrel; refuse files that are not (super-resolution) upscalers."""
    what = f"upscaler {name!r}"
    stamp = file_stamp(path)
    if stamp is None:  # removed since its folder was listed
        raise _removed(what, path)
    descriptor = read_spandrel_model(path, what)
    if not isinstance(descriptor, ImageModelDescriptor) or descriptor.scale < 2:
        raise RenderInputError(
            f"upscaler {name!r} ({path.name}) is a {descriptor.architecture.name} model for "
            f"{descriptor.purpose} at scale {descriptor.scale}, not an upscaler"
        )
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise RenderInputError(
            f"upscaler {name!r} works on {descriptor.input_channels}-channel pictures; "
            "only RGB (3-channel) upscalers are supported"
        )
    # Half precision where the architecture allows it: half the memory, tensor-core speed.
    half = device.startswith("cuda") and descriptor.supports_half
    descriptor.to(torch.device(device), torch.float16 if half else torch.float32).eval()
    return ModelUpscaler(name, path, stamp, descriptor)


def read_spandrel_model(path: Path, what: str) -> ModelDescriptor:
    """The spandrel model in ``path`` (on the CPU), pickles read weights-only, ``.safetensors``
    read, not mapped (``inference.owned_weights``: a file copied over as it loads fails the
    load, not the process); ``what`` names it in the sentence that refuses a file spandrel
    does not recognise."""
    loader = ModelLoader(device="cpu")
    try:
        if path.suffix in UPSCALER_PICKLE_SUFFIXES:
            # Weights-only, never spandrel's own .pt path (torch.jit.load runs TorchScript).
            weights = load_pickled_weights(path)
            if not isinstance(weights, dict):
                raise RenderInputError(
                    f"{what} ({path.name}) holds a {type(weights).__name__}, not a model's weights"
                )
        else:
            weights = read_safetensors(path)
        return loader.load_from_state_dict(canonicalize_state_dict(weights))
    except UnsupportedModelError:
        raise RenderInputError(
            f"{what} ({path.name}) is not an architecture spandrel recognises"
        ) from None
    except FileNotFoundError:  # removed since its folder was listed
        raise _removed(what, path) from None


def _removed(what: str, path: Path) -> RenderInputError:
    return RenderInputError(f"{what} ({path.name}) is {NO_LONGER_INSTALLED}")


def model_upscale(
    upscaler: ModelUpscaler,
    image: Image.Image,
    size: tuple[int, int],
    *,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_TILE_OVERLAP,
    cancel: threading.Event | None = None,
    on_tile: TileDone | None = None,
) -> Image.Image:
    """``image`` enlarged to ``size``: the model runs until the picture is at least that big
    (at most ``MAX_MODEL_PASSES`` times), then Lanczos resamples to the exact size, as the
    web UI does when the model's scale differs from the one asked for."""
    image = image.convert("RGB")
    passes = _passes_needed(image.size, size, upscaler.scale)
    for _ in range(passes):
        image = upscale_tiled(upscaler, image, tile, overlap, cancel, on_tile)
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def _passes_needed(source: tuple[int, int], target: tuple[int, int], scale: int) -> int:
    ratio = max(target[0] / source[0], target[1] / source[1])
    if ratio <= 1:
        return 0
    return min(MAX_MODEL_PASSES, math.ceil(math.log(ratio, scale) - 1e-9))


def upscale_tiled(
    upscaler: ModelUpscaler,
    image: Image.Image,
    tile: int,
    overlap: int,
    cancel: threading.Event | None = None,
    on_tile: TileDone | None = None,
) -> Image.Image:
    """One pass of the model over ``image``, ``tile`` input pixels at a time."""
    descriptor = upscaler.descriptor
    scale = descriptor.scale
    if descriptor.tiling == ModelTiling.INTERNAL:
        tile = max(image.size)  # the model tiles by itself and wants the whole picture
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    height, width = pixels.shape[1:]
    blender = TileBlender(height * scale, width * scale, 3, overlap * scale)
    rows, columns = tile_spans(height, tile, overlap), tile_spans(width, tile, overlap)
    done, total = 0, len(rows) * len(columns)
    for top, bottom in rows:
        for left, right in columns:
            if cancel is not None and cancel.is_set():
                raise RenderCancelled("cancelled")
            piece = pixels[:, top:bottom, left:right].unsqueeze(0)
            piece = piece.to(descriptor.device, descriptor.dtype)
            result = descriptor(piece)[0].float().cpu().permute(1, 2, 0).numpy()
            blender.add(top * scale, left * scale, upscaler.finite(result, "upscaler"))
            done += 1
            if on_tile is not None:
                on_tile(done, total)
    blended = np.clip(blender.result(), 0, 1) * 255
    return Image.fromarray(np.round(blended).astype(np.uint8))
