"""Tiny random-weight models, written once per test session."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference.engine import Engine
from inference.tiny import write_tiny_model

TINY = "tiny"
TINY_INPAINTING = "tiny-inpainting"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with tiny SD1.5 diffusers folders: ``tiny`` (the default, first in
    name order) and the 9-channel ``tiny-inpainting``."""
    directory = tmp_path_factory.mktemp("models")
    write_tiny_model(directory / TINY, family="sd15", seed=0)
    write_tiny_model(directory / TINY_INPAINTING, family="sd15", inpainting=True, seed=0)
    return directory


@pytest.fixture(scope="session")
def engine(models_dir: Path) -> Engine:
    return Engine(models_dir, device="cpu")


PixelReader = Callable[[bytes], np.ndarray]


@pytest.fixture(scope="session")
def pixels() -> PixelReader:
    """Decode a PNG to signed RGB values, so differences of two images do not wrap around."""

    def read(png: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)

    return read


def mapped_under(folder: Path) -> set[str]:
    """The files under ``folder`` this process maps (Linux's /proc/self/maps). Loaded weights
    must map none: a file written over in place under a mapping ends the process with a bus
    error (SIGBUS) when its pages are read (``inference.owned_weights``)."""
    maps = Path("/proc/self/maps").read_text(encoding="utf-8").splitlines()
    return {line.split(maxsplit=5)[-1] for line in maps if str(folder) in line}
