"""Write a diffusers pipeline's weights as one checkpoint in the original (LDM / web UI) layout.

Used for the tiny test models, so that loading real ``.safetensors`` checkpoints is exercised
end to end. The renames follow the original Stable Diffusion code's module names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TEXT_PREFIX = "cond_stage_model.transformer."
SDXL_TEXT_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."
# The SDXL refiner's one text encoder is its first embedder.
SDXL_REFINER_OPEN_CLIP_PREFIX = "conditioner.embedders.0.model."

_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}
_UNET_FIXED = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "mid_block.attentions.0": "middle_block.1",
}


def _rename_resnet(rest: str, table: Mapping[str, str]) -> str:
    layer, _, parameter = rest.partition(".")
    return f"{table.get(layer, layer)}.{parameter}"


def unet_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, Any]:
    per_block = config["layers_per_block"] + 1  # LDM counts the down/upsampler as a layer
    up_has_attention = ["CrossAttn" in kind for kind in config["up_block_types"]]

    def rename(key: str) -> str:
        for diffusers_name, ldm_name in _UNET_FIXED.items():
            if key.startswith(diffusers_name + "."):
                return ldm_name + key[len(diffusers_name) :]
        if match := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            block, kind, layer, rest = match.groups()
            index = 1 + int(block) * per_block + int(layer)
            if kind == "resnets":
                return f"input_blocks.{index}.0.{_rename_resnet(rest, _UNET_RESNET)}"
            return f"input_blocks.{index}.1.{rest}"
        if match := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            block, rest = match.groups()
            return f"input_blocks.{(int(block) + 1) * per_block}.0.op.{rest}"
        if match := re.fullmatch(r"mid_block\.resnets\.(\d)\.(.+)", key):
            layer, rest = match.groups()
            return f"middle_block.{2 * int(layer)}.{_rename_resnet(rest, _UNET_RESNET)}"
        if match := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            block, kind, layer, rest = match.groups()
            index = int(block) * per_block + int(layer)
            if kind == "resnets":
                return f"output_blocks.{index}.0.{_rename_resnet(rest, _UNET_RESNET)}"
            return f"output_blocks.{index}.1.{rest}"
        if match := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            block, rest = match.groups()
            position = 2 if up_has_attention[int(block)] else 1
            index = int(block) * per_block + per_block - 1
            return f"output_blocks.{index}.{position}.conv.{rest}"
        raise ValueError(f"no LDM name for UNet weight {key!r}")

    return {UNET_PREFIX + rename(key): tensor for key, tensor in state.items()}


def vae_to_ldm(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, Any]:
    blocks = len(config["block_out_channels"])

    def rename(key: str) -> str:
        if match := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
            part, rest = match.groups()
            return f"{part}.mid.attn_1.{_rename_resnet_prefix(rest, _VAE_ATTENTION)}"
        if match := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.+)", key):
            part, layer, rest = match.groups()
            return f"{part}.mid.block_{int(layer) + 1}.{_rename_vae_resnet(rest)}"
        if match := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            block, layer, rest = match.groups()
            return f"encoder.down.{block}.block.{layer}.{_rename_vae_resnet(rest)}"
        if match := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.+)", key):
            return f"encoder.down.{match.group(1)}.downsample.{match.group(2)}"
        # The original decoder numbers its blocks from the lowest resolution up.
        if match := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            block, layer, rest = match.groups()
            level = blocks - 1 - int(block)
            return f"decoder.up.{level}.block.{layer}.{_rename_vae_resnet(rest)}"
        if match := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
            block, rest = match.groups()
            return f"decoder.up.{blocks - 1 - int(block)}.upsample.{rest}"
        return key.replace("conv_norm_out", "norm_out")

    converted: dict[str, Any] = {}
    for key, tensor in state.items():
        name = rename(key)
        # The original attention uses 1x1 convolutions where diffusers uses linear layers.
        is_attention_matrix = ".attn_1." in name and name.endswith("weight") and tensor.ndim == 2
        converted[VAE_PREFIX + name] = tensor[..., None, None] if is_attention_matrix else tensor
    return converted


def _rename_resnet_prefix(rest: str, table: Mapping[str, str]) -> str:
    for diffusers_name, ldm_name in table.items():
        if rest.startswith(diffusers_name + "."):
            return ldm_name + rest[len(diffusers_name) :]
    return rest


def _rename_vae_resnet(rest: str) -> str:
    return rest.replace("conv_shortcut", "nin_shortcut")


def open_clip_to_ldm(
    state: Mapping[str, torch.Tensor], prefix: str = SDXL_OPEN_CLIP_PREFIX
) -> dict[str, Any]:
    """A transformers CLIPTextModelWithProjection in OpenCLIP's layout (SDXL's 2nd encoder)."""
    converted: dict[str, Any] = {}
    layers = 1 + max(
        int(match.group(1))
        for key in state
        if (match := re.match(r"text_model\.encoder\.layers\.(\d+)\.", key))
    )
    for index in range(layers):
        hf = f"text_model.encoder.layers.{index}."
        oc = f"transformer.resblocks.{index}."
        for part in ("weight", "bias"):
            converted[f"{oc}attn.in_proj_{part}"] = torch.cat(
                [state[f"{hf}self_attn.{name}_proj.{part}"] for name in ("q", "k", "v")]
            )
            renames = {
                "self_attn.out_proj": "attn.out_proj",
                "layer_norm1": "ln_1",
                "layer_norm2": "ln_2",
                "mlp.fc1": "mlp.c_fc",
                "mlp.fc2": "mlp.c_proj",
            }
            for hf_name, oc_name in renames.items():
                converted[f"{oc}{oc_name}.{part}"] = state[f"{hf}{hf_name}.{part}"]
    converted["token_embedding.weight"] = state["text_model.embeddings.token_embedding.weight"]
    converted["positional_embedding"] = state["text_model.embeddings.position_embedding.weight"]
    converted["ln_final.weight"] = state["text_model.final_layer_norm.weight"]
    converted["ln_final.bias"] = state["text_model.final_layer_norm.bias"]
    converted["text_projection"] = state["text_projection.weight"].T.contiguous()
    return {prefix + key: tensor for key, tensor in converted.items()}


def _with_text_model_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Transformers 5 drops CLIPTextModel's ``text_model.`` prefix; checkpoints keep it."""
    return {
        key if key.startswith(("text_model.", "text_projection.")) else f"text_model.{key}": tensor
        for key, tensor in state.items()
    }


def _prefixed(prefix: str, state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    return {prefix + key: tensor for key, tensor in _with_text_model_names(state).items()}


def export_ldm_checkpoint(pipeline: Any, path: Path) -> Path:
    """Save ``pipeline`` (SD1.x, SDXL or the SDXL refiner) as one LDM-layout ``.safetensors``
    file."""
    weights: dict[str, Any] = {}
    weights.update(unet_to_ldm(pipeline.unet.state_dict(), pipeline.unet.config))
    weights.update(vae_to_ldm(pipeline.vae.state_dict(), pipeline.vae.config))
    if getattr(pipeline, "text_encoder_2", None) is None:
        weights.update(_prefixed(SD1_TEXT_PREFIX, pipeline.text_encoder.state_dict()))
    elif pipeline.text_encoder is None:
        weights.update(
            open_clip_to_ldm(
                _with_text_model_names(pipeline.text_encoder_2.state_dict()),
                SDXL_REFINER_OPEN_CLIP_PREFIX,
            )
        )
    else:
        weights.update(_prefixed(SDXL_TEXT_PREFIX, pipeline.text_encoder.state_dict()))
        weights.update(
            open_clip_to_ldm(_with_text_model_names(pipeline.text_encoder_2.state_dict()))
        )
    save_file({key: tensor.contiguous() for key, tensor in weights.items()}, str(path))
    return path
