"""Which flow-matching family (SD3.5, Flux dev, Flux schnell) a single file holds, told from
its tensor names alone (a ``.safetensors`` header; no weights read).

Pure Python (no torch): model lists and autocomplete call it.

The layouts, as the original code and the web UI forks save them:
* SD3 / SD3.5: the MMDiT under ``model.diffusion_model.joint_blocks.N.{x_block,context_block}``
  (a transformer saved alone, as city96's GGUF files, without the prefix);
  SD3.5 Medium's first blocks have a second self-attention (``x_block.attn2``), SD3.5 Large has
  38 blocks.
* Flux: ``double_blocks.N`` and ``single_blocks.N``, with or without the
  ``model.diffusion_model.`` prefix; dev is guidance-distilled (``guidance_in`` tensors),
  schnell is not.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from inference.gguf_header import gguf_tensors

# The shipped config folders (inference/configs) and the names people use for them.
FLOW_FAMILY_NAMES = {
    "sd35-large": "SD 3.5 Large",
    "sd35-medium": "SD 3.5 Medium",
    "flux-dev": "Flux dev",
    "flux-schnell": "Flux schnell",
}
SD3_LABEL = "SD 3"  # an SD3 model whose size no shipped config has (SD3.0 Medium)

Guidance = Literal["cfg", "distilled", "none"]
# How each family takes its CFG, by the family label lists show: a true CFG (SD3's, as SD's),
# Flux dev's distilled guidance, or none (schnell). The engine's families
# (``inference.flow_families``) and the model lists (``metadata.takes_distilled_guidance``)
# both read it.
FAMILY_GUIDANCE: dict[str, Guidance] = {
    FLOW_FAMILY_NAMES["sd35-large"]: "cfg",
    FLOW_FAMILY_NAMES["sd35-medium"]: "cfg",
    SD3_LABEL: "cfg",
    FLOW_FAMILY_NAMES["flux-dev"]: "distilled",
    FLOW_FAMILY_NAMES["flux-schnell"]: "none",
}


@dataclass(frozen=True)
class FamilyDefaults:
    """What a request for this family gets where the member chose nothing (above the
    server's defaults, below their /settings, presets, flags and options)."""

    steps: int
    cfg: float
    sampler: str = "Euler"  # the default Euler a has no flow-matching form


# By the family label lists show. The publishers' values: SD3.5 Large's model card renders
# with num_inference_steps=28, guidance_scale=3.5; SD3.5 Medium's with 40 and 4.5; SD3
# Medium's (an "SD 3" of a size no config is shipped for) with 28 and 7.0; FLUX.1-schnell's
# with 4 steps and guidance 0 (no guidance; CFG 1 here, which is off); FLUX.1-dev's with
# distilled guidance 3.5 (its example takes 50 steps; hosted Flux dev APIs default to 28).
FAMILY_DEFAULTS = {
    FLOW_FAMILY_NAMES["sd35-large"]: FamilyDefaults(28, 3.5),
    FLOW_FAMILY_NAMES["sd35-medium"]: FamilyDefaults(40, 4.5),
    SD3_LABEL: FamilyDefaults(28, 7.0),
    FLOW_FAMILY_NAMES["flux-dev"]: FamilyDefaults(28, 3.5),
    FLOW_FAMILY_NAMES["flux-schnell"]: FamilyDefaults(4, 1.0),
}
SD3_PREFIX = "model.diffusion_model."
_SD3_BLOCK = "joint_blocks.0.x_block.attn.qkv.weight"
_SD35_MEDIUM_BLOCK = "joint_blocks.0.x_block.attn2.qkv.weight"
_SD35_LARGE_LAST_BLOCK = "joint_blocks.37.x_block.attn.qkv.weight"
_FLUX_BLOCK = "double_blocks.0.img_attn.qkv.weight"
_FLUX_GUIDANCE = "guidance_in.in_layer.weight"


class UnknownSD3Variant(ValueError):
    """An SD3 file whose size matches no shipped config (SD3.0 Medium, say)."""


def flow_family_from_tensors(names: Collection[str]) -> str | None:
    """The shipped config folder that fits these tensor names, or None (not SD3 or Flux).

    ``UnknownSD3Variant`` for an MMDiT that is neither SD3.5 Large nor SD3.5 Medium."""
    for prefix in ("", SD3_PREFIX):
        if prefix + _SD3_BLOCK in names:
            if prefix + _SD35_MEDIUM_BLOCK in names:
                return "sd35-medium"
            if prefix + _SD35_LARGE_LAST_BLOCK in names:
                return "sd35-large"
            raise UnknownSD3Variant("an SD3 model that is neither SD3.5 Large nor SD3.5 Medium")
    for prefix in ("", SD3_PREFIX):
        if prefix + _FLUX_BLOCK in names:
            return "flux-dev" if prefix + _FLUX_GUIDANCE in names else "flux-schnell"
    return None


def gguf_tensor_names(path: Path) -> frozenset[str]:
    """The tensor names of a ``.gguf`` file, from its header (``inference.gguf_header``)."""
    return frozenset(tensor.name for tensor in gguf_tensors(path))
