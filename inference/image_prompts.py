"""Image prompts (IP-Adapter): what a request asks for, read from ``options["ipadapter"]``
and checked, and the adapters and image encoders under ``EASEL_MODELS_DIR/ipadapter/``. Pure
Python (no torch), so the bot and the CLI refuse a bad image prompt before any model loads.

``--sref`` and ``/imagine sref:`` give one picture, ``/blend`` two to five: their image
embeddings are averaged into one image prompt.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from inference.metadata import (
    FLOW_LABELS,
    safetensors_header,
    second_side,
    tensor_family,
)
from inference.names import as_typed
from inference.not_installed import NotInstalled, not_installed
from inference.registry import ModelEntry, ModelRegistry, loaded_weights
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
# The text width a UNet's cross-attention reads, by the family people know it as.
CROSS_ATTENTION_FAMILIES = {768: "SD1.x", 1024: "SD2.x", 2048: "SDXL"}
# An adapter's first cross-attention key projection: its input is the text width.
_ADAPTER_KEY = "ip_adapter.1.to_k_ip.weight"
# A single file's UNet cross-attention key projection (any: they all read the text).
_UNET_PREFIX = "model.diffusion_model."
_UNET_CROSS_ATTENTION_KEY = ".attn2.to_k.weight"


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
                f"got {weight!r}"
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
        model=None if model is None else as_typed(str(model)),
    )


def with_image_prompt(request: RenderRequest, prompt: ImagePrompt) -> RenderRequest:
    """``request`` guided by ``prompt`` (checked, its pictures' paths kept as given)."""
    options = {**request.options, OPTION_KEY: prompt.to_option()}
    guided = dataclasses.replace(request, options=options)
    image_prompt(guided.options)
    return guided


def adapter_files(registry: ModelRegistry) -> dict[str, Path]:
    """Installed IP-Adapters by name: the ``.safetensors`` files of ``models_dir/ipadapter/``
    (pickled ``.bin`` files are not listed: they could run code when loaded). One whose file
    or image encoder's weights would not load (still being copied, cut short) is left out
    until they are whole (``ModelRegistry.whole_addons``, as for LoRAs)."""
    folder = registry.models_dir / IPADAPTER_FOLDER
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    candidates = [
        (path.stem, path, [path, *loaded_weights(image_encoder_folder(path), "transformers")])
        for path in files
        if path.is_file()
    ]
    return registry.whole_addons("IP-Adapter", candidates)


def image_encoder_folder(adapter: Path) -> Path:
    """The CLIP vision model an adapter uses: its own ``<stem>.image_encoder/`` folder if it
    has one (SDXL adapters come for two encoders), else the shared ``image_encoder/``."""
    own = adapter.with_name(adapter.stem + IMAGE_ENCODER_SUFFIX)
    return own if own.is_dir() else adapter.parent / IMAGE_ENCODER_FOLDER


def adapter_install_hint(models_dir: Path) -> str:
    """Where the operator puts an IP-Adapter (a path of theirs: the log and ``easel doctor``)."""
    folder = models_dir / IPADAPTER_FOLDER
    return (
        f"put an IP-Adapter .safetensors file in {folder}/ and its CLIP image encoder "
        f"(a transformers folder) in {folder / IMAGE_ENCODER_FOLDER}/"
    )


def no_adapter(models_dir: Path) -> RenderInputError:
    return not_installed("IP-Adapter", adapter_install_hint(models_dir))


def unknown_adapter(name: str, installed: Collection[str]) -> NotInstalled:
    """An image prompt names an IP-Adapter not installed here (another machine may have it)."""
    return NotInstalled(f"unknown IP-Adapter {name!r}; available: {', '.join(sorted(installed))}")


def check_image_prompt_models(prompt: ImagePrompt | None, registry: ModelRegistry) -> None:
    """Refuse an image prompt whose adapter or image encoder is not installed, or not whole
    yet."""
    if prompt is None:
        return
    installed = adapter_files(registry)
    if not installed:
        raise no_adapter(registry.models_dir)
    if prompt.model is not None and prompt.model not in installed:
        raise unknown_adapter(prompt.model, installed)
    for path in [installed[prompt.model]] if prompt.model else installed.values():
        if not (image_encoder_folder(path) / "config.json").is_file():
            raise not_installed(
                f"the IP-Adapter {path.stem}'s image encoder",
                f"put its CLIP vision model (config.json and weights) in "
                f"{image_encoder_folder(path)}/",
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


def text_family(width: int) -> str:
    """The family whose text features are ``width`` wide (``SD1.x``), or ``80-wide``."""
    return CROSS_ATTENTION_FAMILIES.get(width, f"{width}-wide")


def adapter_text_width(path: Path) -> int | None:
    """The text width an adapter was trained with (768 SD1.x, 2048 SDXL), read from its
    file's header (cached per file version; None: not an IP-Adapter, or not readable)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return _adapter_text_width(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _adapter_text_width(path: Path, mtime_ns: int, size: int) -> int | None:
    try:
        tensor = safetensors_header(path).get(_ADAPTER_KEY)
    except (OSError, ValueError):
        return None
    return second_side(tensor)


def checkpoint_text_width(entry: ModelEntry) -> int | None:
    """The text width ``entry``'s UNet attends to, from its ``unet/config.json`` or its
    file's header (cached per file version); None when neither says (a pickle, SD3/Flux:
    no UNet), so that only the render can tell."""
    try:
        if entry.format == "diffusers":
            config = entry.path / "unet" / "config.json"
            width = json.loads(config.read_text()).get("cross_attention_dim")
            return width if isinstance(width, int) else None
        if entry.format == "safetensors":
            stat = entry.path.stat()
            return _file_text_width(entry.path, stat.st_mtime_ns, stat.st_size)
    except (OSError, ValueError, RecursionError):  # RecursionError: a config nested too deep
        pass
    return None


@functools.lru_cache(maxsize=256)
def _file_text_width(path: Path, mtime_ns: int, size: int) -> int | None:
    for name, tensor in safetensors_header(path).items():
        if name.startswith(_UNET_PREFIX) and name.endswith(_UNET_CROSS_ATTENTION_KEY):
            return second_side(tensor)
    return None


def choose_adapter(prompt: ImagePrompt, registry: ModelRegistry, width: int) -> tuple[str, Path]:
    """The adapter that renders ``prompt`` on a UNet attending to ``width``-wide text: the
    one asked for, else the first installed one of that family; one sentence when none can
    (headers only)."""
    installed = adapter_files(registry)
    if not installed:
        raise no_adapter(registry.models_dir)
    if prompt.model is None:
        fitting = sorted(
            name for name, path in installed.items() if adapter_text_width(path) == width
        )
        if not fitting:
            raise RenderInputError(
                f"no installed IP-Adapter fits this checkpoint: put an IP-Adapter for the "
                f"{text_family(width)} family in EASEL_MODELS_DIR/{IPADAPTER_FOLDER}/"
            )
        return fitting[0], installed[fitting[0]]
    if prompt.model not in installed:
        raise unknown_adapter(prompt.model, installed)
    path = installed[prompt.model]
    fits = adapter_text_width(path)
    if fits is None:
        raise RenderInputError(
            f"{path.name} is no IP-Adapter: it needs image_proj.* and ip_adapter.* tensors"
        )
    if fits != width:
        raise RenderInputError(
            f"the IP-Adapter {prompt.model} is for the {text_family(fits)} family and this "
            f"checkpoint is {text_family(width)}: pick an adapter of the checkpoint's family"
        )
    return prompt.model, path


def check_image_prompt_fits(
    prompt: ImagePrompt | None, registry: ModelRegistry, model: str | None, default: str | None
) -> None:
    """Refuse, before a job is queued, an image prompt that the model it will render with
    (``model``, else ``default``) cannot take: an SD3/Flux checkpoint, or no installed
    adapter of the checkpoint's family; in the render's own sentences. An unknown model is
    left to the request's own checks. File headers only, cached: call it off the event loop."""
    if prompt is None:
        return
    check_image_prompt_models(prompt, registry)
    try:
        entry = registry.resolve(model, default)
    except RenderInputError:
        return  # refused where every request's model is, without listing every installed one
    family = tensor_family(entry)  # as the engine loads it, not a merge's stale metadata
    if family in FLOW_LABELS:
        raise RenderInputError(
            f"IP-Adapter (--sref, /blend) does not work with {family} models here"
        )
    width = checkpoint_text_width(entry)
    if width is not None:
        choose_adapter(prompt, registry, width)
