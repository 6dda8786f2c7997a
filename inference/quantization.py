"""Quantized denoisers, so that a 12-24 GB card holds the big models.

Two ways, both through the libraries diffusers itself uses:

- GGUF files (``*.gguf``, as city96 publishes Flux and SD3 transformers: Q8_0, Q4_K...) are
  already quantized. One goes in a diffusers folder's ``transformer/`` (or ``unet/``) instead
  of its safetensors; diffusers keeps its linear layers' weights packed and dequantizes each
  one as it runs (``GGUFQuantizationConfig``), in pure-torch code that works on the CPU too.
  An SD3/Flux transformer's GGUF file may also stand alone in ``models/unet/``, read with its
  split parts (``inference.flow_families.load_flow_transformer``).
- ``EASEL_QUANTIZE`` quantizes each model's denoiser (UNet or transformer; not one from a GGUF
  file) and SD3's and Flux's T5 text encoder as they load, with torchao: ``int8`` (weight-only,
  per row; any device) or ``fp8`` (float8 weight-only; CUDA GPUs of compute capability 8.9
  and up). Only linear layers are quantized; convolutions, the CLIP encoders and the VAE stay.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from inference.gguf_header import FLOAT_GGUF_TYPES
from inference.registry import denoiser_gguf

if TYPE_CHECKING:  # torch is imported where it is used: the settings read ``Quantize`` from here
    import torch

Quantize = Literal["off", "int8", "fp8"]
# torchao's float8 weight-only kernels need Ada (8.9) or Hopper (9.0) and later.
FP8_MIN_CAPABILITY = (8, 9)
# SD3's and Flux's big text encoder (4.9B parameters), quantized with their transformer.
T5_ENCODER_CLASS = "T5EncoderModel"
_QUANT_EXTRA = "pip install 'easel[quant]'"
# Set by the loader on a T5 it read from a GGUF file (unpacked as it loads): the file's type.
GGUF_FILE_TYPE = "easel_gguf_file_type"


def quantize_problem(quantize: Quantize, device: str) -> str | None:
    """Why ``EASEL_QUANTIZE=quantize`` cannot run on ``device`` here, or None when it can."""
    if quantize == "off":
        return None
    if importlib.util.find_spec("torchao") is None:
        return f"EASEL_QUANTIZE={quantize} needs torchao: {_QUANT_EXTRA}, or set EASEL_QUANTIZE=off"
    if quantize == "fp8":
        if not device.startswith("cuda"):
            return (
                f"EASEL_QUANTIZE=fp8 needs a CUDA GPU of compute capability 8.9 or later, and "
                f"{device} is not one; use EASEL_QUANTIZE=int8 there"
            )
        import torch

        capability = torch.cuda.get_device_capability(device)
        if capability < FP8_MIN_CAPABILITY:
            return (
                f"EASEL_QUANTIZE=fp8 needs a CUDA GPU of compute capability 8.9 or later, and "
                f"{device} is {capability[0]}.{capability[1]}; use EASEL_QUANTIZE=int8 there"
            )
    return None


def gguf_quantization_config(dtype: torch.dtype) -> Any:
    """What ``from_single_file`` takes to load a ``.gguf`` denoiser computing in ``dtype``."""
    from diffusers import GGUFQuantizationConfig

    return GGUFQuantizationConfig(compute_dtype=dtype)


def gguf_denoiser(folder: Path, dtype: torch.dtype) -> dict[str, Any]:
    """``{"unet" or "transformer": model}`` read from the GGUF file in that folder of the
    diffusers folder ``folder`` (configured by the folder's own ``config.json``), for
    ``from_pretrained`` to take instead of loading it; ``{}`` when there is none."""
    path = denoiser_gguf(folder)
    if path is None:
        return {}
    import diffusers

    component = path.parent.name
    config = json.loads((path.parent / "config.json").read_text())
    model_class = getattr(diffusers, config["_class_name"])
    model = model_class.from_single_file(
        str(path),
        config=str(folder),
        subfolder=component,
        quantization_config=gguf_quantization_config(dtype),
        dtype=dtype,
        local_files_only=True,
    )
    return {component: model}


def quantize_denoiser(pipeline: Any, quantize: Quantize, device: str) -> str | None:
    """Quantize ``pipeline``'s UNet or transformer, and the T5 encoder of SD3 and Flux, in
    place as ``quantize`` says, layer by layer on ``device`` (which then never holds them
    unquantized). Return what the infotext calls it: ``int8``, the GGUF type of a denoiser
    loaded from a GGUF file (``Q8_0``; its T5 then says ``Q8_0, T5 int8``), that of a T5
    read from a GGUF file (``T5 Q8_0``), or None."""
    transformer = getattr(pipeline, "transformer", None)  # SD3 and Flux
    denoiser = pipeline.unet if transformer is None else transformer
    gguf_type = loaded_gguf_type(denoiser)
    t5_encoders = [
        part for part in pipeline.components.values() if type(part).__name__ == T5_ENCODER_CLASS
    ]
    if quantize == "off":
        t5_types = [
            f"T5 {kind}" for t5 in t5_encoders if (kind := getattr(t5, GGUF_FILE_TYPE, None))
        ]
        return ", ".join([gguf_type, *t5_types] if gguf_type else t5_types) or None
    problem = quantize_problem(quantize, device)
    if problem is not None:
        raise RuntimeError(problem)
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

    # set_inductor_config=False: torchao would otherwise change torch.compile's global settings.
    config = (
        Int8WeightOnlyConfig(set_inductor_config=False)
        if quantize == "int8"
        else Float8WeightOnlyConfig(set_inductor_config=False)
    )
    for part in t5_encoders if gguf_type is not None else [denoiser, *t5_encoders]:
        quantize_(part, config, device=device)
    if gguf_type is None:
        return quantize
    return f"{gguf_type}, T5 {quantize}" if t5_encoders else gguf_type


def tensor_bytes(tensor: torch.Tensor) -> int:
    """The memory ``tensor`` takes: a quantized tensor (torchao's) reports its original dtype
    and shape, so its inner tensors (values, scales) are counted instead."""
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is None:
        return tensor.numel() * tensor.element_size()
    names, _ = flatten()
    return sum(tensor_bytes(getattr(tensor, name)) for name in names)


def loaded_gguf_type(denoiser: Any) -> str | None:
    """The GGUF quantization a loaded model's weights keep (the type of most of its packed
    weights, e.g. ``Q4_K``), or None when it was not loaded from a GGUF file."""
    counts: Counter[str] = Counter()
    for parameter in denoiser.parameters():
        quant_type = getattr(parameter, "quant_type", None)
        if quant_type is not None:
            counts[_gguf_type_name(quant_type)] += parameter.numel()
    quantized = [name for name, _ in counts.most_common() if name not in FLOAT_GGUF_TYPES]
    return quantized[0] if quantized else None


def _gguf_type_name(quant_type: int) -> str:
    import gguf

    return gguf.GGMLQuantizationType(quant_type).name
