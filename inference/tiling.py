"""Seamless pictures (``--tile``, the web UI's "Tiling"): every convolution of the UNet and
the VAE pads circularly, so the picture's right edge continues into its left and its bottom
into its top. Set for one pipeline call and restored after: the models are shared."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def padded_convolutions(*models: torch.nn.Module) -> list[torch.nn.Conv2d]:
    return [
        module
        for model in models
        for module in model.modules()
        if isinstance(module, torch.nn.Conv2d)
        and isinstance(module.padding, tuple)
        and any(side > 0 for side in module.padding)
    ]


@contextmanager
def seamless(enabled: bool, unet: torch.nn.Module, vae: torch.nn.Module) -> Iterator[None]:
    """Circular padding in ``unet`` and ``vae`` while the block runs (when ``enabled``)."""
    if not enabled:
        yield
        return
    convolutions = padded_convolutions(unet, vae)
    modes = [conv.padding_mode for conv in convolutions]
    for conv in convolutions:
        conv.padding_mode = "circular"
    try:
        yield
    finally:
        for conv, mode in zip(convolutions, modes, strict=True):
            conv.padding_mode = mode
