"""A model, LoRA and embedding whose file names macOS wrote in NFD (``é`` as ``e`` + U+0301)
render on the tiny model when named as keyboards type them (NFC): the engine opens each file
by its path on disk, never one built from the typed name."""

from __future__ import annotations

import dataclasses
import hashlib
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.engine import Engine
from inference.infotext import parse_infotext
from inference.tiny import write_tiny_embedding, write_tiny_lora, write_tiny_model
from inference.types import RenderRequest

PixelReader = Callable[[bytes], np.ndarray]


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


MODELE, AMELIE, ETOILE = (
    unicodedata.normalize("NFC", name) for name in ("modèle", "Amélie", "étoile")
)
BASE = RenderRequest("a cat", width=64, height=64, steps=3, seed=5, model=MODELE)


@pytest.fixture(scope="module")
def nfd_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("nfd-models")
    write_tiny_model(directory / nfd(MODELE), seed=0)
    write_tiny_lora(directory / "lora" / f"{nfd(AMELIE)}.safetensors", seed=1)
    write_tiny_embedding(directory / "embeddings" / f"{nfd(ETOILE)}.safetensors", seed=3)
    return directory


def render(engine: Engine, **changes: Any) -> tuple[bytes, dict[str, Any]]:
    [image] = engine.render(dataclasses.replace(BASE, **changes))
    return image.png, parse_infotext(image.infotext)[2]


def test_a_lora_and_an_embedding_named_in_nfd_apply_by_their_names_typed(
    nfd_models: Path, pixels: PixelReader
) -> None:
    engine = Engine(nfd_models)
    plain, params = render(engine)  # the model, typed in NFC, is the NFD folder's
    assert params["Model"] == MODELE
    typed, typed_params = render(engine, prompt=f"a cat <lora:{AMELIE}:0.8>")
    pasted, _ = render(engine, prompt=f"a cat <lora:{nfd(AMELIE)}:0.8>")
    assert "Prompt warnings" not in typed_params  # applied, not "unknown LoRA"
    assert typed_params["Lora hashes"].startswith(f"{AMELIE}: ")
    assert np.abs(pixels(typed) - pixels(plain)).max() > 10
    assert np.array_equal(pixels(typed), pixels(pasted))
    _, embedded = render(engine, prompt=f"a cat {ETOILE}")
    digest = hashlib.sha256(
        (nfd_models / "embeddings" / f"{nfd(ETOILE)}.safetensors").read_bytes()
    ).hexdigest()
    assert embedded["TI hashes"] == f"{ETOILE}: {digest[:12]}"
