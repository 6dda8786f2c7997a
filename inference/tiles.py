"""Overlapping tiles for work too large to do at once (model upscalers, the creative upscale's
diffusion re-detail), and their blending: linear ramps across every shared edge, so no seam
shows where one tile's output meets the next. Pure numpy."""

from __future__ import annotations

import math

import numpy as np


def tile_spans(length: int, tile: int, overlap: int, multiple_of: int = 1) -> list[tuple[int, int]]:
    """``(start, end)`` of the fewest tiles of at most ``tile`` pixels that cover ``length``
    with at least ``overlap`` pixels shared by neighbours; all of one size (a multiple of
    ``multiple_of`` when ``length`` and ``tile`` are), spread evenly so no tile is wasted on
    a sliver at the edge."""
    if length <= tile:  # one tile: no overlap to keep
        return [(0, length)]
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be from 0 to {tile - 1}, got {overlap}")
    count = math.ceil((length - overlap) / (tile - overlap))
    side = math.ceil((length + (count - 1) * overlap) / count)
    side = min(tile, math.ceil(side / multiple_of) * multiple_of)
    starts = [index * (length - side) // (count - 1) for index in range(count)]
    return [(start, start + side) for start in starts]


def _ramp(length: int, fade_start: bool, fade_end: bool, fade: int) -> np.ndarray:
    """Weights along one tile side: rising over ``fade`` pixels at an edge shared with a
    neighbour, 1 elsewhere (never 0, so every pixel has some weight)."""
    weights = np.ones(length, dtype=np.float32)
    fade = min(fade, length // 2)
    if fade:
        rising = np.arange(1, fade + 1, dtype=np.float32) / (fade + 1)
        if fade_start:
            weights[:fade] = rising
        if fade_end:
            weights[length - fade :] = rising[::-1]
    return weights


class TileBlender:
    """Sums tile outputs weighted by ramps ``fade`` pixels wide at the edges they share with
    other tiles; ``result`` divides by the summed weights. Float32, at the output's size."""

    def __init__(self, height: int, width: int, channels: int, fade: int) -> None:
        self.height, self.width, self.fade = height, width, fade
        self._sum = np.zeros((height, width, channels), dtype=np.float32)
        self._weight = np.zeros((height, width, 1), dtype=np.float32)

    def add(self, top: int, left: int, values: np.ndarray) -> None:
        """Add a tile (``height x width x channels``) whose corner is at ``top, left``."""
        bottom, right = top + values.shape[0], left + values.shape[1]
        ramp_y = _ramp(values.shape[0], top > 0, bottom < self.height, self.fade)
        ramp_x = _ramp(values.shape[1], left > 0, right < self.width, self.fade)
        weight = np.outer(ramp_y, ramp_x)[..., None]
        self._sum[top:bottom, left:right] += values * weight
        self._weight[top:bottom, left:right] += weight

    def result(self) -> np.ndarray:
        if not self._weight.all():
            raise ValueError("the tiles added do not cover the whole output")
        return self._sum / self._weight
