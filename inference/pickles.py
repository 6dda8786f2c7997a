"""Pickle weight files (``.ckpt``, ``.pt``, ``.pth``), read only through torch's restricted
unpickler.

Loading a pickle can run any code it names. ``torch.load(weights_only=True)`` rebuilds only
tensors and plain containers (dicts, lists, numbers, strings) and refuses anything else before
it runs, so a file that would call a function is refused, not executed. TorchScript archives
(``.pt`` files holding code as well as weights) are refused too: ``torch.jit.load`` runs
their code, and Easel never calls it.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from inference.types import RenderInputError

__all__ = ["load_pickled_weights", "pickled_state_dict"]

_CONVERT = "convert it to .safetensors"


def _is_torchscript(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def load_pickled_weights(path: Path) -> Any:
    """What the pickle at ``path`` holds (tensors on the CPU, in dicts and lists), or a
    ``RenderInputError`` naming the file when it holds anything else."""
    zipped = zipfile.is_zipfile(path)
    if zipped and _is_torchscript(path):
        raise RenderInputError(
            f"{path.name} is a TorchScript archive: it holds code as well as weights, which "
            f"Easel does not run; {_CONVERT} (or use a .pth of its state dict)"
        )
    try:
        # mmap: tensors are read when used, so reading a large checkpoint's names is cheap.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except pickle.UnpicklingError as error:
        # torch's message suggests weights_only=False, the very thing to avoid: only the line
        # that names what was refused is kept.
        lines = (line.strip() for line in str(error).splitlines())
        refused = next((line for line in lines if "GLOBAL" in line), None)
        if refused is None:
            raise RenderInputError(f"{path.name} is not a readable PyTorch weights file") from None
        raise RenderInputError(
            f"{path.name} holds more than weights ({refused}): loading it could run code, so "
            f"it is refused; {_CONVERT}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise RenderInputError(
            f"{path.name} is not a readable PyTorch weights file: {error}"
        ) from None


def pickled_state_dict(path: Path) -> Mapping[str, Any]:
    """A checkpoint's tensors by name: the web UI's ``.ckpt`` files nest them under
    ``state_dict`` (sometimes twice), as diffusers' single-file loader also expects."""
    weights = load_pickled_weights(path)
    while isinstance(weights, Mapping) and isinstance(weights.get("state_dict"), Mapping):
        weights = weights["state_dict"]
    if not isinstance(weights, Mapping):
        raise RenderInputError(
            f"{path.name} holds a {type(weights).__name__}, not a checkpoint's named tensors"
        )
    return weights
