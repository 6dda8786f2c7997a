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
    ControlNetModel,
    EulerAncestralDiscreteScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import save_file
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

from inference.flow_tiny import FLOW_FAMILIES, write_tiny_flow_model
from inference.ldm_export import UNET_PREFIX, export_ldm_checkpoint, unet_to_ldm, vae_to_ldm
from inference.registry import FACE_RESTORER_FOLDERS, SIDECAR_SUFFIX

Family = Literal["sd15", "sdxl", "sdxl-refiner", "sd3", "flux", "flux-schnell"]
FAMILIES: tuple[Family, ...] = ("sd15", "sdxl", "sdxl-refiner", *FLOW_FAMILIES)

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


def tiny_text_config(
    hidden_size: int, with_projection: bool, hidden_act: str = "quick_gelu"
) -> CLIPTextConfig:
    """A tiny CLIP text encoder's config over the shipped CLIP vocabulary."""
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
        hidden_act=hidden_act,
    )


def _tiny_unet(family: Family, inpainting: bool) -> UNet2DConditionModel:
    sdxl_conditioning: dict[str, Any] = {}
    if family != "sd15":
        # Pooled text embedding (projection_dim) + six micro-conditioning numbers (the
        # refiner's five: sizes, crop and the aesthetic score instead of the target size).
        numbers = 6 if family == "sdxl" else 5
        sdxl_conditioning = {
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": SDXL_TIME_EMBED_DIM,
            "projection_class_embeddings_input_dim": TINY_TEXT_2_HIDDEN
            + numbers * SDXL_TIME_EMBED_DIM,
        }
    # SDXL concatenates its two text encoders' hidden states; the refiner has only the second.
    cross_attention_dim = {
        "sd15": TINY_TEXT_HIDDEN,
        "sdxl": TINY_TEXT_HIDDEN + TINY_TEXT_2_HIDDEN,
        "sdxl-refiner": TINY_TEXT_2_HIDDEN,
    }[family]
    return UNet2DConditionModel(
        sample_size=8,
        # Inpainting UNets also see the mask and the masked image's latents.
        in_channels=9 if inpainting else 4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=16,
        use_linear_projection=family != "sd15",
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
        text_encoder = CLIPTextModel(tiny_text_config(TINY_TEXT_HIDDEN, with_projection=False))
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
            tiny_text_config(TINY_TEXT_2_HIDDEN, with_projection=True)
        )
        if family == "sdxl-refiner":
            return StableDiffusionXLImg2ImgPipeline(
                vae=vae,
                text_encoder=None,
                text_encoder_2=text_encoder_2,
                tokenizer=None,
                tokenizer_2=load_clip_tokenizer(pad_token="!"),
                unet=unet,
                scheduler=scheduler,
                requires_aesthetics_score=True,
                force_zeros_for_empty_prompt=False,
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
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}: expected one of {', '.join(FAMILIES)}")
    if inpainting and family in ("sdxl-refiner", *FLOW_FAMILIES):
        raise ValueError(
            f"there is no inpainting {family} model (SD3 and Flux inpaint as they are)"
        )
    if family in FLOW_FAMILIES:
        write_tiny_flow_model(directory, family, seed)
        _mark_as_tiny(directory, family, inpainting, seed)
        return Path(directory)
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
    write_sidecar_config(pipeline, path)
    return path


def write_sidecar_config(pipeline: Any, checkpoint: Path) -> Path:
    """``pipeline``'s configs and tokenizers, without weights, as the sidecar folder
    ``<stem>.config/`` that a single file of toy sizes is loaded with."""
    sidecar = checkpoint.with_name(checkpoint.stem + SIDECAR_SUFFIX)
    with tempfile.TemporaryDirectory() as scratch:
        pipeline.save_pretrained(scratch, safe_serialization=True)
        shutil.copytree(
            scratch, sidecar, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors")
        )
    return sidecar


# The kohya / web UI key prefix of each LoRA-able part of the tiny pipelines.
_LORA_PREFIXES: dict[Family, dict[str, str]] = {
    "sd15": {"unet": "lora_unet_", "text_encoder": "lora_te_text_model_"},
    "sdxl": {
        "unet": "lora_unet_",
        "text_encoder": "lora_te1_text_model_",
        "text_encoder_2": "lora_te2_text_model_",
    },
}
TINY_LORA_RANK = 4


def write_tiny_lora(
    path: Path, family: Family = "sd15", seed: int = 0, metadata: dict[str, str] | None = None
) -> Path:
    """Write a random LoRA for the tiny model in the kohya / web UI key layout
    (``lora_unet_<module>.lora_down.weight``, ``.lora_up.weight``, ``.alpha`` and the
    ``lora_te_`` text-encoder keys), covering every attention and MLP linear layer;
    ``metadata`` goes in the header, as kohya's ``ss_*`` keys do."""
    pipeline = build_tiny_pipeline(family)
    generator = torch.Generator().manual_seed(seed)
    weights: dict[str, torch.Tensor] = {}
    for part, prefix in _LORA_PREFIXES[family].items():
        for name, module in getattr(pipeline, part).named_modules():
            if not isinstance(module, torch.nn.Linear):
                continue
            if part == "unet" and "transformer_blocks" not in name:
                continue  # kohya's default LoRA targets the UNet's transformer blocks
            key = prefix + name.replace(".", "_")
            weights[f"{key}.lora_down.weight"] = 0.3 * torch.randn(
                TINY_LORA_RANK, module.in_features, generator=generator
            )
            weights[f"{key}.lora_up.weight"] = 0.3 * torch.randn(
                module.out_features, TINY_LORA_RANK, generator=generator
            )
            weights[f"{key}.alpha"] = torch.tensor(float(TINY_LORA_RANK))
    return save_weights(weights, path, metadata)


EmbeddingLayout = Literal["web_ui", "diffusers"]


def write_tiny_embedding(
    path: Path,
    family: Family = "sd15",
    seed: int = 0,
    vectors: int = 2,
    layout: EmbeddingLayout = "web_ui",
) -> Path:
    """Write a random textual-inversion embedding for the tiny model: the web UI's
    ``emb_params`` (SDXL: ``clip_l`` + ``clip_g``) or diffusers' one-tensor
    ``learned_embeds`` layout (keyed by the file stem)."""
    generator = torch.Generator().manual_seed(seed)
    widths = [TINY_TEXT_HIDDEN] if family == "sd15" else [TINY_TEXT_HIDDEN, TINY_TEXT_2_HIDDEN]
    tensors = [torch.randn(vectors, width, generator=generator) for width in widths]
    if family == "sdxl":
        weights = dict(zip(("clip_l", "clip_g"), tensors, strict=True))
    elif layout == "web_ui":
        weights = {"emb_params": tensors[0]}
    else:
        weights = {Path(path).stem: tensors[0]}
    return save_weights(weights, path)


def write_tiny_vae(path: Path, seed: int = 1) -> Path:
    """Write a tiny VAE (other weights than the tiny models' own) as one ``.safetensors``
    file in the original LDM layout, as the web UI's VAE files are."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae: Any = _tiny_vae()  # diffusers' lazy imports hide nn.Module from mypy
    return save_weights(vae_to_ldm(vae.state_dict(), vae.config), path)


def write_tiny_upscaler(directory: Path, scale: int = 4, seed: int = 0) -> Path:
    """A random-weight ESRGAN (RRDBNet: 8 filters, 1 block) as ``tiny-esrgan-<scale>x``,
    loaded by spandrel like any ESRGAN download."""
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    model = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=scale)
    return save_weights(model.state_dict(), directory / f"tiny-esrgan-{scale}x.safetensors")


def write_tiny_face_restorer(models_dir: Path, seed: int = 0) -> Path:
    """A random-weight RestoreFormer (32 channels, one block a level: 0.55M parameters, 2 MB,
    about 1 s a face on a CPU) as ``models/face_restore/tiny-restoreformer``, loaded by
    spandrel as a face restorer like a GFPGAN download. spandrel builds GFPGAN at its full
    size whatever the file (86M parameters, 349 MB, ~12 s a face on a CPU): too big to test."""
    from spandrel.architectures.RestoreFormer import RestoreFormer

    torch.manual_seed(seed)
    model = RestoreFormer(
        n_embed=64,
        embed_dim=32,
        ch=32,
        out_ch=3,
        ch_mult=(1, 1, 1, 1, 1, 1),  # six levels: 512 -> 16, where its attention sits
        num_res_blocks=1,
        attn_resolutions=(16,),
        dropout=0.0,
        in_channels=3,
        resolution=512,
        z_channels=32,
        double_z=False,
        enable_mid=True,
        head_size=8,
    )
    folder = Path(models_dir) / FACE_RESTORER_FOLDERS[0]
    return save_weights(model.state_dict(), folder / "tiny-restoreformer.safetensors")


CONTROLNET_FOLDER = "ControlNet"
# The original ControlNet code's names for the parts a UNet does not have.
LDM_CONTROLNET_PREFIX = "control_model."
_CONTROLNET_ONLY = (
    "controlnet_cond_embedding.",
    "controlnet_down_blocks.",
    "controlnet_mid_block.",
)
_ZERO_INITIALISED = (
    "controlnet_down_blocks.",
    "controlnet_mid_block.",
    "controlnet_cond_embedding.conv_out.",
)


def write_tiny_controlnet(model_dir: Path, seed: int = 0) -> Path:
    """Write a random ControlNet for the tiny diffusers model at ``model_dir`` as one file
    under ``<model_dir's parent>/ControlNet/`` (with the sidecar config its odd sizes need):
    an SD1.x one in the original ControlNet layout, as the web UI's ``control_*`` files are,
    an SDXL one with diffusers tensor names, as SDXL ControlNets are published."""
    model_dir = Path(model_dir)
    unet_dir = model_dir / "unet"
    if not (unet_dir / "config.json").is_file():
        raise ValueError(f"{model_dir} holds no diffusers model: write one there first")
    unet: Any = UNet2DConditionModel.from_pretrained(unet_dir)
    sdxl = unet.config.addition_embed_type == "text_time"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        controlnet: Any = ControlNetModel.from_unet(unet)
        # A trained ControlNet's zero convolutions have learned weights; zeros would make
        # the random one a no-op.
        for name, parameter in controlnet.named_parameters():
            if name.startswith(_ZERO_INITIALISED):
                parameter.data = 0.3 * torch.randn_like(parameter)
    state = controlnet.state_dict()
    weights = state if sdxl else controlnet_to_ldm(state, controlnet.config)
    path = model_dir.parent / CONTROLNET_FOLDER / f"{model_dir.name}-controlnet.safetensors"
    save_weights(weights, path)
    sidecar = path.with_name(path.stem + SIDECAR_SUFFIX)
    sidecar.mkdir(exist_ok=True)
    controlnet.save_config(sidecar)
    return path


TINY_IMAGE_EMBED = 32
# The plain IP-Adapter's image tokens per picture.
IP_ADAPTER_TOKENS = 4


def write_tiny_ip_adapter(model_dir: Path, seed: int = 0) -> Path:
    """Write a random plain IP-Adapter for the tiny diffusers model at ``model_dir`` as
    ``<model_dir's parent>/ipadapter/<model_dir name>-ipadapter.safetensors`` (``image_proj.*``
    and ``ip_adapter.*`` tensors, as the published ones), and a tiny CLIP vision model in
    ``ipadapter/image_encoder/`` unless one is there."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    model_dir = Path(model_dir)
    unet_dir = model_dir / "unet"
    if not (unet_dir / "config.json").is_file():
        raise ValueError(f"{model_dir} holds no diffusers model: write one there first")
    unet: Any = UNet2DConditionModel.from_pretrained(unet_dir)
    width = int(unet.config.cross_attention_dim)
    folder = model_dir.parent / "ipadapter"
    weights: dict[str, torch.Tensor] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        weights["image_proj.proj.weight"] = 0.2 * torch.randn(
            IP_ADAPTER_TOKENS * width, TINY_IMAGE_EMBED
        )
        weights["image_proj.proj.bias"] = torch.zeros(IP_ADAPTER_TOKENS * width)
        weights["image_proj.norm.weight"] = torch.ones(width)
        weights["image_proj.norm.bias"] = torch.zeros(width)
        # The original numbering: processor i of the UNet is number i, cross-attention odd.
        for number, name in enumerate(unet.attn_processors):
            if not name.endswith("attn2.processor"):
                continue
            module = unet.get_submodule(name.removesuffix(".processor"))
            for projection in ("to_k_ip", "to_v_ip"):
                weights[f"ip_adapter.{number}.{projection}.weight"] = 0.3 * torch.randn(
                    module.to_k.out_features, width
                )
        encoder_dir = folder / "image_encoder"
        if not (encoder_dir / "config.json").is_file():
            config = CLIPVisionConfig(
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=32,
                patch_size=8,
                projection_dim=TINY_IMAGE_EMBED,
            )
            CLIPVisionModelWithProjection(config).save_pretrained(encoder_dir)
    return save_weights(weights, folder / f"{model_dir.name}-ipadapter.safetensors")


def controlnet_to_ldm(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """A diffusers ControlNet's weights under the original ControlNet code's names."""
    shared = {k: v for k, v in state.items() if not k.startswith(_CONTROLNET_ONLY)}
    renamed = {
        LDM_CONTROLNET_PREFIX + key.removeprefix(UNET_PREFIX): tensor
        for key, tensor in unet_to_ldm(shared, {**config, "up_block_types": []}).items()
    }
    hint_blocks = len(config["conditioning_embedding_out_channels"]) * 2 - 2
    for key, tensor in state.items():
        name, _, parameter = key.rpartition(".")
        if name == "controlnet_cond_embedding.conv_in":
            ldm = "input_hint_block.0"
        elif name == "controlnet_cond_embedding.conv_out":
            ldm = f"input_hint_block.{2 * (hint_blocks + 1)}"
        elif name.startswith("controlnet_cond_embedding.blocks."):
            ldm = f"input_hint_block.{2 * (int(name.rsplit('.', 1)[1]) + 1)}"
        elif name.startswith("controlnet_down_blocks."):
            ldm = f"zero_convs.{name.rsplit('.', 1)[1]}.0"
        elif name == "controlnet_mid_block":
            ldm = "middle_block_out.0"
        else:
            continue
        renamed[f"{LDM_CONTROLNET_PREFIX}{ldm}.{parameter}"] = tensor
    return renamed


# The tiny captioner's vocabulary: BERT's special tokens, BLIP's decoder start, a few words.
_TINY_CAPTION_WORDS = (
    *("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"),
    *("a", "an", "the", "of", "on", "in", "with", "cat", "dog", "red", "blue", "green"),
    *("photo", "painting", "portrait", "sofa", "hat", "sky", "tree", "house", "river", "city"),
)


def write_tiny_depth_annotator(models_dir: Path, seed: int = 0) -> Path:
    """A random-weight DPT depth model where the ``depth`` preprocessor looks for one:
    ``<models_dir>/ControlNet/annotators/depth/`` (config, weights, preprocessor config)."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    folder = Path(models_dir) / CONTROLNET_FOLDER / "annotators" / "depth"
    config = DPTConfig(
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=16,
        image_size=32,
        patch_size=8,
        neck_hidden_sizes=[8, 8, 8, 8],
        fusion_hidden_size=8,
        backbone_out_indices=[0, 1, 2, 3],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        DPTForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def write_tiny_captioner(directory: Path, seed: int = 0) -> Path:
    """Write a random-weight BLIP captioning model (and its processor) for ``/describe``:
    its captions are random words of a small vocabulary, everything else is real."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(_TINY_CAPTION_WORDS) + "\n")
    tokenizer = BertTokenizer(str(vocab), do_lower_case=True, bos_token="[DEC]")
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )
    layers = {"num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}
    config = BlipConfig(
        text_config={
            **layers,
            "vocab_size": len(tokenizer),
            "hidden_size": TINY_TEXT_HIDDEN,
            "encoder_hidden_size": TINY_TEXT_HIDDEN,
            "max_position_embeddings": 64,
            "bos_token_id": tokenizer.bos_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            **layers,
            "hidden_size": TINY_TEXT_HIDDEN,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=TINY_TEXT_HIDDEN,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        BlipForConditionalGeneration(config).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def save_weights(
    weights: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> Path:
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"the file must end in .safetensors, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: tensor.contiguous() for key, tensor in weights.items()}, str(path), metadata)
    return path
