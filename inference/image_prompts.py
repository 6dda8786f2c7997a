"""Image prompts (IP-Adapter): what a request asks for, read from ``options["ipadapter"]``
and checked, and the adapters and image encoders under ``EASEL_MODELS_DIR/ipadapter/``. Pure
Python (no torch), so the bot and the CLI refuse a bad image prompt before any model loads.

``--sref`` and ``/imagine sref:`` give one picture, ``/blend`` two to five: their image
embeddings are averaged into one image prompt.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from inference.types import RenderInputError, RenderRequest

OPTION_KEY = "ipadapter"
IPADAPTER_FOLDER = "ipadapter"
# The CLIP vision model every adapter uses unless it has its own ``<stem>.image_encoder/``.
IMAGE_ENCODER_FOLDER = "image_encoder"
IMAGE_ENCODER_SUFFIX = ".image_encoder"
MAX_IMAGE_PROMPTS = 5
MAX_IMAGE_PROMPT_WEIGHT = 2.0
# "style": only the layers InstantStyle found to carry style (SDXL); "full": every
# cross-attention layer; "auto": style where the checkpoint has those layers, else full.
ImagePromptMode = Literal["auto", "style", "full"]
IMAGE_PROMPT_MODES: tuple[ImagePromptMode, ...] = ("auto", "style", "full")
# Style-only touches one block, so it takes the adapter at full strength (as InstantStyle);
# across every layer 0.6 keeps the text prompt in charge.
DEFAULT_WEIGHTS = {"style": 1.0, "full": 0.6}


@dataclass(frozen=True)
class ImagePrompt:
    """The pictures (PNG paths, as the request's other pictures) whose averaged embedding
    guides a render; ``weight`` None: the mode's default; ``model`` None: the installed
    adapter that fits the checkpoint."""

    images: tuple[str, ...]
    weight: float | None = None
    mode: ImagePromptMode = "auto"
    model: str | None = None

    def to_option(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "images": list(self.images)}


def image_prompt(options: Mapping[str, Any]) -> ImagePrompt | None:
    """The request's image prompt, checked (None: it has none); a message names the problem."""
    raw = options.get(OPTION_KEY)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise RenderInputError(f"an image prompt must be a mapping, got {raw!r}")
    images = raw.get("images")
    if (
        not isinstance(images, list)
        or not 1 <= len(images) <= MAX_IMAGE_PROMPTS
        or not all(isinstance(image, str) and image for image in images)
    ):
        raise RenderInputError(f"an image prompt takes 1 to {MAX_IMAGE_PROMPTS} pictures")
    weight = raw.get("weight")
    if weight is not None:
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise RenderInputError(f"the image prompt strength must be a number, got {weight!r}")
        if not 0.0 <= weight <= MAX_IMAGE_PROMPT_WEIGHT:
            raise RenderInputError(
                f"the image prompt strength must be between 0 and {MAX_IMAGE_PROMPT_WEIGHT:g}, "
                f"got {weight:g}"
            )
        weight = float(weight)
    mode = raw.get("mode", "auto")
    if mode not in IMAGE_PROMPT_MODES:
        raise RenderInputError(
            f"unknown image prompt mode {mode!r}; choose one of {', '.join(IMAGE_PROMPT_MODES)}"
        )
    model = raw.get("model")
    return ImagePrompt(
        images=tuple(images),
        weight=weight,
        mode=mode,
        model=None if model is None else str(model),
    )


def with_image_prompt(request: RenderRequest, prompt: ImagePrompt) -> RenderRequest:
    """``request`` guided by ``prompt`` (checked, its pictures' paths kept as given)."""
    options = {**request.options, OPTION_KEY: prompt.to_option()}
    guided = dataclasses.replace(request, options=options)
    image_prompt(guided.options)
    return guided


def adapter_files(models_dir: Path) -> dict[str, Path]:
    """Installed IP-Adapters by name: the ``.safetensors`` files of ``models_dir/ipadapter/``
    (pickled ``.bin`` files are not listed: they could run code when loaded)."""
    folder = models_dir / IPADAPTER_FOLDER
    if not folder.is_dir():
        return {}
    return {path.stem: path for path in sorted(folder.glob("*.safetensors")) if path.is_file()}


def image_encoder_folder(adapter: Path) -> Path:
    """The CLIP vision model an adapter uses: its own ``<stem>.image_encoder/`` folder if it
    has one (SDXL adapters come for two encoders), else the shared ``image_encoder/``."""
    own = adapter.with_name(adapter.stem + IMAGE_ENCODER_SUFFIX)
    return own if own.is_dir() else adapter.parent / IMAGE_ENCODER_FOLDER


def missing_adapter_message(models_dir: Path) -> str:
    folder = models_dir / IPADAPTER_FOLDER
    return (
        f"no IP-Adapter is installed: put an IP-Adapter .safetensors file in {folder}/ and "
        f"its CLIP image encoder (a transformers folder) in {folder / IMAGE_ENCODER_FOLDER}/"
    )


def check_image_prompt_models(prompt: ImagePrompt | None, models_dir: Path) -> None:
    """Refuse an image prompt whose adapter or image encoder is not installed."""
    if prompt is None:
        return
    installed = adapter_files(models_dir)
    if not installed:
        raise RenderInputError(missing_adapter_message(models_dir))
    if prompt.model is not None and prompt.model not in installed:
        raise RenderInputError(
            f"unknown IP-Adapter {prompt.model!r}; available: {', '.join(sorted(installed))}"
        )
    for path in [installed[prompt.model]] if prompt.model else installed.values():
        if not (image_encoder_folder(path) / "config.json").is_file():
            raise RenderInputError(
                f"the IP-Adapter {path.stem} has no image encoder: put its CLIP vision model "
                f"(config.json and weights) in {image_encoder_folder(path)}/"
            )


def image_prompt_infotext(
    model_label: str, weight: float, mode: str, pictures: int
) -> dict[str, str]:
    """The image prompt in the infotext, in the spirit of the web UI ControlNet extension's
    IP-Adapter units: model with its hash, weight, and what was taken from the pictures."""
    params = {
        "IP-Adapter": model_label,
        "IP-Adapter weight": f"{weight:g}",
        "IP-Adapter mode": mode,
    }
    if pictures > 1:
        params["IP-Adapter images"] = str(pictures)
    return params


def image_prompt_pictures(options: Mapping[str, Any]) -> Sequence[str]:
    """The picture paths ``options`` names for an image prompt, unchecked (for the broker
    and retention, which must see them even in a malformed request)."""
    raw = options.get(OPTION_KEY)
    images = raw.get("images") if isinstance(raw, dict) else None
    return [image for image in images if isinstance(image, str)] if isinstance(images, list) else []
