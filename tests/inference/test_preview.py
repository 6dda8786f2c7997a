"""Cheap previews: the latent-to-colour map fitted from a VAE, and previews in progress reports."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from PIL import Image

from inference.engine import Engine
from inference.preview import PREVIEW_SIDE, LatentPreviewer
from inference.types import RenderRequest, StepProgress


class LinearVae(torch.nn.Module):
    """A stand-in VAE whose latent is a known linear map of each 8x8 patch's mean colour,
    so the colour each latent stands for is known exactly."""

    config = SimpleNamespace(scaling_factor=0.5)

    def __init__(self) -> None:
        super().__init__()
        self.mix = torch.nn.Conv2d(3, 4, 1)
        with torch.no_grad():
            self.mix.weight.copy_(
                torch.tensor([[1.0, 0, 0], [0, 2, 0], [0, 0, -1], [1, 1, 1]])[..., None, None]
            )
            self.mix.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))

    def encode(self, pictures: torch.Tensor) -> Any:
        mean = self.mix(torch.nn.functional.avg_pool2d(pictures, 8))
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=mean))


def test_the_fitted_map_turns_latents_back_into_their_colours() -> None:
    vae = LinearVae()
    previewer = LatentPreviewer.fit(vae, 8)
    assert previewer is not None
    colours = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(9)) * 2 - 1
    with torch.no_grad():
        latents = vae.mix(colours) * vae.config.scaling_factor
    shown = np.stack([np.asarray(p, dtype=np.float32) for p in previewer.pictures(latents)])
    expected = (colours.permute(0, 2, 3, 1).numpy() + 1) * 127.5
    assert shown.shape == (2, 5, 7, 3)
    assert np.abs(shown - expected).max() <= 1  # exact up to rounding


def test_a_vae_without_finite_latents_gives_no_previewer() -> None:
    vae = LinearVae()
    with torch.no_grad():
        vae.mix.bias.fill_(float("nan"))
    assert LatentPreviewer.fit(vae, 8) is None


def test_progress_carries_a_preview_grid_when_asked(models_dir: Path) -> None:
    request = RenderRequest("a cat", seed=5, steps=4, width=64, height=96, count=4)
    reports: list[StepProgress] = []
    Engine(models_dir, preview_interval_s=0).render(request, progress=reports.append)
    assert [report.step for report in reports] == [1, 2, 3, 4]
    for report in reports:
        assert report.preview is not None
        with Image.open(io.BytesIO(report.preview)) as preview:
            # A 2x2 grid of 64x96 pictures, its longer side PREVIEW_SIDE.
            assert (preview.format, preview.size) == ("JPEG", (171, PREVIEW_SIDE))
    first, last = (np.asarray(Image.open(io.BytesIO(r.preview or b""))) for r in reports[::3])
    assert np.abs(first.astype(int) - last).mean() > 1  # it follows the render


def test_previews_come_at_most_once_per_interval_and_not_unasked(models_dir: Path) -> None:
    request = RenderRequest("a cat", seed=5, steps=6, width=64, height=64)
    spaced: list[StepProgress] = []
    Engine(models_dir, preview_interval_s=3600).render(request, progress=spaced.append)
    assert [report.preview is not None for report in spaced] == [True] + [False] * 5
    plain: list[StepProgress] = []
    Engine(models_dir).render(request, progress=plain.append)
    assert len(plain) == 6 and all(report.preview is None for report in plain)
