"""LoRAs, embeddings and VAE overrides on the tiny model, through the real loading paths."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.engine import Engine
from inference.infotext import parse_infotext
from inference.lora_batching import lora_batch_key
from inference.networks import EmbeddingTokens
from inference.prompts import Chunk
from inference.tiny import (
    write_tiny_embedding,
    write_tiny_lora,
    write_tiny_model,
    write_tiny_vae,
)
from inference.types import RenderInputError, RenderRequest

PixelReader = Callable[[bytes], np.ndarray]
BASE = RenderRequest("a cat", width=64, height=64, steps=3, seed=5)


@pytest.fixture(scope="module")
def network_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with both the Easel (``lora/``, ``vae/``) and web UI (``Lora/``)
    folder names in use."""
    directory = tmp_path_factory.mktemp("network-models")
    write_tiny_model(directory / "tiny", seed=0)
    write_tiny_lora(directory / "lora" / "ink.safetensors", seed=1)
    write_tiny_lora(directory / "Lora" / "styles" / "glow.safetensors", seed=2)
    write_tiny_embedding(directory / "embeddings" / "sparkle.safetensors", seed=3)
    write_tiny_embedding(
        directory / "embeddings" / "fuzz.safetensors", seed=4, vectors=3, layout="diffusers"
    )
    write_tiny_vae(directory / "vae" / "other.safetensors", seed=1)
    return directory


@pytest.fixture(scope="module")
def network_engine(network_models: Path) -> Engine:
    return Engine(network_models)


def render(engine: Engine, **changes: Any) -> tuple[bytes, dict[str, Any]]:
    [image] = engine.render(dataclasses.replace(BASE, **changes))
    return image.png, parse_infotext(image.infotext)[2]


def short_sha256(path: Path, length: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:length]


def test_lora_changes_the_picture_and_is_fully_unloaded(
    network_engine: Engine, network_models: Path, pixels: PixelReader
) -> None:
    plain, _ = render(network_engine)
    with_lora, params = render(network_engine, prompt="a cat <lora:ink:0.8>")
    after, _ = render(network_engine)
    assert np.abs(pixels(with_lora) - pixels(plain)).max() > 10
    assert np.array_equal(pixels(after), pixels(plain))  # bit for bit
    # As the web UI and Civitai's AutoV3 write it: of the tensor data after the header.
    data = (network_models / "lora" / "ink.safetensors").read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    ink_hash = hashlib.sha256(data[header_end:]).hexdigest()[:12]
    assert params["Lora hashes"] == f"ink: {ink_hash}"
    assert ink_hash != short_sha256(network_models / "lora" / "ink.safetensors", 12)
    assert "Prompt warnings" not in params


def test_lora_weight_zero_equals_no_lora(network_engine: Engine, pixels: PixelReader) -> None:
    plain, _ = render(network_engine)
    zero, _ = render(network_engine, prompt="a cat <lora:ink:0>")
    assert np.array_equal(pixels(zero), pixels(plain))


def test_two_loras_from_both_folder_layouts_load_together(
    network_engine: Engine, pixels: PixelReader
) -> None:
    ink, _ = render(network_engine, prompt="a cat <lora:ink:0.8>")
    glow, _ = render(network_engine, prompt="a cat <lora:glow:0.8>")
    both, params = render(network_engine, prompt="a cat <lora:ink:0.8> <lora:glow:0.8>")
    assert params["Lora hashes"].startswith("glow: ")
    assert ", ink: " in params["Lora hashes"]
    for single in (ink, glow):
        assert np.abs(pixels(both) - pixels(single)).max() > 0


def test_text_encoder_and_unet_weights_act_apart(
    network_engine: Engine, pixels: PixelReader
) -> None:
    """``<lora:ink:te:unet>``: the text-encoder half alone changes the picture (so peft's
    wrapped layers reach our own prompt encoder), and so does the UNet half alone."""
    plain, _ = render(network_engine)
    text_only, _ = render(network_engine, prompt="a cat <lora:ink:1:0>")
    unet_only, _ = render(network_engine, prompt="a cat <lora:ink:0:1>")
    both, _ = render(network_engine, prompt="a cat <lora:ink:1:1>")
    for partial in (text_only, unet_only):
        assert np.abs(pixels(partial) - pixels(plain)).max() > 0
        assert np.abs(pixels(partial) - pixels(both)).max() > 0


def test_unknown_lora_is_a_warning_and_the_job_runs(
    network_engine: Engine, pixels: PixelReader
) -> None:
    plain, _ = render(network_engine)
    png, params = render(network_engine, prompt="a cat <lora:inc:1>")
    assert "unknown LoRA 'inc' ignored (did you mean ink?)" in params["Prompt warnings"]
    assert "Lora hashes" not in params
    assert np.array_equal(pixels(png), pixels(plain))


def test_pictures_with_different_loras_in_one_batch_match_their_solo_renders(
    network_engine: Engine, pixels: PixelReader
) -> None:
    requests = [
        dataclasses.replace(BASE, prompt="a cat <lora:ink:0.8>"),
        dataclasses.replace(BASE, prompt="a cat"),
    ]
    batched = network_engine.render_batch(requests)
    for request, [image] in zip(requests, batched, strict=True):
        [solo] = network_engine.render(request)
        assert np.abs(pixels(image.png) - pixels(solo.png)).max() <= 2  # batch rounding


def test_lora_batch_key_sorts_tags() -> None:
    assert lora_batch_key("x <lora:b:0.5:1> <lora:a> <hypernet:h>") == (
        ("a", 1.0, 1.0),
        ("b", 0.5, 1.0),
    )
    assert lora_batch_key("no tags") == ()


def test_embedding_in_prompt_and_negative(
    network_engine: Engine, network_models: Path, pixels: PixelReader
) -> None:
    plain, _ = render(network_engine, prompt="a cat sparkle")
    plain_again, _ = render(network_engine, prompt="a cat sparkle")
    assert np.array_equal(pixels(plain), pixels(plain_again))
    _, plain_params = render(network_engine, prompt="a cat")
    assert "TI hashes" not in plain_params
    png, params = render(network_engine, prompt="a cat", negative_prompt="fuzz")
    fuzz_hash = short_sha256(network_models / "embeddings" / "fuzz.safetensors", 12)
    assert params["TI hashes"] == f"fuzz: {fuzz_hash}"
    unknown_word, _ = render(network_engine, prompt="a cat", negative_prompt="fuzzy")
    assert np.abs(pixels(png) - pixels(unknown_word)).max() > 0


def test_embedding_vectors_reach_the_encoder(
    network_engine: Engine, engine: Engine, pixels: PixelReader
) -> None:
    """The same tiny model renders differently when ``sparkle`` is an embedding than when it
    is read as plain words (``engine``'s models folder has no embeddings)."""
    as_words, _ = render(engine, prompt="a cat sparkle")
    as_embedding, params = render(network_engine, prompt="a cat sparkle")
    assert params["TI hashes"].startswith("sparkle: ")
    assert np.abs(pixels(as_embedding) - pixels(as_words)).max() > 0


def test_embedding_placeholders_replace_the_name_and_never_straddle_chunks() -> None:
    name, placeholders = (10, 11), (900, 901, 902)
    tokens = EmbeddingTokens({name: placeholders})
    [chunk] = tokens.chunks([Chunk((1, 10, 11, 2), (1.0, 1.2, 1.2, 1.0))])
    assert chunk == Chunk((1, 900, 901, 902, 2), (1.0, 1.2, 1.2, 1.2, 1.0))
    full = Chunk((5,) * 73 + name, (1.0,) * 75)
    first, second = tokens.chunks([full])
    assert first.token_ids == (5,) * 73
    assert second.token_ids == placeholders


def test_vae_override_by_name_with_infotext(
    network_engine: Engine, network_models: Path, pixels: PixelReader
) -> None:
    plain, _ = render(network_engine)
    png, params = render(network_engine, options={"vae": "other"})
    assert np.abs(pixels(png) - pixels(plain)).max() > 10
    assert params["VAE"] == "other.safetensors"
    assert params["VAE hash"] == short_sha256(network_models / "vae" / "other.safetensors", 10)
    by_file_name, _ = render(network_engine, options={"vae": "other.safetensors"})
    assert np.array_equal(pixels(by_file_name), pixels(png))
    after, _ = render(network_engine)
    assert np.array_equal(pixels(after), pixels(plain))


def test_unknown_vae_is_refused_naming_no_installed_file(network_engine: Engine) -> None:
    with pytest.raises(RenderInputError, match=r"^unknown VAE 'nope': it is not installed on"):
        render(network_engine, options={"vae": "nope"})


def test_vae_tiling_above_the_pixel_threshold(network_models: Path, pixels: PixelReader) -> None:
    wide = {"width": 192, "height": 64}
    untiled, _ = render(Engine(network_models, vae_tiling_pixels=None), **wide)
    tiled_engine = Engine(network_models, vae_tiling_pixels=64 * 64)
    tiled, _ = render(tiled_engine, **wide)
    assert np.abs(pixels(tiled) - pixels(untiled)).max() > 0  # tiles decode differently
    again, _ = render(tiled_engine, width=64, height=64)  # at the threshold: untiled
    plain, _ = render(Engine(network_models, vae_tiling_pixels=None))
    assert np.array_equal(pixels(again), pixels(plain))
