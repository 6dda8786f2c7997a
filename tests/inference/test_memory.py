"""``easel doctor``'s memory figures, read from file headers: bytes and parameters per
component, the dtype they run in, the 2x2 grid's peak estimate, and the doctor's line."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import gguf
import pytest
import torch
from accelerate import init_empty_weights
from diffusers import UNet2DConditionModel

from bot.cli.doctor import diagnose
from bot.settings import load_settings
from inference.checkpoints import CONFIGS_DIR
from inference.memory import (
    DEFAULT_NATIVE_SIDE,
    DENOISER_COPIES,
    GRID_PICTURES,
    TensorInfo,
    gguf_tensors,
    model_memory,
    native_side,
    run_bytes,
    safetensors_tensors,
)
from inference.model_list import listed_model
from inference.registry import ModelEntry, ModelRegistry
from inference.tiny import write_tiny_checkpoint, write_tiny_model
from tests.support.gguf_files import gguf_copy, write_gguf

# diffusers' count for the SD1.5 UNet (runwayml/stable-diffusion-v1-5, unet/config.json).
SD15_UNET_PARAMETERS = 859_520_964


def write_header_only(path: Path, shapes: dict[str, tuple[int, ...]], dtype: str) -> Path:
    """A ``.safetensors`` file with a real header and no data: all a memory figure reads."""
    item = {"F16": 2, "F32": 4}[dtype]
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = item * int(torch.Size(shape).numel())
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return path


def test_single_file_components_match_the_file(tmp_path: Path) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.safetensors")
    memory = model_memory(ModelEntry("tiny", checkpoint, "safetensors"), 2, quantize=False)
    assert [c.name for c in memory.components] == ["text_encoder", "unet", "vae"]
    (header_length,) = struct.unpack("<Q", checkpoint.read_bytes()[:8])
    stored = sum(c.stored_bytes for c in memory.components)
    assert stored == checkpoint.stat().st_size - 8 - header_length
    sidecar = tmp_path / "tiny.config"
    parameters = {c.name: c.parameters for c in memory.components}
    # Stored in float32 (4 bytes a value), run here in float16 (2).
    assert all(c.stored_bytes == 4 * c.parameters for c in memory.components)
    assert memory.weight_bytes == 2 * sum(parameters.values())
    unet_config = json.loads((sidecar / "unet" / "config.json").read_text())
    assert memory.native_side == unet_config["sample_size"] * 8  # from the sidecar config


def test_sd15_unet_parameters_from_a_header(tmp_path: Path) -> None:
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(CONFIGS_DIR / "sd15" / "unet")
        )
    shapes = {f"model.diffusion_model.{k}": tuple(v.shape) for k, v in unet.state_dict().items()}
    # The LDM name of the first conv tells a UNet (and its width) apart.
    shapes["model.diffusion_model.input_blocks.0.0.weight"] = shapes.pop(
        "model.diffusion_model.conv_in.weight"
    )
    checkpoint = write_header_only(tmp_path / "sd15.safetensors", shapes, "F16")
    memory = model_memory(ModelEntry("sd15", checkpoint, "safetensors"), 2, quantize=False)
    [component] = memory.components
    assert (component.name, component.parameters) == ("unet", SD15_UNET_PARAMETERS)
    assert component.stored_bytes == component.run_bytes == 2 * SD15_UNET_PARAMETERS
    assert memory.native_side == 512
    tokens = (512 // 8) ** 2
    denoising = GRID_PICTURES * 2 * tokens * 320 * 2 * DENOISER_COPIES  # 320: SD1.5's width
    assert memory.peak_bytes == memory.weight_bytes + denoising  # no VAE in this file
    int8 = model_memory(ModelEntry("sd15", checkpoint, "safetensors"), 2, quantize=True)
    # Linear weights drop to a byte a value (plus a scale per row); convolutions and biases
    # stay (torchao quantizes nn.Linear only), and most of SD1.5's UNet is convolutions: 84%.
    assert 0.8 < int8.weight_bytes / memory.weight_bytes < 0.9


def test_gguf_tensor_sizes(tmp_path: Path) -> None:
    path = write_gguf(
        {"proj.weight": torch.randn(64, 96), "proj.bias": torch.randn(64)}, tmp_path / "x.gguf"
    )
    tensors = {t.name: t for t in gguf_tensors(path)}
    weight, bias = tensors["proj.weight"], tensors["proj.bias"]
    # Q8_0: blocks of 32 values, each 32 bytes plus a float16 scale.
    block_values, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0]
    assert (block_values, block_bytes) == (32, 34)
    assert (weight.shape, weight.packed, weight.stored_bytes) == ((64, 96), "Q8_0", 64 * 3 * 34)
    assert (bias.shape, bias.packed, bias.stored_bytes) == ((64,), None, 64 * 4)
    # Packed weights stay packed on the device; float tensors take the run dtype.
    assert run_bytes(weight, 2, quantized=True) == 64 * 3 * 34
    assert run_bytes(bias, 2, quantized=False) == 64 * 2


@pytest.mark.parametrize(
    ("shape", "expected"), [((128, 64), 128 * 64 + 128 * 2), ((8, 4, 3, 3), 8 * 4 * 9 * 2)]
)
def test_int8_counts_linear_weights_only(shape: tuple[int, ...], expected: int) -> None:
    tensor = TensorInfo("block.weight", shape, 4 * int(torch.Size(shape).numel()))
    assert run_bytes(tensor, 2, quantized=True) == expected


def test_gguf_unet_in_a_folder_counts_packed_bytes(tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "tiny", seed=0)
    gguf_copy(tmp_path / "tiny", tmp_path / "tiny-q8")
    float_unet = safetensors_tensors(
        tmp_path / "tiny" / "unet" / "diffusion_pytorch_model.safetensors"
    )
    # What write_gguf packs: 2-D weights in whole 32-value blocks of 34 bytes, the rest float32.
    expected = sum(
        t.numel // 32 * 34 if len(t.shape) == 2 and t.shape[1] % 32 == 0 else t.numel * 4
        for t in float_unet
    )
    memory = model_memory(ModelEntry("tiny-q8", tmp_path / "tiny-q8", "diffusers"), 4, False)
    unet = next(c for c in memory.components if c.name == "unet")
    assert unet.parameters == sum(t.numel for t in float_unet)
    assert unet.stored_bytes == unet.run_bytes == expected < 4 * unet.parameters


def test_model_list_names_the_gguf_quantization(tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "tiny", seed=0)
    gguf_copy(tmp_path / "tiny", tmp_path / "tiny-q8")
    rows = {
        name: listed_model(entry).label for name, entry in ModelRegistry(tmp_path).scan().items()
    }
    assert rows == {"tiny": "SD 1.5", "tiny-q8": "SD 1.5, GGUF Q8_0"}


def test_doctor_reports_each_models_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tiny_model(tmp_path / "tiny", seed=0)
    monkeypatch.setenv("EASEL_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("EASEL_DEVICES", "cpu")
    checks = {c.name: c for c in diagnose(load_settings(None))}
    check = checks["memory tiny"]
    assert check.ok
    memory = model_memory(ModelEntry("tiny", tmp_path / "tiny", "diffusers"), 4, False)
    side = memory.native_side
    parts = [f"{c.name} " for c in memory.components]
    assert parts == ["text_encoder ", "unet ", "vae "]
    assert all(part in check.detail for part in parts)
    assert " in float32; peak about " in check.detail
    assert check.detail.endswith(f"for a 2x2 grid at {side}x{side}; CPU")


@pytest.mark.parametrize(
    ("free", "offload", "ok", "verdict"),
    [
        (10**12, False, True, "; fits: cuda:0 931.3 GiB free"),
        (1000, False, False, "; does not fit cuda:0 (cuda:0 1000 B free): set EASEL_QUANTIZE=int8"),
        (1000, True, True, "; fits: cuda:0 1000 B free (EASEL_CPU_OFFLOAD=1: parts move to"),
    ],
)
def test_doctor_weighs_the_peak_against_free_gpu_memory(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    free: int,
    offload: bool,
    ok: bool,
    verdict: str,
) -> None:
    write_tiny_model(tmp_path / "tiny", seed=0)
    monkeypatch.setenv("EASEL_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("EASEL_DEVICES", "cuda:0")
    monkeypatch.setenv("EASEL_CPU_OFFLOAD", str(int(offload)))
    monkeypatch.setenv("EASEL_QUANTIZE", "fp8")
    monkeypatch.setattr("inference.devices.free_device_bytes", lambda device: free)
    checks = {c.name: c for c in diagnose(load_settings(None))}
    check = checks["memory tiny"]
    assert check.ok == ok
    assert verdict in check.detail
    assert " in float16, denoiser fp8; " in check.detail  # CUDA runs in half precision
    assert "quantize cuda:0" not in checks  # no usable device here: the device line says so


def test_native_side_of_sdxl_sd15_and_a_tiny_folder(tmp_path: Path) -> None:
    """What a request naming no size renders at, as its cost estimate reads it: an SDXL
    checkpoint 1024, an SD1.5 one 512 (from their tensor names), a diffusers folder its
    UNet's configured size (the tiny model's 64)."""
    unet_input = {"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3)}
    sdxl = write_header_only(
        tmp_path / "xl.safetensors",
        {"conditioner.embedders.1.model.ln_final.weight": (1280,), **unet_input},
        "F16",
    )
    sd15 = write_header_only(
        tmp_path / "sd15.safetensors",
        {"cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,), **unet_input},
        "F16",
    )
    tiny = write_tiny_model(tmp_path / "tiny")
    assert native_side(ModelEntry("xl", sdxl, "safetensors")) == 1024
    assert native_side(ModelEntry("sd15", sd15, "safetensors")) == 512
    assert native_side(ModelEntry("tiny", tiny, "diffusers")) == 64


def test_a_transformer_folder_whose_vae_gives_no_size_renders_at_the_default_side(
    tmp_path: Path,
) -> None:
    """A Flux/SD3 folder's native side is its VAE's ``sample_size``, in pixels; a VAE config
    that gives none means the default side in pixels, not the UNet default in latents."""
    folder = tmp_path / "flow"
    (folder / "transformer").mkdir(parents=True)
    (folder / "vae").mkdir()
    (folder / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    entry = ModelEntry("flow", folder, "diffusers")
    assert native_side(entry) == DEFAULT_NATIVE_SIDE
    (folder / "vae" / "config.json").write_text(json.dumps({"sample_size": 768}))
    assert native_side(entry) == 768
