"""Full-size SD3.5 and Flux single files without their weights, for checking Easel's loading
path and diffusers' converters against the real names and shapes.

* The transformer layouts are written here from the original code's modules (Black Forest
  Labs' ``flux/model.py``, Stability's ``mmditx.py``), not from diffusers, so the check is
  not circular. The text encoders and the VAE are the shipped configs' own modules under the
  prefixes the all-in-one files use.
* ``write_sparse_safetensors`` writes a real ``.safetensors`` header over a sparse file (no
  disk used): Easel's header readers see a 24 GB file; nothing ever reads its data.
* ``converted_on_meta`` makes diffusers read such a file as meta tensors and records, for
  each model it builds, the state dict its converter produced and the one the model expects,
  loading nothing.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import transformers

from inference.ldm_export import VAE_PREFIX, vae_to_ldm

CONFIGS = Path(__file__).parents[2] / "inference" / "configs"
Shapes = dict[str, tuple[int, ...]]
_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}


def _linear(shapes: Shapes, name: str, inputs: int, outputs: int, bias: bool = True) -> None:
    shapes[f"{name}.weight"] = (outputs, inputs)
    if bias:
        shapes[f"{name}.bias"] = (outputs,)


def flux_layout(guidance: bool) -> Shapes:
    """FLUX.1 dev (``guidance``) or schnell as Black Forest Labs save it: 3072 wide, 24 heads
    of 128, 19 double and 38 single blocks, MLP ratio 4."""
    width, head, mlp = 3072, 128, 4 * 3072
    shapes: Shapes = {}
    _linear(shapes, "img_in", 64, width)
    _linear(shapes, "txt_in", 4096, width)
    embedders = {"time_in": 256, "vector_in": 768} | ({"guidance_in": 256} if guidance else {})
    for name, inputs in embedders.items():
        _linear(shapes, f"{name}.in_layer", inputs, width)
        _linear(shapes, f"{name}.out_layer", width, width)
    for block in range(19):
        for stream in ("img", "txt"):
            prefix = f"double_blocks.{block}.{stream}"
            _linear(shapes, f"{prefix}_mod.lin", width, 6 * width)
            _linear(shapes, f"{prefix}_attn.qkv", width, 3 * width)
            shapes[f"{prefix}_attn.norm.query_norm.scale"] = (head,)
            shapes[f"{prefix}_attn.norm.key_norm.scale"] = (head,)
            _linear(shapes, f"{prefix}_attn.proj", width, width)
            _linear(shapes, f"{prefix}_mlp.0", width, mlp)
            _linear(shapes, f"{prefix}_mlp.2", mlp, width)
    for block in range(38):
        prefix = f"single_blocks.{block}"
        _linear(shapes, f"{prefix}.linear1", width, 3 * width + mlp)
        _linear(shapes, f"{prefix}.linear2", width + mlp, width)
        shapes[f"{prefix}.norm.query_norm.scale"] = (head,)
        shapes[f"{prefix}.norm.key_norm.scale"] = (head,)
        _linear(shapes, f"{prefix}.modulation.lin", width, 3 * width)
    _linear(shapes, "final_layer.linear", width, 64)
    _linear(shapes, "final_layer.adaLN_modulation.1", width, 2 * width)
    return shapes


@dataclass(frozen=True)
class MMDiT:
    """An SD3.5 MMDiT's size: blocks of 64-wide heads, the position table's side, and the
    blocks with a second self-attention (MMDiT-X)."""

    blocks: int
    pos_embed_side: int
    dual_attention_blocks: int = 0


SD35_LARGE = MMDiT(blocks=38, pos_embed_side=192)
SD35_MEDIUM = MMDiT(blocks=24, pos_embed_side=384, dual_attention_blocks=13)


def mmdit_layout(size: MMDiT) -> Shapes:
    """SD3.5 as Stability save it (``mmditx.py``): width 64 per block (depth), 16 latent
    channels in 2x2 patches, CLIP pooled 2048 and T5 4096 wide; the last block's context
    stream only modulates (``pre_only``)."""
    width, head = 64 * size.blocks, 64
    shapes: Shapes = {"pos_embed": (1, size.pos_embed_side**2, width)}
    shapes["x_embedder.proj.weight"] = (width, 16, 2, 2)
    shapes["x_embedder.proj.bias"] = (width,)
    for name, inputs in (("t_embedder", 256), ("y_embedder", 2048)):
        _linear(shapes, f"{name}.mlp.0", inputs, width)
        _linear(shapes, f"{name}.mlp.2", width, width)
    _linear(shapes, "context_embedder", 4096, width)

    def attention(prefix: str, pre_only: bool) -> None:
        _linear(shapes, f"{prefix}.qkv", width, 3 * width)
        shapes[f"{prefix}.ln_q.weight"] = (head,)
        shapes[f"{prefix}.ln_k.weight"] = (head,)
        if not pre_only:
            _linear(shapes, f"{prefix}.proj", width, width)

    for block in range(size.blocks):
        for stream in ("context_block", "x_block"):
            prefix = f"joint_blocks.{block}.{stream}"
            pre_only = stream == "context_block" and block == size.blocks - 1
            dual = stream == "x_block" and block < size.dual_attention_blocks
            attention(f"{prefix}.attn", pre_only)
            if dual:
                attention(f"{prefix}.attn2", pre_only=False)
            if not pre_only:
                _linear(shapes, f"{prefix}.mlp.fc1", width, 4 * width)
                _linear(shapes, f"{prefix}.mlp.fc2", 4 * width, width)
            modulations = 9 if dual else 2 if pre_only else 6
            _linear(shapes, f"{prefix}.adaLN_modulation.1", width, modulations * width)
    _linear(shapes, "final_layer.linear", width, 2 * 2 * 16)
    _linear(shapes, "final_layer.adaLN_modulation.1", width, 2 * width)
    return shapes


def prefixed(prefix: str, shapes: Mapping[str, tuple[int, ...]]) -> Shapes:
    return {prefix + name: shape for name, shape in shapes.items()}


def _meta_shapes(module: Any) -> Shapes:
    return {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}


def text_encoder_layout(config: Path, file_prefix: str) -> Shapes:
    """A shipped text encoder config's weights as all-in-one files hold them: under
    ``file_prefix``, CLIP's names with ``text_model.``, T5's embedding once (``shared``) and
    CLIP-L with no projection."""
    settings = json.loads((config / "config.json").read_text())
    with torch.device("meta"):
        model = getattr(transformers, settings["architectures"][0])(
            transformers.AutoConfig.from_pretrained(str(config), local_files_only=True)
        )
    shapes = _meta_shapes(model)
    shapes.pop("encoder.embed_tokens.weight", None)
    if file_prefix.endswith("clip_l.transformer."):
        shapes.pop("text_projection.weight", None)
    names = {
        name: name
        if not settings["model_type"].startswith("clip")
        or name.startswith(("text_model.", "text_projection."))
        else f"text_model.{name}"
        for name in shapes
    }
    return {file_prefix + names[name]: shape for name, shape in shapes.items()}


def vae_layout(config: Path, file_prefix: str) -> Shapes:
    """The shipped VAE's weights in the original (LDM) names, under ``file_prefix``."""
    import diffusers

    with torch.device("meta"):
        vae = diffusers.AutoencoderKL.from_config(diffusers.AutoencoderKL.load_config(config))
    ldm = vae_to_ldm(vae.state_dict(), vae.config)
    return {
        file_prefix + name.removeprefix(VAE_PREFIX): tuple(tensor.shape)
        for name, tensor in ldm.items()
    }


def shapes_of(state: Mapping[str, torch.Tensor]) -> Shapes:
    return {name: tuple(tensor.shape) for name, tensor in state.items()}


def write_sparse_safetensors(path: Path, shapes: Mapping[str, tuple[int, ...]]) -> Path:
    """A ``.safetensors`` file of bfloat16 tensors with these names and shapes whose data is
    a hole (``truncate``): its header is real, its size the real one, its disk use nil."""
    header: dict[str, Any] = {}
    offset = 0
    for name, shape in shapes.items():
        size = 2 * torch.Size(shape).numel()
        header[name] = {
            "dtype": "BF16",
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        file.write(struct.pack("<Q", len(encoded)) + encoded)
        file.truncate(8 + len(encoded) + offset)
    return path


def meta_tensors(path: str | Path, *_: Any, **__: Any) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors as meta tensors of its header's shapes and dtypes."""
    from inference.metadata import safetensors_header

    return {
        name: torch.empty(spec["shape"], dtype=_DTYPES[spec["dtype"]], device="meta")
        for name, spec in safetensors_header(Path(path)).items()
        if isinstance(spec, dict)
    }


def _meta_table(embed_dim: int, grid_size: int, *_: Any, **__: Any) -> torch.Tensor:
    return torch.empty(grid_size * grid_size, embed_dim, device="meta")


@dataclass(frozen=True)
class Conversion:
    """One model diffusers built: its class, what its converter produced and what it has."""

    model: str
    converted: Shapes
    expected: Shapes


@contextmanager
def converted_on_meta() -> Iterator[list[Conversion]]:
    """Within: diffusers reads single files as meta tensors and loads no weights; each model
    it would have loaded is recorded (in build order) with its converted state dict."""
    import diffusers.loaders.single_file_model as model_loader
    import diffusers.loaders.single_file_utils as utils
    import diffusers.models.embeddings as embeddings

    conversions: list[Conversion] = []

    def record(model: Any, state: Mapping[str, torch.Tensor], *_: Any, **__: Any) -> list[str]:
        conversions.append(Conversion(type(model).__name__, shapes_of(state), _meta_shapes(model)))
        return []

    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(utils, "load_state_dict", meta_tensors))
        for module in (model_loader, utils):
            stack.enter_context(mock.patch.object(module, "load_model_dict_into_meta", record))
        # The position table SD3 computes as it is built (SD3.5 Medium: 147,456 x 1,536 floats,
        # 7 s here) has its shape only; the file's own table replaces it anyway.
        stack.enter_context(mock.patch.object(embeddings, "get_2d_sincos_pos_embed", _meta_table))
        # Models stay on the meta device: nothing is moved to the CPU.
        stack.enter_context(
            mock.patch.object(model_loader, "dispatch_model", lambda model, **_: model)
        )
        yield conversions
