"""Tiny random-weight SD3 and Flux pipelines for tests, demos and `easel tiny-model --family`.

Every part is the real architecture at toy sizes: the shipped CLIP tokenizer, a small real
T5 tokenizer built here (a Unigram model saved as ``tokenizer.json``; the real T5 vocabulary
cannot be shipped), CLIP and T5 encoders, the MMDiT / Flux transformer, a 16-channel VAE with
the real 8x scale and the flow-matching scheduler. A 64x64 render takes well under a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import (
    CLIPTextModel,
    CLIPTextModelWithProjection,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

FlowFamily = Literal["sd3", "flux", "flux-schnell"]
FLOW_FAMILIES: tuple[FlowFamily, ...] = ("sd3", "flux", "flux-schnell")

TINY_CLIP_HIDDEN = 32
# SD3's CLIP-G is wider than its CLIP-L; single-file loaders tell them apart by it.
TINY_CLIP_G_HIDDEN = 48
TINY_T5_HIDDEN = 32
LATENT_CHANNELS = 16
# The tiny T5's vocabulary: its special tokens, a few whole words, then single letters so
# any lower-case text tokenizes.
_T5_SPECIAL = ("<pad>", "</s>", "<unk>")
_T5_WORDS = (
    *("a", "an", "the", "of", "on", "in", "with", "cat", "dog", "red", "blue", "green"),
    *("photo", "painting", "portrait", "sofa", "hat", "sky", "tree", "house", "river", "city"),
)
_METASPACE = "\u2581"
T5_MAX_LENGTH = 32


def tiny_t5_tokenizer() -> T5Tokenizer:
    """A real T5 (Unigram, ``</s>``-terminated, ``<pad>`` = 0) tokenizer with a tiny vocabulary."""
    vocab = [(token, 0.0) for token in _T5_SPECIAL]
    vocab += [(_METASPACE + word, -float(rank)) for rank, word in enumerate(_T5_WORDS, 1)]
    vocab += [(letter, -50.0) for letter in "abcdefghijklmnopqrstuvwxyz0123456789" + _METASPACE]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=_T5_SPECIAL.index("<unk>")))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_METASPACE)
    tokenizer.decoder = decoders.Metaspace(replacement=_METASPACE)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return T5Tokenizer(
        tokenizer_object=tokenizer,
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_ids=0,
        model_max_length=T5_MAX_LENGTH,
    )


def _clip_encoder(projection: bool, hidden: int = TINY_CLIP_HIDDEN) -> Any:
    from inference.tiny import tiny_text_config

    config = tiny_text_config(hidden, projection, "gelu" if projection else "quick_gelu")
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def _t5_encoder() -> Any:
    config = T5Config(
        vocab_size=len(_T5_SPECIAL) + len(_T5_WORDS) + 37,
        d_model=TINY_T5_HIDDEN,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config)


def _vae(shift_factor: float, scaling_factor: float) -> Any:
    # Four blocks give the real 8x latent scale; SD3 and Flux have no quant convolutions.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=8,
        sample_size=64,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=shift_factor,
        scaling_factor=scaling_factor,
    )


def build_tiny_flow_pipeline(family: FlowFamily, seed: int = 0) -> Any:
    """The tiny SD3 or Flux (dev / schnell) pipeline in memory; weights depend only on ``seed``."""
    from inference.tiny import load_clip_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if family == "sd3":
            clip_l = _clip_encoder(projection=True)
            # SD3 single files carry no CLIP-L projection; diffusers reads them with an
            # identity, so the tiny model has one too (the same picture from either form).
            clip_l.text_projection.weight.data = torch.eye(TINY_CLIP_HIDDEN)
            # CLIP-L's and CLIP-G's hidden states, side by side, are padded to T5's width.
            clip_width = TINY_CLIP_HIDDEN + TINY_CLIP_G_HIDDEN
            return StableDiffusion3Pipeline(
                transformer=SD3Transformer2DModel(
                    sample_size=8,
                    patch_size=2,
                    in_channels=LATENT_CHANNELS,
                    num_layers=2,
                    attention_head_dim=8,
                    num_attention_heads=4,
                    joint_attention_dim=clip_width,
                    caption_projection_dim=32,
                    pooled_projection_dim=clip_width,
                    out_channels=LATENT_CHANNELS,
                    pos_embed_max_size=32,
                ),
                scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                vae=_vae(shift_factor=0.0609, scaling_factor=1.5305),
                text_encoder=clip_l,
                tokenizer=load_clip_tokenizer(),
                text_encoder_2=_clip_encoder(projection=True, hidden=TINY_CLIP_G_HIDDEN),
                tokenizer_2=load_clip_tokenizer(pad_token="!"),
                text_encoder_3=_t5_encoder_of_width(clip_width),
                tokenizer_3=tiny_t5_tokenizer(),
            )
        return FluxPipeline(
            transformer=FluxTransformer2DModel(
                patch_size=1,
                in_channels=4 * LATENT_CHANNELS,  # 2x2 latent patches, packed
                num_layers=1,
                num_single_layers=1,
                attention_head_dim=16,
                num_attention_heads=2,
                joint_attention_dim=TINY_T5_HIDDEN,
                pooled_projection_dim=TINY_CLIP_HIDDEN,
                guidance_embeds=family == "flux",  # dev is guidance-distilled, schnell not
                axes_dims_rope=(4, 6, 6),
            ),
            scheduler=FlowMatchEulerDiscreteScheduler(
                shift=3.0,
                use_dynamic_shifting=family == "flux",
                base_shift=0.5,
                max_shift=1.15,
                base_image_seq_len=256,
                max_image_seq_len=4096,
            ),
            vae=_vae(shift_factor=0.1159, scaling_factor=0.3611),
            text_encoder=_clip_encoder(projection=False),
            tokenizer=load_clip_tokenizer(),
            text_encoder_2=_t5_encoder(),
            tokenizer_2=tiny_t5_tokenizer(),
        )


def _t5_encoder_of_width(width: int) -> Any:
    """SD3's T5 is as wide as its transformer's joint attention (4096 in the real model)."""
    encoder: Any = _t5_encoder()
    config = encoder.config
    config.d_model = width
    return T5EncoderModel(config)


def write_tiny_flow_model(directory: Path, family: FlowFamily, seed: int = 0) -> Path:
    """Write the tiny pipeline as a diffusers folder (safetensors weights only)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    build_tiny_flow_pipeline(family, seed).save_pretrained(directory, safe_serialization=True)
    return directory


TINY_LORA_RANK = 4
_LORA_TARGETS = ("attn.to_q", "attn.to_k", "attn.to_v")


def write_tiny_flow_lora(path: Path, family: FlowFamily, seed: int = 0) -> Path:
    """A random LoRA for the tiny ``family`` transformer in diffusers' layout
    (``transformer.<module>.lora_A.weight`` / ``lora_B.weight``) on its attention
    projections, as ``load_lora_weights`` reads it."""
    from inference.tiny import save_weights

    transformer = build_tiny_flow_pipeline(family).transformer
    generator = torch.Generator().manual_seed(seed)
    weights: dict[str, torch.Tensor] = {}
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith(_LORA_TARGETS):
            weights[f"transformer.{name}.lora_A.weight"] = 0.3 * torch.randn(
                TINY_LORA_RANK, module.in_features, generator=generator
            )
            weights[f"transformer.{name}.lora_B.weight"] = 0.3 * torch.randn(
                module.out_features, TINY_LORA_RANK, generator=generator
            )
    save_weights(weights, Path(path))
    return Path(path)


# The original SD3 code's names (``joint_blocks``) for diffusers' names, per joint block.
_SD3_BLOCK_NAMES = {
    "attn.to_out.0": "x_block.attn.proj",
    "attn.to_add_out": "context_block.attn.proj",
    "attn2.to_out.0": "x_block.attn2.proj",
    "norm1.linear": "x_block.adaLN_modulation.1",
    "norm1_context.linear": "context_block.adaLN_modulation.1",
    "ff.net.0.proj": "x_block.mlp.fc1",
    "ff.net.2": "x_block.mlp.fc2",
    "ff_context.net.0.proj": "context_block.mlp.fc1",
    "ff_context.net.2": "context_block.mlp.fc2",
    "attn.norm_q": "x_block.attn.ln_q",
    "attn.norm_k": "x_block.attn.ln_k",
    "attn.norm_added_q": "context_block.attn.ln_q",
    "attn.norm_added_k": "context_block.attn.ln_k",
    "attn2.norm_q": "x_block.attn2.ln_q",
    "attn2.norm_k": "x_block.attn2.ln_k",
}
_SD3_QKV = {
    "x_block.attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "context_block.attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "x_block.attn2.qkv": ("attn2.to_q", "attn2.to_k", "attn2.to_v"),
}
_SD3_OUTER_NAMES = {
    "pos_embed.proj": "x_embedder.proj",
    "time_text_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
    "time_text_embed.timestep_embedder.linear_2": "t_embedder.mlp.2",
    "time_text_embed.text_embedder.linear_1": "y_embedder.mlp.0",
    "time_text_embed.text_embedder.linear_2": "y_embedder.mlp.2",
    "context_embedder": "context_embedder",
    "proj_out": "final_layer.linear",
    "norm_out.linear": "final_layer.adaLN_modulation.1",
}


def _swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    """diffusers' final norms hold (scale, shift) where the original code holds (shift, scale)."""
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def sd3_transformer_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers SD3 transformer's weights under the original code's names (what
    diffusers' single-file converter reads back)."""
    converted: dict[str, torch.Tensor] = {}
    last_block = max(int(key.split(".")[1]) for key in state if key.startswith("transformer_"))
    for key, tensor in state.items():
        module, _, parameter = key.rpartition(".")
        if module == "pos_embed" and parameter == "pos_embed":
            converted["pos_embed"] = tensor
        elif module in _SD3_OUTER_NAMES:
            swapped = module == "norm_out.linear"
            converted[f"{_SD3_OUTER_NAMES[module]}.{parameter}"] = (
                _swap_halves(tensor) if swapped else tensor
            )
    for block in range(last_block + 1):
        prefix = f"transformer_blocks.{block}."
        for name, original in _SD3_BLOCK_NAMES.items():
            for parameter in ("weight", "bias"):
                found = state.get(f"{prefix}{name}.{parameter}")
                if found is None:
                    continue
                if block == last_block and name == "norm1_context.linear":
                    found = _swap_halves(found)  # the last block's context only modulates
                converted[f"joint_blocks.{block}.{original}.{parameter}"] = found
        for original, parts in _SD3_QKV.items():
            for parameter in ("weight", "bias"):
                tensors = [state.get(f"{prefix}{part}.{parameter}") for part in parts]
                if all(tensor is not None for tensor in tensors):
                    converted[f"joint_blocks.{block}.{original}.{parameter}"] = torch.cat(
                        [tensor for tensor in tensors if tensor is not None]
                    )
    return converted


def write_tiny_flow_checkpoint(path: Path, seed: int = 0, parts_dir: Path | None = None) -> Path:
    """The tiny SD3 model as one all-in-one ``.safetensors`` file in the layout of SD3's own
    releases (``model.diffusion_model.joint_blocks``, ``first_stage_model.``,
    ``text_encoders.{clip_l,clip_g,t5xxl}.transformer.``) plus the sidecar config folder
    ``<stem>.config/`` (with its tokenizers) its toy sizes need. With ``parts_dir`` (a models
    folder) it is a split release instead: the file holds the transformer alone, the text
    encoders go to ``parts_dir/text_encoder/`` and the VAE (original names, as Flux's
    ``ae.safetensors``) to ``parts_dir/vae/``."""
    from inference.ldm_export import VAE_PREFIX, vae_to_ldm
    from inference.tiny import save_weights, write_sidecar_config

    path = Path(path)
    pipeline = build_tiny_flow_pipeline("sd3", seed)
    weights = {
        f"model.diffusion_model.{key}": tensor
        for key, tensor in sd3_transformer_to_original(pipeline.transformer.state_dict()).items()
    }
    vae = vae_to_ldm(pipeline.vae.state_dict(), pipeline.vae.config)
    encoders = {
        name: {
            key: tensor
            for key, tensor in getattr(pipeline, part).state_dict().items()
            # T5 stores its token embedding once, as shared.weight; CLIP-L no projection.
            if key not in ("encoder.embed_tokens.weight", "text_projection.weight")
            or part == "text_encoder_2"
        }
        for part, name in (
            ("text_encoder", "clip_l"),
            ("text_encoder_2", "clip_g"),
            ("text_encoder_3", "t5xxl"),
        )
    }
    if parts_dir is None:
        weights |= vae
        for name, state in encoders.items():
            weights |= {f"text_encoders.{name}.transformer.{k}": t for k, t in state.items()}
    else:
        for name, state in encoders.items():
            save_weights(state, parts_dir / "text_encoder" / f"tiny-{name}.safetensors")
        bare_vae = {key.removeprefix(VAE_PREFIX): tensor for key, tensor in vae.items()}
        save_weights(bare_vae, parts_dir / "vae" / "tiny-sd3-ae.safetensors")
    save_weights(weights, path)
    write_sidecar_config(pipeline, path)
    return path
