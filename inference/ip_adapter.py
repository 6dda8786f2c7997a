"""IP-Adapter image prompts inside Easel's prompt guidance.

An adapter adds, to every cross-attention layer of the UNet, a second attention over a few
"image tokens" projected from a CLIP image embedding. diffusers' own IP-Adapter path feeds
those tokens through the pipeline; Easel's ``ScheduledUNet`` (``inference.guidance``) builds
the UNet's rows itself, so it asks ``ImagePrompting.tokens`` for the image tokens of exactly
the rows it evaluates: the picture's for positive rows (every ``AND`` sub-prompt), the
unconditional ones (a blank picture's, as diffusers does) for negative rows. The adapter's
attention processors are built once per adapter and UNet, and put on the UNet only for the
calls that use them.

Adapters load from ``EASEL_MODELS_DIR/ipadapter/*.safetensors`` (``image_proj.*`` and
``ip_adapter.*`` tensors, as diffusers' ``load_ip_adapter`` reads them) with a CLIP vision
model (``CLIPVisionModelWithProjection``) from ``ipadapter/image_encoder/`` or the adapter's
own ``<stem>.image_encoder/``; nothing is fetched.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from inference.file_versions import FileStamp, file_stamp
from inference.image_prompts import (
    DEFAULT_WEIGHTS,
    IPADAPTER_FOLDER,
    ImagePrompt,
    choose_adapter,
    image_encoder_folder,
    image_prompt,
    image_prompt_infotext,
)
from inference.images import load_input_image
from inference.owned_weights import own_weights, read_safetensors
from inference.registry import ModelRegistry, loaded_weights
from inference.types import RenderInputError, RenderRequest

ADAPTER_HASH_DIGITS = 8
_CROSS_ATTENTION = "attn2.processor"


def read_adapter(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """An adapter file's tensors, split as diffusers' converters take them: read into memory
    of the process's own, never mapped (``inference.owned_weights``: a copy over the file as
    it loads is a short read naming it, not a bus error)."""
    state: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for key, tensor in read_safetensors(path).items():
        part, _, name = key.partition(".")
        if part in state:
            state[part][name] = tensor
    if not state["image_proj"] or not state["ip_adapter"]:
        raise RenderInputError(
            f"{path.name} is no IP-Adapter: it needs image_proj.* and ip_adapter.* tensors"
        )
    return state


def _uses_hidden_states(projection: dict[str, torch.Tensor]) -> bool:
    """Plus and full adapters read the encoder's penultimate hidden states, the base one its
    projected embedding. Face ID adapters need face embeddings, which Easel does not make."""
    if "proj.weight" in projection:
        return False
    if "latents" in projection or "proj.3.weight" in projection:
        return True
    raise RenderInputError(
        "face ID IP-Adapters need face embeddings, which Easel does not make; use a plain, "
        "plus or full IP-Adapter"
    )


def _image_width(projection: dict[str, torch.Tensor]) -> int:
    """The width of the image features the adapter reads."""
    for key in ("proj.weight", "proj_in.weight", "proj.0.weight"):
        if key in projection:
            return int(projection[key].shape[-1])
    raise RenderInputError("this IP-Adapter's image projection has an unknown layout")


def style_layers(unet: Any) -> str | None:
    """The layers InstantStyle found to carry style, by the UNet's processor names: the
    second attention of the first up block with attentions (``up_blocks.0.attentions.1`` in
    SDXL). None for SD1.x/2.x, where no such split is established."""
    if unet.config.addition_embed_type != "text_time":
        return None
    for index, block in enumerate(unet.up_blocks):
        attentions = getattr(block, "attentions", None)
        if attentions is not None and len(attentions) > 1:
            return f"up_blocks.{index}.attentions.1."
    return None


@dataclass
class _Adapter:
    name: str
    short_hash: str
    processors: dict[str, Any]  # the IP-Adapter processors of the cross-attention layers
    projection: torch.nn.Module
    hidden_states: bool
    image_width: int  # of the image features the projection reads


@dataclass
class _Encoder:
    model: Any
    processor: CLIPImageProcessor


class ImagePrompting:
    """One render's image prompt: the adapter on the UNet for the call, the image tokens for
    the rows ``ScheduledUNet`` evaluates, and the infotext that records them."""

    def __init__(
        self,
        adapter: _Adapter,
        tokens: torch.Tensor,
        empty: torch.Tensor,
        weight: float,
        mode: str,
        style: str | None,
        pictures: int,
    ) -> None:
        self.adapter = adapter
        self._tokens = tokens
        self._empty = empty
        self.weight = weight
        self.mode = mode
        self.style = style
        self.pictures = pictures

    def tokens(self, negatives: Sequence[bool]) -> torch.Tensor:
        """The image tokens of each evaluated row: the blank picture's for negative rows."""
        return torch.cat([self._empty if negative else self._tokens for negative in negatives])

    @contextmanager
    def installed(self, unet: Any) -> Iterator[None]:
        """The adapter's processors on ``unet`` (at this render's weight, only on the style
        layers in style mode) for one call; the UNet's own ones always come back."""
        original = dict(unet.attn_processors)
        for name, processor in self.adapter.processors.items():
            applies = self.style is None or name.startswith(self.style)
            processor.scale = [self.weight if applies else 0.0]
        # set_attn_processor empties the mapping it is given: each call gets its own.
        unet.set_attn_processor({**original, **self.adapter.processors})
        try:
            yield
        finally:
            unet.set_attn_processor(dict(original))

    def infotext(self) -> dict[str, str]:
        label = f"{self.adapter.name} [{self.adapter.short_hash}]"
        return image_prompt_infotext(label, self.weight, self.mode, self.pictures)


class ImagePromptCache:
    """One device's IP-Adapter and image encoder, kept while renders keep asking for them."""

    def __init__(self) -> None:
        # By file and modification time; built for one UNet (held weakly: the model cache
        # decides how long a UNet lives, and a new one may get a dead one's id()).
        self._adapters: dict[tuple[Path, FileStamp], tuple[weakref.ref[Any], _Adapter]] = {}
        # By the versions of the encoder's config and weights.
        self._encoders: dict[tuple[Path, tuple[FileStamp, ...]], _Encoder] = {}

    def prompting(
        self,
        request: RenderRequest,
        pipeline: Any,
        registry: ModelRegistry,
        device: str,
        dtype: torch.dtype,
    ) -> ImagePrompting | None:
        """The request's image prompt made ready for ``pipeline``'s UNet (None: it has none)."""
        prompt = image_prompt(request.options)
        if prompt is None:
            return None
        unet = pipeline.unet
        width = int(unet.config.cross_attention_dim)
        name, path = choose_adapter(prompt, registry, width)
        style = style_layers(unet)
        mode = prompt.mode
        if mode == "style" and style is None:
            raise RenderInputError(
                "style-only image prompts need an SDXL checkpoint (its style layers are known); "
                "with this checkpoint use the full mode"
            )
        mode = ("style" if style is not None else "full") if mode == "auto" else mode
        adapter = self._adapter(name, path, unet, registry, device, dtype)
        folder = image_encoder_folder(path)
        encoder = self._encoder(folder, device, dtype)
        tokens, empty = _image_tokens(prompt, adapter, encoder, folder)
        weight = DEFAULT_WEIGHTS[mode] if prompt.weight is None else prompt.weight
        return ImagePrompting(
            adapter,
            tokens,
            empty,
            weight,
            mode,
            style if mode == "style" else None,
            len(prompt.images),
        )

    def _adapter(
        self,
        name: str,
        path: Path,
        unet: Any,
        registry: ModelRegistry,
        device: str,
        dtype: torch.dtype,
    ) -> _Adapter:
        key = (path, file_stamp(path))
        built_for, adapter = self._adapters.get(key, (None, None))
        if adapter is None or built_for is None or built_for() is not unet:
            state = read_adapter(path)  # only when not loaded: adapters reach 1 GB
            hidden_states = _uses_hidden_states(state["image_proj"])
            # diffusers' own converters, as load_ip_adapter uses them, without installing.
            processors = unet._convert_ip_adapter_attn_to_diffusers([state], False)
            projection = unet._convert_ip_adapter_image_proj_to_diffusers(
                state["image_proj"], False
            )
            adapter = _Adapter(
                name=name,
                short_hash=registry.sha256(path)[:ADAPTER_HASH_DIGITS],
                processors={
                    layer: processor.to(device, dtype)
                    for layer, processor in processors.items()
                    if layer.endswith(_CROSS_ATTENTION)
                },
                projection=projection.to(device, dtype),
                hidden_states=hidden_states,
                image_width=_image_width(state["image_proj"]),
            )
        self._adapters = {key: (weakref.ref(unet), adapter)}  # others are dropped
        return adapter

    def _encoder(self, folder: Path, device: str, dtype: torch.dtype) -> _Encoder:
        config = folder / "config.json"
        if not config.is_file():
            raise RenderInputError(
                f"the IP-Adapter has no image encoder: put its CLIP vision model (config.json "
                f"and weights) in EASEL_MODELS_DIR/{IPADAPTER_FOLDER}/{folder.name}/"
            )
        files = [config, *loaded_weights(folder, "transformers")]
        key = (folder, tuple(map(file_stamp, files)))
        encoder = self._encoders.get(key)
        if encoder is None:
            model: Any = CLIPVisionModelWithProjection.from_pretrained(
                folder, local_files_only=True, dtype=dtype
            )
            size = int(model.config.image_size)
            # CLIP's own preprocessing (shortest side, centre crop, CLIP mean and std).
            processor = CLIPImageProcessor(
                size={"shortest_edge": size}, crop_size={"height": size, "width": size}
            )
            own_weights(model.to(device))  # on the CPU, out of the file's mapped pages
            encoder = _Encoder(model.eval(), processor)
        self._encoders = {key: encoder}
        return encoder


def _pixels(encoder: _Encoder, pictures: Sequence[Image.Image]) -> torch.Tensor:
    batch = encoder.processor(images=list(pictures), return_tensors="pt")
    pixels: torch.Tensor = batch.pixel_values
    return pixels.to(encoder.model.device, encoder.model.dtype)


def _features(encoder: _Encoder, pixels: torch.Tensor, hidden: bool) -> torch.Tensor:
    output = encoder.model(pixels, output_hidden_states=hidden)
    features: torch.Tensor = output.hidden_states[-2] if hidden else output.image_embeds
    return features


def _image_tokens(
    prompt: ImagePrompt, adapter: _Adapter, encoder: _Encoder, folder: Path
) -> tuple[torch.Tensor, torch.Tensor]:
    """The image tokens of the pictures' averaged features, and those of no picture."""
    pictures = [load_input_image(image, "image prompt picture") for image in prompt.images]
    hidden = adapter.hidden_states
    with torch.inference_mode():
        pixels = _pixels(encoder, pictures)
        features = _features(encoder, pixels, hidden).mean(dim=0, keepdim=True)
        if features.shape[-1] != adapter.image_width:
            raise RenderInputError(
                f"the IP-Adapter {adapter.name} reads image features {adapter.image_width} "
                f"wide but the "
                f"image encoder in {folder.name}/ writes them {features.shape[-1]} wide: put "
                f"the encoder it was trained with in {adapter.name}.image_encoder/ next to it"
            )
        # As diffusers: zeros for the plain adapter, the features of zero pixels otherwise.
        if hidden:
            empty = _features(encoder, torch.zeros_like(pixels[:1]), hidden)
        else:
            empty = torch.zeros_like(features)
        projection = adapter.projection
        return projection(features), projection(empty)
