"""A split SD3/Flux release whose T5 is a GGUF file in ``models/text_encoder/`` (city96's
``t5-v1_1-xxl-encoder-Q8_0.gguf``: llama.cpp's names, architecture ``t5encoder``) renders as
with the safetensors T5 it was made from, and says so in the infotext."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from inference.checkpoints import load_single_file, split_part_files
from inference.engine import Engine
from inference.flow_tiny import write_tiny_flow_checkpoint
from inference.infotext import parse_infotext
from inference.memory import model_memory
from inference.registry import ModelEntry
from inference.types import RenderRequest

T5_FILE = "tiny-t5xxl"
SPLIT = "sd3-split"


def write_gguf_t5(
    state: Mapping[str, torch.Tensor],
    config: Mapping[str, int | float],
    path: Path,
    quant_type: gguf.GGMLQuantizationType,
) -> Path:
    """A T5 encoder's weights (transformers' names) as llama.cpp's converter writes them:
    architecture ``t5encoder``, its hyper-parameters, ``enc.blk.N.*`` names, the embedding
    once; 2-D weights whose rows split into whole blocks packed as ``quant_type``."""
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.T5ENCODER, int(config["num_layers"]))
    writer = gguf.GGUFWriter(str(path), arch="t5encoder")
    writer.add_context_length(512)
    writer.add_embedding_length(int(config["d_model"]))
    writer.add_feed_forward_length(int(config["d_ff"]))
    writer.add_block_count(int(config["num_layers"]))
    writer.add_head_count(int(config["num_heads"]))
    writer.add_key_length(int(config["d_kv"]))
    writer.add_value_length(int(config["d_kv"]))
    writer.add_layer_norm_eps(float(config["layer_norm_epsilon"]))
    writer.add_layer_norm_rms_eps(float(config["layer_norm_epsilon"]))
    writer.add_relative_attn_buckets_count(int(config["relative_attention_num_buckets"]))
    writer.add_token_list([f"<{index}>" for index in range(int(config["vocab_size"]))])
    block = gguf.GGML_QUANT_SIZES[quant_type][0]
    for name, tensor in state.items():
        module, _, suffix = name.rpartition(".")
        gguf_name = names.get_name(module)
        assert gguf_name is not None, name
        values = tensor.float().numpy()
        if values.ndim == 2 and values.shape[-1] % block == 0:
            packed = gguf.quants.quantize(values, quant_type)
            writer.add_tensor(f"{gguf_name}.{suffix}", packed, raw_dtype=quant_type)
        else:
            writer.add_tensor(f"{gguf_name}.{suffix}", values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny SD3 as a split release twice: with its T5 as safetensors, and as GGUF."""
    float_dir = tmp_path_factory.mktemp("float")
    checkpoint = write_tiny_flow_checkpoint(
        float_dir / "unet" / f"{SPLIT}.safetensors", parts_dir=float_dir
    )
    gguf_dir = tmp_path_factory.mktemp("gguf")
    shutil.copytree(float_dir, gguf_dir, dirs_exist_ok=True)
    t5 = gguf_dir / "text_encoder" / f"{T5_FILE}.safetensors"
    config = json.loads(
        (checkpoint.with_name(f"{SPLIT}.config") / "text_encoder_3" / "config.json").read_text()
    )
    write_gguf_t5(load_file(t5), config, t5.with_suffix(".gguf"), gguf.GGMLQuantizationType.Q8_0)
    t5.unlink()
    return float_dir, gguf_dir


def _render(models: Path, prompt: str = "a red cat") -> tuple[np.ndarray, dict[str, object]]:
    engine = Engine(models, preview_interval_s=0)
    request = RenderRequest(
        model=SPLIT, prompt=prompt, seed=7, steps=4, sampler="Euler", width=64, height=64
    )
    (image,) = engine.render(request)
    pixels = np.asarray(Image.open(io.BytesIO(image.png)).convert("RGB")).astype(np.int16)
    return pixels, parse_infotext(image.infotext)[2]


def test_a_gguf_t5_renders_as_its_safetensors_t5(models: tuple[Path, Path]) -> None:
    float_dir, gguf_dir = models
    from_float, float_fields = _render(float_dir)
    from_gguf, gguf_fields = _render(gguf_dir)
    difference = np.abs(from_float - from_gguf)
    assert difference.max() <= 1, (difference.max(), difference.mean())
    assert "Quantization" not in float_fields
    assert gguf_fields["Quantization"] == "T5 Q8_0"


def test_each_t5_weight_is_the_safetensors_one_within_q8_0_rounding(
    models: tuple[Path, Path],
) -> None:
    float_dir, gguf_dir = models
    encoders = [
        load_single_file(
            ModelEntry(SPLIT, models / "unet" / f"{SPLIT}.safetensors", "safetensors"),
            torch.float32,
        ).text_encoder_3.state_dict()
        for models in (float_dir, gguf_dir)
    ]
    assert encoders[0].keys() == encoders[1].keys()
    for name, weight in encoders[0].items():
        read = encoders[1][name]
        # Q8_0 keeps 8 bits a value with one scale per 32: within half a step of the largest.
        step = weight.abs().max() / 127
        assert (read - weight).abs().max() <= step, name
    packed = "encoder.block.0.layer.0.SelfAttention.o.weight"  # rows of 32: Q8_0 blocks
    assert not torch.equal(encoders[0][packed], encoders[1][packed])  # it was packed


def test_easel_doctor_counts_a_gguf_t5_at_the_size_it_runs(models: tuple[Path, Path]) -> None:
    _, gguf_dir = models
    entry = ModelEntry(SPLIT, gguf_dir / "unet" / f"{SPLIT}.safetensors", "safetensors")
    parts = split_part_files(entry)
    assert parts["text_encoder_3"] == ("T5", gguf_dir / "text_encoder" / f"{T5_FILE}.gguf")
    (t5,) = [
        c for c in model_memory(entry, 2, False, parts).components if c.name == "text_encoder_3"
    ]
    # Read packed, run unpacked: float16, two bytes a value.
    assert t5.run_bytes == 2 * t5.parameters
    assert t5.stored_bytes < 4 * t5.parameters  # its Q8_0 blocks are smaller than float32
