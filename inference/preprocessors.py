"""ControlNet preprocessors: a picture made into the map a ControlNet reads.

``canny`` (edges), ``tile`` (a blurred copy) and ``none`` (the picture is the map) need no
weights and always work. ``depth`` runs a local transformers depth-estimation model (DPT,
Depth Anything...) from ``EASEL_MODELS_DIR/ControlNet/annotators/depth/``; ``lineart``,
``softedge`` and ``openpose`` need annotator code Easel does not ship, so those maps are made
elsewhere and sent with control type ``none``. Whatever cannot run is refused, before any
model loads, with one sentence saying what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from inference.control_units import (
    ANNOTATORS_FOLDER,
    CONTROLNET_FOLDERS,
    ControlUnit,
    check_control_models,
)
from inference.images import load_input_image
from inference.not_installed import not_installed
from inference.registry import ModelRegistry
from inference.types import RenderInputError

# The web UI's canny thresholds (on the gradient magnitude of 8-bit grey levels).
CANNY_LOW = 100
CANNY_HIGH = 200
CANNY_BLUR_RADIUS = 1.0
# The tile preprocessor keeps colours and layout, drops detail: 1/8 of the size, then back.
TILE_DOWNSCALE = 8
NEEDS_ANNOTATOR_MODEL = ("depth",)
NO_ANNOTATOR_CODE = ("lineart", "softedge", "openpose")


def annotator_dir(models_dir: Path, module: str) -> Path:
    return models_dir / CONTROLNET_FOLDERS[0] / ANNOTATORS_FOLDER / module


def check_preprocessor(unit: ControlUnit, models_dir: Path) -> None:
    """Refuse a unit whose preprocessor cannot run here, naming what to install where."""
    if unit.module in NO_ANNOTATOR_CODE:
        raise RenderInputError(
            f"Easel cannot run the {unit.module} annotator: make the {unit.module} map with "
            "another tool and send it with control type none"
        )
    folder = annotator_dir(models_dir, unit.module)
    if unit.module in NEEDS_ANNOTATOR_MODEL and not (folder / "config.json").is_file():
        raise not_installed(
            f"the {unit.module} control's annotator",
            f"put a transformers {unit.module}-estimation model folder (config.json, weights, "
            f"preprocessor config) at {folder}",
            f", or send a ready {unit.module} map with control type none",
        )


def canny(image: Image.Image, low: int = CANNY_LOW, high: int = CANNY_HIGH) -> Image.Image:
    """Canny edges, white on black: Sobel gradients of the lightly blurred grey picture,
    thinned to their ridges, kept where strong or connected to strong ones."""
    grey = image.convert("L").filter(ImageFilter.GaussianBlur(CANNY_BLUR_RADIUS))
    pixels = np.asarray(grey, dtype=np.float32)
    padded = np.pad(pixels, 1, mode="edge")

    def at(dy: int, dx: int) -> np.ndarray:
        return padded[1 + dy : padded.shape[0] - 1 + dy, 1 + dx : padded.shape[1] - 1 + dx]

    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    magnitude = np.abs(gx) + np.abs(gy)  # OpenCV's default (L1) gradient
    ridges = magnitude * _is_ridge(magnitude, np.arctan2(gy, gx))
    strong = ridges >= high
    weak = ridges >= low
    while True:  # hysteresis: grow the strong edges along the weak ones
        grown = weak & _dilated(strong)
        if np.array_equal(grown, strong):
            break
        strong = grown
    return Image.fromarray((strong * 255).astype(np.uint8)).convert("RGB")


def _is_ridge(magnitude: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Non-maximum suppression: keep a pixel that beats both neighbours across its edge."""
    padded = np.pad(magnitude, 1)
    height, width = magnitude.shape
    # Gradient direction rounded to 0, 45, 90 or 135 degrees; the neighbours along it.
    sector = (np.round(angle / (np.pi / 4)) % 4).astype(np.int8)
    offsets = {0: (0, 1), 1: (1, 1), 2: (1, 0), 3: (1, -1)}
    keep = np.zeros_like(magnitude, dtype=bool)
    for index, (dy, dx) in offsets.items():
        ahead = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        behind = padded[1 - dy : 1 - dy + height, 1 - dx : 1 - dx + width]
        keep |= (sector == index) & (magnitude >= ahead) & (magnitude > behind)
    return keep


def _dilated(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    height, width = mask.shape
    grown = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            grown |= padded[dy : dy + height, dx : dx + width]
    return grown


def tile(image: Image.Image) -> Image.Image:
    """The picture without its fine detail (what a tile ControlNet re-details)."""
    small = (max(1, image.width // TILE_DOWNSCALE), max(1, image.height // TILE_DOWNSCALE))
    reduced = image.convert("RGB").resize(small, Image.Resampling.BOX)
    return reduced.resize(image.size, Image.Resampling.BICUBIC)


def depth(image: Image.Image, folder: Path) -> Image.Image:
    """A depth map (near = white) from the transformers depth model in ``folder``."""
    import torch
    from transformers import AutoImageProcessor

    processor: Any = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    model = depth_model(folder)
    with torch.inference_mode():
        predicted = model(**processor(images=image.convert("RGB"), return_tensors="pt"))
        depth_map = predicted.predicted_depth[None]
        resized = torch.nn.functional.interpolate(
            depth_map, size=(image.height, image.width), mode="bicubic"
        )[0, 0]
    low, high = resized.min(), resized.max()
    scaled = (resized - low) / (high - low) if high > low else torch.zeros_like(resized)
    grey = (scaled * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(grey).convert("RGB")


def depth_model(folder: Path) -> Any:
    """The depth model in ``folder``, its weights in memory of the process's own
    (``inference.owned_weights``): the folder written over in place as it loads or runs
    fails the job, never the process. ``.safetensors`` weights (one file or shards) are read,
    not mapped; a pickled ``.bin``, which torch maps, is copied once loaded."""
    import transformers

    from inference.owned_weights import own_weights, read_safetensors

    shards = sorted(folder.glob("model*.safetensors"))
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    if not shards or not config.architectures:
        model: Any = transformers.AutoModelForDepthEstimation.from_pretrained(
            folder, local_files_only=True
        )
        own_weights(model)
        return model
    weights = {name: tensor for shard in shards for name, tensor in read_safetensors(shard).items()}
    # The class its config names: given weights, transformers' Auto classes take no folder.
    model_class = getattr(transformers, config.architectures[0])
    return model_class.from_pretrained(None, config=config, state_dict=weights)


def control_map(unit: ControlUnit, image: Image.Image, models_dir: Path) -> Image.Image:
    """The map ``unit``'s ControlNet reads, made from ``image``."""
    check_preprocessor(unit, models_dir)
    if unit.module == "canny":
        return canny(image)
    if unit.module == "tile":
        return tile(image)
    if unit.module == "depth":
        return depth(image, annotator_dir(models_dir, unit.module))
    return image.convert("RGB")


def check_controls(units: Sequence[ControlUnit], registry: ModelRegistry) -> None:
    """Refuse, before any model loads, units whose ControlNet or preprocessor is missing."""
    check_control_models(units, registry)
    for unit in units:
        check_preprocessor(unit, registry.models_dir)
        load_input_image(unit.image, "control image")
