"""Masks from words: CLIPSeg (transformers) finds "the sky" in a picture, offline, from a local
model folder (``EASEL_MODELS_DIR/clipseg/``, a ``save_pretrained`` folder such as
CIDAS/clipseg-rd64-refined). The mask is white where the words matched, as /inpaint expects.
The bot segments on a thread of CLIPSeg's own (``cogs.region``, ``inference.model_thread``),
one picture at a time: the model is shared and torch's CPU threads are few.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from inference.images import load_input_image
from inference.library_logs import through_process_logs
from inference.not_installed import not_installed
from inference.types import RenderInputError

# torch and transformers are imported where they are used: the bot imports this module at
# start, and they would cost seconds before it logs in (tests/unit/test_light_imports.py).
if TYPE_CHECKING:
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

CLIPSEG_FOLDER = "clipseg"
# A pixel belongs to the region when CLIPSeg's probability for it reaches this (the web UI's
# txt2mask extensions use 0.3-0.5); the region is then grown a little so the inpaint blends.
MATCH_THRESHOLD = 0.4
GROW_PIXELS = 4
_TINY_IMAGE_SIZE = 64


def clipseg_dir(models_dir: Path) -> Path:
    return models_dir / CLIPSEG_FOLDER


def missing_model_sentence(models_dir: Path) -> str | None:
    """None when a CLIPSeg model is installed, else the sentence saying where to put one (a
    path of the operator's: the log and ``easel doctor``, never a member's message)."""
    if (clipseg_dir(models_dir) / "config.json").is_file():
        return None
    return (
        f"Describing a region needs a CLIPSeg model: put a CLIPSeg folder (config.json, weights, "
        f"tokenizer; e.g. CIDAS/clipseg-rd64-refined) in {clipseg_dir(models_dir)}."
    )


@functools.lru_cache(maxsize=1)
def load_segmenter(directory: Path) -> tuple[CLIPSegProcessor, CLIPSegForImageSegmentation]:
    """The processor and model from ``directory``, never from the network; kept loaded."""
    import transformers.utils.logging
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    from inference.owned_weights import own_weights

    through_process_logs(transformers.utils.logging)

    processor = CLIPSegProcessor.from_pretrained(directory, local_files_only=True)
    model = CLIPSegForImageSegmentation.from_pretrained(directory, local_files_only=True)
    own_weights(model)  # out of the file's mapped pages: a ``cp`` over it ends nothing
    return processor, model.eval()


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Dilate a boolean mask by ``pixels`` (a max filter), so the repaint covers the edge."""
    import torch

    tensor = torch.from_numpy(mask.astype(np.float32))[None, None]
    grown = torch.nn.functional.max_pool2d(tensor, 2 * pixels + 1, stride=1, padding=pixels)
    return grown[0, 0].numpy() > 0


def segment(models_dir: Path, picture: Path, words: str) -> Image.Image:
    """A black-and-white mask of ``picture``'s size, white where ``words`` matched.

    Raises RenderInputError when nothing matched (the member should try other words)."""
    import torch

    missing = missing_model_sentence(models_dir)
    if missing is not None:
        raise not_installed("the CLIPSeg model that finds a region from words", missing)
    image = load_input_image(picture, "picture").convert("RGB")
    with torch.inference_mode():
        processor, model = load_segmenter(clipseg_dir(models_dir))
        inputs = processor(text=[words], images=[image], padding=True, return_tensors="pt")
        logits = model(**inputs).logits  # (height, width) for one picture and one text
        logits = logits.reshape(1, 1, *logits.shape[-2:])
    probabilities = torch.nn.functional.interpolate(
        logits.sigmoid(), size=(image.height, image.width), mode="bilinear"
    )[0, 0].numpy()
    region = _grow(probabilities >= MATCH_THRESHOLD, GROW_PIXELS)
    if not region.any():
        raise RenderInputError(
            f"Nothing in the picture matched {words!r}; describe the region differently, "
            "or paint it on the mask page."
        )
    return Image.fromarray(np.where(region, 255, 0).astype(np.uint8), mode="L")


def write_tiny_clipseg(directory: Path, seed: int = 0) -> Path:
    """A tiny random-weight CLIPSeg folder (shipped CLIP tokenizer, 64-pixel vision tower):
    loads and runs like the real one; its masks are noise."""
    import torch
    from transformers import (
        CLIPSegConfig,
        CLIPSegForImageSegmentation,
        CLIPSegProcessor,
        ViTImageProcessor,
    )

    from inference.tiny import load_clip_tokenizer

    torch.manual_seed(seed)
    config = CLIPSegConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 3,
            "vocab_size": 49408,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 3,
            "image_size": _TINY_IMAGE_SIZE,
            "patch_size": 16,
        },
        projection_dim=16,
        extract_layers=(1, 2),
        reduce_dim=16,
        decoder_num_attention_heads=4,
        decoder_intermediate_size=16,
    )
    directory.mkdir(parents=True, exist_ok=True)
    CLIPSegForImageSegmentation(config).save_pretrained(directory)
    image_processor = ViTImageProcessor(
        size={"height": _TINY_IMAGE_SIZE, "width": _TINY_IMAGE_SIZE},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    CLIPSegProcessor(
        image_processor=image_processor, tokenizer=load_clip_tokenizer()
    ).save_pretrained(directory)
    return directory
