"""ControlNet units of a request: what each asks for (preprocessor, model, map picture,
weight, guidance window), read from ``options["controlnet"]`` and checked, and the ControlNet
models under ``EASEL_MODELS_DIR``. Pure Python (no torch), so the bot and the CLI refuse a bad
unit before any model loads.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.names import as_typed
from inference.not_installed import NotInstalled, not_installed
from inference.registry import SIDECAR_SUFFIX, ModelRegistry, loaded_weights
from inference.types import RenderInputError, RenderRequest

log = logging.getLogger(__name__)

OPTION_KEY = "controlnet"
# Preprocessors by the web UI ControlNet extension's module names; "none": the picture
# already is the map.
CONTROL_TYPES = ("canny", "tile", "lineart", "softedge", "depth", "openpose", "none")
# The web UI's own folder name first, then a lower-case one.
CONTROLNET_FOLDERS = ("ControlNet", "controlnet")
# Local annotator models live here, one folder per preprocessor that needs weights.
ANNOTATORS_FOLDER = "annotators"
MAX_CONTROL_UNITS = 3
MAX_CONTROL_WEIGHT = 2.0
# The web UI's default resize mode: the map is scaled to cover the picture, then cropped.
RESIZE_MODE = "Crop and Resize"
# A diffusers ControlNet folder holds these.
DIFFUSERS_CONFIG = "config.json"


@dataclass(frozen=True)
class ControlUnit:
    """One ControlNet: ``image`` is a PNG path (as the request's other pictures);
    ``model`` None picks an installed ControlNet for ``module`` and the checkpoint's family."""

    module: str
    image: str
    model: str | None = None
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0

    def active_at(self, progress: float) -> bool:
        """Whether the unit guides the step at ``progress`` (0: first step, 1: the end)."""
        return self.guidance_start <= progress <= self.guidance_end


def _number(unit: Mapping[str, Any], key: str, default: float, high: float) -> float:
    value = unit.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RenderInputError(f"control {key.replace('_', ' ')} must be a number, got {value!r}")
    if not 0.0 <= value <= high:
        raise RenderInputError(
            f"control {key.replace('_', ' ')} must be between 0 and {high:g}, got {value!r}"
        )
    return float(value)


def control_units(options: Mapping[str, Any]) -> list[ControlUnit]:
    """The request's ControlNet units, checked; a message names the first problem."""
    raw = options.get(OPTION_KEY) or []
    if not isinstance(raw, list) or len(raw) > MAX_CONTROL_UNITS:
        raise RenderInputError(f"a request takes 1 to {MAX_CONTROL_UNITS} ControlNet units")
    units = []
    for unit in raw:
        if not isinstance(unit, dict):
            raise RenderInputError(f"a ControlNet unit must be a mapping, got {unit!r}")
        module = str(unit.get("module", ""))
        if module not in CONTROL_TYPES:
            raise RenderInputError(
                f"unknown control type {module!r}; choose one of {', '.join(CONTROL_TYPES)}"
            )
        image = unit.get("image")
        if not isinstance(image, str) or not image:
            raise RenderInputError(f"the {module} control needs a picture")
        model = unit.get("model")
        start = _number(unit, "guidance_start", 0.0, 1.0)
        end = _number(unit, "guidance_end", 1.0, 1.0)
        if start > end:
            raise RenderInputError(
                f"control start ({start!r}) must not be after control end ({end!r})"
            )
        units.append(
            ControlUnit(
                module=module,
                image=image,
                model=None if model is None else as_typed(str(model)),
                weight=_number(unit, "weight", 1.0, MAX_CONTROL_WEIGHT),
                guidance_start=start,
                guidance_end=end,
            )
        )
    return units


def with_control_units(request: RenderRequest, units: Sequence[ControlUnit]) -> RenderRequest:
    """``request`` guided by ``units`` (checked, with their pictures' paths kept as given)."""
    options = {**request.options, OPTION_KEY: [dataclasses.asdict(unit) for unit in units]}
    controlled = dataclasses.replace(request, options=options)
    control_units(controlled.options)
    return controlled


def controlnet_files(registry: ModelRegistry) -> dict[str, Path]:
    """Installed ControlNets by name: ``.safetensors`` files (subfolders included, as in the
    web UI) and diffusers folders (``config.json`` + weights); the first one found wins. One
    whose weights would not load (still being copied, cut short) is left out until they are
    whole (``ModelRegistry.whole_addons``, as for LoRAs). Pickled ``.pth`` files are not
    listed: they could run code when loaded."""
    candidates: list[tuple[str, Path, list[Path]]] = []
    seen: set[Path] = set()
    for folder_name in CONTROLNET_FOLDERS:
        folder = registry.models_dir / folder_name
        # On a case-insensitive disk both names are one folder.
        if not folder.is_dir() or folder.resolve() in seen:
            continue
        seen.add(folder.resolve())
        candidates += sorted(_controlnet_candidates(folder), key=lambda candidate: candidate[1])
    return registry.whole_addons("ControlNet", candidates)


def _controlnet_candidates(folder: Path) -> list[tuple[str, Path, list[Path]]]:
    """The diffusers folders and ``.safetensors`` files under ``folder``, each with its name
    and the weight files it loads. Annotators, sidecar configs and a diffusers folder's own
    files are no models: their folders are not entered (an annotators cache holds thousands
    of files)."""
    candidates: list[tuple[str, Path, list[Path]]] = []
    for top, folders, files in os.walk(folder):
        here = Path(top)
        entered = []
        for name in folders:
            path = here / name
            if name.endswith(SIDECAR_SUFFIX) or (here == folder and name == ANNOTATORS_FOLDER):
                continue
            if (path / DIFFUSERS_CONFIG).is_file():
                candidates.append((name, path, loaded_weights(path)))
            else:
                entered.append(name)
        folders[:] = entered
        weights = (here / name for name in files)
        candidates.extend(
            (path.stem, path, [path])
            for path in weights
            if path.suffix == ".safetensors" and path.is_file()
        )
    return candidates


def controlnet_install_hint(models_dir: Path) -> str:
    """Where the operator puts a ControlNet (a path of theirs: the log and ``easel doctor``)."""
    return (
        f"put a ControlNet in {models_dir / CONTROLNET_FOLDERS[0]} as a .safetensors file or "
        "a diffusers folder"
    )


@dataclass(frozen=True)
class MissingControlNets:
    """Why ``units`` cannot render here: the ControlNets installed (and whole), and the first
    one a unit names that is not among them (None: none named is missing, but none is
    installed for the units that name none)."""

    installed: Collection[str]
    named: str | None


def missing_controlnets(
    units: Sequence[ControlUnit], registry: ModelRegistry
) -> MissingControlNets | None:
    """What ``units`` lack (``MissingControlNets``), or None when each unit's ControlNet is
    installed: one rule for the member's refusal (``check_control_models``) and the
    operator's (``bot.cli.control.check_controls_installed``), each in its own words."""
    if not units:
        return None
    installed = controlnet_files(registry)
    named = next((u.model for u in units if u.model is not None and u.model not in installed), None)
    return None if installed and named is None else MissingControlNets(installed, named)


def check_control_models(units: Sequence[ControlUnit], registry: ModelRegistry) -> None:
    """Refuse a unit whose ControlNet is not installed, or not whole yet (before any model
    loads)."""
    missing = missing_controlnets(units, registry)
    if missing is None:
        return
    if missing.named is None or not missing.installed:
        raise not_installed("ControlNet", controlnet_install_hint(registry.models_dir))
    raise unknown_controlnet(missing.named, missing.installed)


def unknown_controlnet(name: str, installed: Collection[str]) -> RenderInputError:
    """The member's error names no ControlNet (a server may allow some only, as for models:
    ``bot.policy.addons`` names those allowed there); the operator's log names them all, not
    the name asked (a member's words)."""
    log.warning("unknown ControlNet asked for; installed: %s", ", ".join(sorted(installed)))
    return NotInstalled(f"unknown ControlNet model {name!r}: it is not installed here")


def control_infotext(index: int, unit: ControlUnit, model_label: str) -> dict[str, str]:
    """One unit as the web UI ControlNet extension writes it: ``ControlNet 0: "Module: ...,
    Model: name [hash], Weight: 1, ..."``."""
    fields = {
        "Module": unit.module,
        "Model": model_label,
        "Weight": unit.weight,
        "Resize Mode": RESIZE_MODE,
        "Guidance Start": unit.guidance_start,
        "Guidance End": unit.guidance_end,
    }
    text = ", ".join(f"{key}: {_plain(value)}" for key, value in fields.items())
    return {f"ControlNet {index}": text}


def _plain(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
