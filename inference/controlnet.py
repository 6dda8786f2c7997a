"""ControlNet: models from ``EASEL_MODELS_DIR/ControlNet/`` loaded offline, and their
residuals added to the UNet inside Easel's prompt guidance.

The ControlNet runs inside ``ScheduledUNet`` (``inference.guidance``) rather than through
diffusers' ControlNet pipelines: it then sees exactly the rows, per-step conditionings and
SDXL micro-conditioning the UNet sees, and one mechanism serves txt2img, img2img, inpaint
and hires passes, with one or several ControlNets. Single files (the web UI's layout, or
diffusers tensor names) load with the configs shipped in ``inference/configs/controlnet-*``
or a sidecar ``<stem>.config/`` folder; diffusers folders load as they are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import ControlNetModel
from PIL import Image, ImageOps
from safetensors import safe_open

from inference.control_units import (
    CONTROLNET_FOLDERS,
    DIFFUSERS_CONFIG,
    ControlUnit,
    control_infotext,
    control_units,
    controlnet_files,
    unknown_controlnet,
)
from inference.file_versions import FileStamp, being_written, file_stamp
from inference.images import load_input_image
from inference.owned_weights import own_weights
from inference.preprocessors import control_map
from inference.registry import SIDECAR_SUFFIX, ModelRegistry
from inference.types import (
    ALLOWED_CONTROLNETS_OPTION,
    RenderFailed,
    RenderInputError,
    RenderRequest,
)

CONFIGS_DIR = Path(__file__).parent / "configs"
SHIPPED_CONFIGS = {"sd15": CONFIGS_DIR / "controlnet-sd15", "sdxl": CONFIGS_DIR / "controlnet-sdxl"}
# SDXL ControlNets carry the added time/text embedding (diffusers or original names).
_SDXL_MARKERS = ("add_embedding.linear_1.weight", "label_emb.0.0.weight")
_CROSS_ATTENTION_KEY = "attn2.to_k.weight"
# The web UI shows a ControlNet's hash as the first 8 hex digits of its SHA-256.
CONTROLNET_HASH_DIGITS = 8
CROSS_ATTENTION_FAMILIES = {768: "SD1.x", 1024: "SD2.x", 2048: "SDXL"}


def _weights_file(path: Path) -> Path:
    """The file that holds a ControlNet's weights (a diffusers folder's safetensors)."""
    if path.is_file():
        return path
    found = sorted(path.glob("diffusion_pytorch_model*.safetensors"))
    return found[0] if found else path / DIFFUSERS_CONFIG


def cross_attention_dim(path: Path) -> int | None:
    """The text width a ControlNet was trained on (768 SD1.x, 1024 SD2.x, 2048 SDXL)."""
    if path.is_dir():
        return int(json.loads((path / DIFFUSERS_CONFIG).read_text())["cross_attention_dim"])
    with safe_open(str(path), framework="pt") as weights:
        names: list[str] = weights.keys()
        key = next((name for name in names if name.endswith(_CROSS_ATTENTION_KEY)), None)
        return None if key is None else int(weights.get_slice(key).get_shape()[1])


def shipped_config(path: Path) -> Path:
    with safe_open(str(path), framework="pt") as weights:
        names = list(weights.keys())
    sdxl = any(name.removeprefix("control_model.") in _SDXL_MARKERS for name in names)
    return SHIPPED_CONFIGS["sdxl" if sdxl else "sd15"]


def load_controlnet(path: Path, dtype: torch.dtype) -> Any:
    """A ControlNet read from disk, offline: a diffusers folder, or one ``.safetensors`` file
    with its sidecar config folder or else the shipped config of its family."""
    if path.is_dir():
        return ControlNetModel.from_pretrained(path, local_files_only=True, dtype=dtype)
    sidecar = path.with_name(path.stem + SIDECAR_SUFFIX)
    config = sidecar if sidecar.is_dir() else shipped_config(path)
    return ControlNetModel.from_single_file(
        str(path), config=str(config), local_files_only=True, dtype=dtype
    )


def _model_for(
    unit: ControlUnit, installed: dict[str, Path], width: int, *, listed: bool = False
) -> str:
    """The installed ControlNet ``unit`` uses: its own, else the first that fits the
    checkpoint and, where one does, has the preprocessor's name in its own. ``listed``:
    ``installed`` holds only those the server allows (the operator's advice is not for its
    members)."""
    if unit.model is not None:
        return unit.model
    fitting = [name for name, path in installed.items() if cross_attention_dim(path) == width]
    if not fitting:
        family = CROSS_ATTENTION_FAMILIES.get(width, "this")
        if listed:
            raise RenderInputError(
                f"none of the ControlNets this server allows fits this checkpoint (the {family} "
                "family): name one in the unit, pick another model, or ask its admins"
            )
        raise RenderInputError(
            f"no installed ControlNet fits this checkpoint: put a ControlNet for the {family} "
            f"family in EASEL_MODELS_DIR/{CONTROLNET_FOLDERS[0]}/"
        )
    named = [name for name in fitting if unit.module in name.lower()]
    return sorted(named or fitting)[0]


@dataclass
class _ControlNet:
    unit: ControlUnit
    name: str
    short_hash: str
    model: Any
    picture: Image.Image  # the map at the input picture's size
    # Kept where the ControlNet runs: a copy from the host waits for the device, and a split
    # UNet call (``inference.guidance.MAX_UNET_ROWS``) runs the ControlNet per chunk.
    conds: dict[tuple[tuple[int, int], torch.device, torch.dtype], torch.Tensor] = field(
        default_factory=dict
    )

    def cond(self, size: tuple[int, int], device: torch.device, dtype: torch.dtype) -> Any:
        """The map cropped and resized to cover ``size`` (the web UI's Crop and Resize)."""
        key = (size, device, dtype)
        if key not in self.conds:
            fitted = ImageOps.fit(self.picture, size, Image.Resampling.LANCZOS)
            pixels = np.asarray(fitted, dtype=np.float32) / 255
            self.conds[key] = torch.from_numpy(pixels).permute(2, 0, 1)[None].to(device, dtype)
        return self.conds[key]


class Controls:
    """The ControlNets of one render: what ``ScheduledUNet`` adds to the UNet, and the
    infotext that records them."""

    def __init__(self, controlnets: Sequence[_ControlNet], vae_scale: int) -> None:
        self.controlnets = list(controlnets)
        self.vae_scale = vae_scale

    def infotext(self) -> dict[str, str]:
        params: dict[str, str] = {}
        for index, control in enumerate(self.controlnets):
            label = f"{control.name} [{control.short_hash}]"
            params |= control_infotext(index, control.unit, label)
        return params

    def residuals(
        self,
        sample: torch.Tensor,
        timestep: Any,
        hidden: torch.Tensor,
        unet_kwargs: dict[str, Any],
        progress: float,
    ) -> dict[str, Any]:
        """The UNet's extra inputs for these rows at ``progress`` (0 to 1) of the pass: the
        sum of every active ControlNet's residuals at its weight (none: no extra input)."""
        size = (sample.shape[-1] * self.vae_scale, sample.shape[-2] * self.vae_scale)
        down: list[torch.Tensor] | None = None
        mid: torch.Tensor | None = None
        for control in self.controlnets:
            if not control.unit.active_at(progress):
                continue
            model = control.model
            cond = control.cond(size, sample.device, sample.dtype)
            down_samples, mid_sample = model(
                sample[:, : model.config.in_channels],
                timestep,
                encoder_hidden_states=hidden,
                controlnet_cond=cond.expand(sample.shape[0], -1, -1, -1),
                conditioning_scale=control.unit.weight,
                added_cond_kwargs=unet_kwargs.get("added_cond_kwargs"),
                return_dict=False,
            )
            if down is None or mid is None:
                down, mid = list(down_samples), mid_sample
            else:
                down = [total + more for total, more in zip(down, down_samples, strict=True)]
                mid = mid + mid_sample
        if down is None:
            return {}
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


class ControlNetCache:
    """One device's ControlNets, kept while renders keep asking for them."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[Path, FileStamp], Any] = {}

    def controls(
        self,
        request: RenderRequest,
        pipeline: Any,
        registry: ModelRegistry,
        device: str,
        dtype: torch.dtype,
    ) -> Controls | None:
        """The request's ControlNets loaded for ``pipeline``'s UNet (None: it asks for none)."""
        units = control_units(request.options)
        if not units:
            return None
        installed = controlnet_files(registry)
        # A unit naming none is given one its server allows (``ALLOWED_CONTROLNETS_OPTION``).
        allowed = request.options.get(ALLOWED_CONTROLNETS_OPTION)
        choosable = {n: p for n, p in installed.items() if allowed is None or n in allowed}
        width = int(pipeline.unet.config.cross_attention_dim)
        wanted: dict[tuple[Path, FileStamp], Any] = {}
        controlnets = []
        for unit in units:
            name = _model_for(unit, choosable, width, listed=allowed is not None)
            if name not in installed:
                raise unknown_controlnet(name, installed)
            path = installed[name]
            fits = cross_attention_dim(path)
            if fits != width:
                raise RenderInputError(
                    f"ControlNet {name} does not fit this checkpoint: it reads text {fits} wide, "
                    f"the checkpoint writes it {width} wide (SD1.x 768, SD2.x 1024, SDXL "
                    "2048); pick a ControlNet of the checkpoint's family"
                )
            weights = _weights_file(path)
            key = (path, file_stamp(weights))
            model = self._loaded.get(key) or wanted.get(key)
            if model is None:
                # Loaded mapped (1.4 GB and more): not while a copy is writing it.
                if (why := being_written((path, weights))) is not None:
                    raise RenderFailed(f"ControlNet {name} cannot be loaded now: {why}")
                model = load_controlnet(path, dtype).to(device)
                own_weights(model)  # on the CPU, out of the file's mapped pages
            wanted[key] = model
            picture = load_input_image(unit.image, "control image")
            controlnets.append(
                _ControlNet(
                    unit=unit,
                    name=name,
                    short_hash=registry.sha256(weights)[:CONTROLNET_HASH_DIGITS],
                    model=model,
                    picture=control_map(unit, picture, registry.models_dir),
                )
            )
        self._loaded = wanted  # ControlNets no longer asked for are dropped
        return Controls(controlnets, pipeline.vae_scale_factor)
