"""GGUF files written here with the ``gguf`` package, as city96's Flux/SD3 files are: linear
weights quantized (Q8_0 by default), everything else kept in float32."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import gguf
import numpy as np
import torch
from safetensors.torch import load_file

from inference.registry import DENOISER_FOLDERS


def write_gguf(
    state: Mapping[str, torch.Tensor],
    path: Path,
    quant_type: gguf.GGMLQuantizationType = gguf.GGMLQuantizationType.Q8_0,
) -> Path:
    """``state`` as a GGUF file: each 2-D weight whose rows split into whole blocks is
    quantized to ``quant_type`` (``gguf.quants``), the rest stays float32."""
    block_size = gguf.GGML_QUANT_SIZES[quant_type][0]
    writer = gguf.GGUFWriter(str(path), arch="easel-test")
    for name, tensor in state.items():
        values = tensor.float().numpy()
        if values.ndim == 2 and values.shape[-1] % block_size == 0:
            writer.add_tensor(name, gguf.quants.quantize(values, quant_type), raw_dtype=quant_type)
        else:
            writer.add_tensor(name, values.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def gguf_copy(model: Path, target: Path) -> Path:
    """A copy of the diffusers folder ``model`` whose UNet or transformer weights are a Q8_0
    GGUF file instead of safetensors (where a server owner drops city96's files)."""
    shutil.copytree(model, target)
    denoiser = next(target / name for name in DENOISER_FOLDERS if (target / name).is_dir())
    weights = denoiser / "diffusion_pytorch_model.safetensors"
    write_gguf(load_file(weights), denoiser / "model-Q8_0.gguf")
    weights.unlink()
    return target
