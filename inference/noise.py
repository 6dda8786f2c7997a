"""Initial latent noise: drawn on the CPU from the seed alone, so a seed gives the same
picture on any device and at any position in a batch; variation seeds blend two noises."""

from __future__ import annotations

import torch

# Below this angle between the two noises slerp degenerates and plain lerp is exact enough.
_PARALLEL_DOT = 0.9995


def seeded_generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def seeded_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=seeded_generator(seed), dtype=torch.float32)


def slerp(fraction: float, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation, which keeps the blend's norm like that of Gaussian noise."""
    start_flat = start.flatten()
    end_flat = end.flatten()
    cosine = torch.dot(start_flat / start_flat.norm(), end_flat / end_flat.norm()).clamp(-1, 1)
    if cosine.abs() > _PARALLEL_DOT:
        return (1 - fraction) * start + fraction * end
    angle = torch.arccos(cosine)
    sine = torch.sin(angle)
    return (torch.sin((1 - fraction) * angle) / sine) * start + (
        torch.sin(fraction * angle) / sine
    ) * end


def initial_noise(
    seed: int,
    shape: tuple[int, ...],
    variation_seed: int | None = None,
    variation_strength: float = 0.0,
) -> torch.Tensor:
    """The starting latents of one image (strength 0: the seed's image, 1: the variation's)."""
    noise = seeded_noise(seed, shape)
    if variation_seed is None or variation_strength == 0:
        return noise
    return slerp(variation_strength, noise, seeded_noise(variation_seed, shape))
