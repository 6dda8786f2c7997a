"""Cheap previews of a render in progress: latents to RGB by a linear map, no VAE decode.

Each latent pixel stands for an 8x8 patch of the picture, and a linear map of its channels
gives that patch's colour well enough to see the composition take shape. The map is fitted
once per model from its own VAE (flat colour patches encoded, least squares from latents to
colours), so it fits any checkpoint or VAE, the tiny random ones of the tests included.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from inference.images import picture_grid

# Flat colour patches per side of each fitting picture, and how many pictures.
_FIT_PATCHES = 8
_FIT_PICTURES = 8
# The preview grid's longer side in pixels: big enough to see, small enough to send often.
PREVIEW_SIDE = 256
PREVIEW_JPEG_QUALITY = 70


@dataclass(frozen=True)
class LatentPreviewer:
    """``rgb = latents · weights + bias`` per latent pixel, RGB in [-1, 1]."""

    weights: torch.Tensor  # (latent channels, 3)
    bias: torch.Tensor  # (3,)

    @classmethod
    def fit(cls, vae: Any, scale_factor: int) -> LatentPreviewer | None:
        """Encode pictures of flat colour patches (``scale_factor`` pixels each: one latent
        pixel) with ``vae`` and solve for the linear map back to their colours; None when
        the VAE's output is not finite (a half-precision VAE that overflows)."""
        generator = torch.Generator().manual_seed(0)
        colours = torch.rand(_FIT_PICTURES, 3, _FIT_PATCHES, _FIT_PATCHES, generator=generator)
        colours = colours * 2 - 1
        pictures = colours.repeat_interleave(scale_factor, 2).repeat_interleave(scale_factor, 3)
        parameter = next(vae.parameters())
        with torch.inference_mode():
            encoded = vae.encode(pictures.to(parameter.device, parameter.dtype))
        latents = encoded.latent_dist.mean.float().cpu() * vae.config.scaling_factor
        if not torch.isfinite(latents).all():
            return None
        channels = latents.shape[1]
        inputs = latents.permute(0, 2, 3, 1).reshape(-1, channels)
        targets = colours.permute(0, 2, 3, 1).reshape(-1, 3)
        with_bias = torch.cat([inputs, torch.ones(len(inputs), 1)], dim=1)
        solution = torch.linalg.lstsq(with_bias, targets).solution
        return cls(weights=solution[:channels], bias=solution[channels])

    # The map's tensors on each device previews were made on (moved once, not at every preview).
    _placed: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def frame(self, latents: torch.Tensor) -> PreviewFrame:
        """The device thread's share of a preview: the colours as small 8-bit pictures, on
        their way to the CPU without waiting for the device (JPEG encoding is ``PreviewFrame``'s
        and can run on any thread)."""
        if latents.device not in self._placed:
            self._placed[latents.device] = (
                self.weights.to(latents.device),
                self.bias.to(latents.device),
            )
        weights, bias = self._placed[latents.device]
        rgb = torch.einsum("bchw,ck->bhwk", latents.float(), weights) + bias
        values = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if values.device.type != "cuda":
            return PreviewFrame(values.cpu())
        # A blocking copy would wait for every queued kernel: copy into pinned memory
        # behind them instead, and let the encoding thread wait for the copy.
        host = torch.empty(values.shape, dtype=torch.uint8, pin_memory=True)
        host.copy_(values, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()
        return PreviewFrame(host, copied)

    def pictures(self, latents: torch.Tensor) -> list[Image.Image]:
        """One RGB picture per latent of the batch, at latent resolution."""
        return self.frame(latents).pictures()

    def jpeg(self, latents: torch.Tensor) -> bytes:
        """The batch as one JPEG grid (see ``PreviewFrame.jpeg``), on this thread."""
        return self.frame(latents).jpeg()


@dataclass(frozen=True)
class PreviewFrame:
    """A batch's preview colours, (batch, height, width, 3) bytes in CPU memory once
    ``copied`` (a device event; None: already there)."""

    values: torch.Tensor
    copied: Any = None  # torch.cuda.Event | None

    @property
    def count(self) -> int:
        """How many pictures it shows."""
        return int(self.values.shape[0])

    def rows(self, start: int, stop: int) -> PreviewFrame:
        """Pictures ``start`` to ``stop`` (excluded) alone: a view, read only once copied, so
        the device's copy is not waited for here."""
        return PreviewFrame(self.values[start:stop], self.copied)

    def pictures(self) -> list[Image.Image]:
        if self.copied is not None:
            self.copied.synchronize()
        return [Image.fromarray(picture) for picture in self.values.numpy()]

    def jpeg(self) -> bytes:
        """The batch as one JPEG grid (as the result will be laid out), longer side
        ``PREVIEW_SIDE``."""
        grid = picture_grid(self.pictures())
        scale = PREVIEW_SIDE / max(grid.size)
        size = (max(1, round(grid.width * scale)), max(1, round(grid.height * scale)))
        buffer = io.BytesIO()
        grid.resize(size, Image.Resampling.BILINEAR).save(
            buffer, format="JPEG", quality=PREVIEW_JPEG_QUALITY
        )
        return buffer.getvalue()
