"""Initial latent noise: drawn on the CPU from the seed alone, so a seed gives the same
picture on any device and at any position in a batch; variation seeds blend two noises.
Ancestral samplers' per-step noise comes from the same CPU generators, drawn ahead."""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType

import torch

# Below this angle between the two noises slerp degenerates and plain lerp is exact enough.
_PARALLEL_DOT = 0.9995


def seeded_generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def seeded_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=seeded_generator(seed), dtype=torch.float32)


def slerp(fraction: float, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation, which keeps the blend's norm like that of Gaussian noise.

    As the web UI does it (so variation seeds give its pictures): each column of each channel
    (the height axis of ``(..., C, H, W)``) is interpolated on its own great circle."""
    start_unit = start / start.norm(dim=-2, keepdim=True)
    end_unit = end / end.norm(dim=-2, keepdim=True)
    cosine = (start_unit * end_unit).sum(-2, keepdim=True).clamp(-1, 1)
    if cosine.mean() > _PARALLEL_DOT:
        return (1 - fraction) * start + fraction * end
    angle = torch.arccos(cosine)
    sine = torch.sin(angle)
    return (torch.sin((1 - fraction) * angle) / sine) * start + (
        torch.sin(fraction * angle) / sine
    ) * end


def initial_noise_and_generator(
    seed: int,
    shape: tuple[int, ...],
    variation_seed: int | None = None,
    variation_strength: float = 0.0,
) -> tuple[torch.Tensor, torch.Generator]:
    """The starting latents of one image (strength 0: the seed's image, 1: the variation's),
    and the seed's CPU generator as that draw left it, as the web UI leaves it: ancestral
    steps draw on from there, not from the seed's first numbers again."""
    generator = seeded_generator(seed)
    noise = torch.randn(shape, generator=generator, dtype=torch.float32)
    if variation_seed is not None and variation_strength != 0:
        noise = slerp(variation_strength, noise, seeded_noise(variation_seed, shape))
    return noise, generator


def initial_noise(
    seed: int,
    shape: tuple[int, ...],
    variation_seed: int | None = None,
    variation_strength: float = 0.0,
) -> torch.Tensor:
    """The starting latents of one image, for a pass whose sampler draws no step noise."""
    return initial_noise_and_generator(seed, shape, variation_seed, variation_strength)[0]


# Ancestral samplers draw fresh noise at every step from the pictures' CPU generators and copy
# it to the device; on CUDA that blocking copy waits for every queued kernel, so the device
# thread could not run ahead of the device. The steps' noise is drawn ahead instead, in the same
# order from the same generators (so bit for bit the same), and copied once.
_drawing_ahead = threading.local()
# At most this much noise is held ahead on the device (large pictures and many steps refill).
AHEAD_BYTES = 64 * 2**20
# torch's CPU normal sampler draws in blocks of this many numbers (and redraws a partial last
# block), so only draws of whole blocks join into one draw.
_NORMAL_BLOCK = 16
RandnTensor = Callable[..., torch.Tensor]


class StepNoise:
    """The noise a sampler asks of ``asked_with`` (by default ``generators``), drawn from
    ``generators`` ``draws`` steps at a time."""

    def __init__(
        self,
        generators: list[torch.Generator],
        draws: int,
        asked_with: list[torch.Generator] | None = None,
    ) -> None:
        self.generators = generators
        self.asked_with = generators if asked_with is None else asked_with
        self.draws = max(1, draws)
        self._left = self.draws  # steps still to draw (one at a time past the last)
        self._pending: list[torch.Tensor] = []
        self._drawn_as: tuple[object, ...] | None = None

    def next(
        self,
        randn_tensor: RandnTensor,
        shape: Sequence[int],
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> torch.Tensor:
        drawn_as = (tuple(shape), None if device is None else torch.device(device), dtype)
        if self._pending and drawn_as != self._drawn_as:
            # Draws already made cannot be taken back: the sequence would differ from step-wise.
            raise RuntimeError(f"step noise drawn ahead as {self._drawn_as}, asked as {drawn_as}")
        if not self._pending:
            ahead = self._drawn_ahead(randn_tensor, tuple(shape), dtype)
            self._pending = list(ahead.to(device or "cpu").unbind(0))
            self._drawn_as = drawn_as
        return self._pending.pop(0)

    def _drawn_ahead(
        self, randn_tensor: RandnTensor, shape: tuple[int, ...], dtype: torch.dtype | None
    ) -> torch.Tensor:
        """The next steps' noise on the CPU, ``[steps, *shape]``: a step is then one view of
        it, with no draw and no concatenation of the pictures' noise of its own."""
        step_bytes = math.prod(shape) * torch.finfo(dtype or torch.get_default_dtype()).bits // 8
        draws = max(1, min(self._left, AHEAD_BYTES // step_bytes))
        # A refill draws no step the pass will not ask for: the generators end where
        # step-wise drawing leaves them.
        self._left = max(1, self._left - draws)
        # As diffusers' randn_tensor draws a step: one generator, the whole batch; else one
        # row from each picture's generator.
        single = len(self.generators) == 1
        row = shape if single else (1, *shape[1:])
        if math.prod(row) % _NORMAL_BLOCK or not (single or len(self.generators) >= shape[0]):
            steps = [
                randn_tensor(shape, generator=self.generators, device="cpu", dtype=dtype)
                for _ in range(draws)
            ]
            return torch.stack(steps)
        # torch's CPU normal fills whole blocks in order, so one draw of ``draws`` rows
        # from a generator is its ``draws`` step-wise draws, bit for bit.
        rows = [
            torch.randn((draws, *row), generator=generator, dtype=dtype)
            for generator in self.generators[: 1 if single else shape[0]]
        ]
        return rows[0] if single else torch.cat(rows, dim=1)


def _draw_ahead_in(module: ModuleType) -> None:
    """Route ``module``'s ``randn_tensor`` through the calling thread's ``StepNoise``, if any
    (once per module; other threads and other callers get the original)."""
    original: RandnTensor | None = getattr(module, "randn_tensor", None)
    if original is None or getattr(original, "draws_ahead", False):
        return

    def randn_tensor(
        shape: Sequence[int],
        generator: object = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        layout: torch.layout | None = None,
    ) -> torch.Tensor:
        ahead: StepNoise | None = getattr(_drawing_ahead, "noise", None)
        if ahead is not None and generator is ahead.asked_with and layout in (None, torch.strided):
            return ahead.next(original, shape, device, dtype)
        return original(shape, generator=generator, device=device, dtype=dtype, layout=layout)

    randn_tensor.draws_ahead = True  # type: ignore[attr-defined]
    module.randn_tensor = randn_tensor  # type: ignore[attr-defined]


@contextmanager
def step_noise_drawn_ahead(
    scheduler: object,
    generators: list[torch.Generator],
    steps: int,
    asked_with: list[torch.Generator] | None = None,
) -> Iterator[None]:
    """While the pipeline runs on this thread, ``scheduler``'s per-step noise from
    ``generators`` is drawn ``steps`` draws ahead and copied to the device once per batch.
    ``asked_with``: the generators the pipeline hands the scheduler, when not ``generators``."""
    _draw_ahead_in(sys.modules[type(scheduler).__module__])
    _drawing_ahead.noise = StepNoise(generators, steps, asked_with)
    try:
        yield
    finally:
        _drawing_ahead.noise = None
