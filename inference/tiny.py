"""Tiny random-weight Stable Diffusion models for tests, demos and `easel tiny-model`.

The pictures are noise, but every moving part is real: the shipped CLIP tokenizer, a UNet
with cross-attention (and SDXL's added time/text conditioning), a VAE with the real 8x
latent scale factor and a real scheduler. A 64x64 render takes a fraction of a second on CPU.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import (
    AutoencoderKL,
    EulerAncestralDiscreteScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from inference.ldm_export import export_ldm_checkpoint
from inference.registry import SIDECAR_SUFFIX

Family = Literal["sd15", "sdxl"]

CLIP_TOKENIZER_DIR = Path(__file__).parent / "configs" / "tokenizers" / "clip"
CLIP_BOS_ID = 49406
CLIP_EOS_ID = 49407
TINY_TEXT_HIDDEN = 32
# SDXL's encoders differ in width (768 / 1280); loaders tell them apart by it, so ours do too.
TINY_TEXT_2_HIDDEN = 48
SDXL_TIME_EMBED_DIM = 8

CONFIGS_DIR = Path(__file__).parent / "configs"
# The Stable Diffusion noise schedule, shared by SD1.x, SD2.x and SDXL.
SD_SCHEDULER_CONFIG: dict[str, Any] = json.loads(
    (CONFIGS_DIR / "sd15" / "scheduler" / "scheduler_config.json").read_text()
)


def load_clip_tokenizer(pad_token: str = "<|endoftext|>") -> CLIPTokenizer:
    """The real OpenAI CLIP BPE tokenizer from the files shipped in ``inference/configs``.

    SD1.x pads with ``<|endoftext|>``; SDXL's second (OpenCLIP) tokenizer pads with ``!``.
    """
    return CLIPTokenizer(
        str(CLIP_TOKENIZER_DIR / "vocab.json"),
        str(CLIP_TOKENIZER_DIR / "merges.txt"),
        pad_token=pad_token,
        model_max_length=77,
    )


def _tiny_text_config(hidden_size: int, with_projection: bool) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=CLIP_EOS_ID + 1,
        hidden_size=hidden_size,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=hidden_size if with_projection else 512,
        bos_token_id=CLIP_BOS_ID,
        eos_token_id=CLIP_EOS_ID,
        pad_token_id=CLIP_EOS_ID,
        hidden_act="quick_gelu",
    )


def _tiny_unet(family: Family, inpainting: bool) -> UNet2DConditionModel:
    sdxl_conditioning: dict[str, Any] = {}
    if family == "sdxl":
        # Pooled text embedding (projection_dim) + six micro-conditioning numbers.
        sdxl_conditioning = {
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": SDXL_TIME_EMBED_DIM,
            "projection_class_embeddings_input_dim": TINY_TEXT_2_HIDDEN + 6 * SDXL_TIME_EMBED_DIM,
        }
    return UNet2DConditionModel(
        sample_size=8,
        # Inpainting UNets also see the mask and the masked image's latents.
        in_channels=9 if inpainting else 4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        # SDXL concatenates its two text encoders' hidden states.
        cross_attention_dim=TINY_TEXT_HIDDEN + (TINY_TEXT_2_HIDDEN if family == "sdxl" else 0),
        attention_head_dim=8,
        norm_num_groups=16,
        use_linear_projection=family == "sdxl",
        **sdxl_conditioning,
    )


def _tiny_vae() -> AutoencoderKL:
    # Four blocks give the real 8x latent scale factor, so sizes and masks behave as in SD.
    blocks = 4
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )


def build_tiny_pipeline(family: Family = "sd15", inpainting: bool = False, seed: int = 0) -> Any:
    """Build the tiny pipeline in memory; weights depend only on ``seed``.

    Returns a Stable Diffusion (XL) (inpaint) pipeline; typed Any because diffusers' lazy
    imports hide its class hierarchy from mypy.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = _tiny_unet(family, inpainting)
        vae = _tiny_vae()
        text_encoder = CLIPTextModel(_tiny_text_config(TINY_TEXT_HIDDEN, with_projection=False))
        scheduler = EulerAncestralDiscreteScheduler.from_config(SD_SCHEDULER_CONFIG)
        if family == "sd15":
            sd_class = StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline
            return sd_class(
                vae=vae,
                text_encoder=text_encoder,
                tokenizer=load_clip_tokenizer(),
                unet=unet,
                scheduler=scheduler,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        text_encoder_2 = CLIPTextModelWithProjection(
            _tiny_text_config(TINY_TEXT_2_HIDDEN, with_projection=True)
        )
        xl_class = StableDiffusionXLInpaintPipeline if inpainting else StableDiffusionXLPipeline
        return xl_class(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=load_clip_tokenizer(),
            tokenizer_2=load_clip_tokenizer(pad_token="!"),
            unet=unet,
            scheduler=scheduler,
        )


def write_tiny_model(
    directory: Path,
    family: Family = "sd15",
    inpainting: bool = False,
    seed: int = 0,
) -> Path:
    """Write a tiny diffusers model folder (safetensors weights only) and return its path."""
    if family not in ("sd15", "sdxl"):
        raise ValueError(f"unknown model family {family!r}: expected 'sd15' or 'sdxl'")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pipeline = build_tiny_pipeline(family, inpainting, seed)
    pipeline.save_pretrained(directory, safe_serialization=True)
    _mark_as_tiny(directory, family, inpainting, seed)
    return directory


def _mark_as_tiny(directory: Path, family: Family, inpainting: bool, seed: int) -> None:
    """Record what the folder is, so `easel doctor` can say it renders noise on purpose."""
    marker = {"family": family, "inpainting": inpainting, "seed": seed}
    (directory / "easel_tiny.json").write_text(json.dumps(marker, indent=2) + "\n")


def write_tiny_checkpoint(
    path: Path,
    family: Family = "sd15",
    inpainting: bool = False,
    seed: int = 0,
) -> Path:
    """Write the tiny model as one web UI style ``.safetensors`` file (original LDM tensor
    names) plus the sidecar config folder ``<stem>.config/`` its odd sizes need."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"a checkpoint path must end in .safetensors, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    pipeline = build_tiny_pipeline(family, inpainting, seed)
    export_ldm_checkpoint(pipeline, path)
    sidecar = path.with_name(path.stem + SIDECAR_SUFFIX)
    with tempfile.TemporaryDirectory() as scratch:
        pipeline.save_pretrained(scratch, safe_serialization=True)
        shutil.copytree(
            scratch, sidecar, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors")
        )
    return path
