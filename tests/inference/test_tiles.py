"""Tile layout and blending, shared by the model upscalers and the creative upscale."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference.tiles import TileBlender, tile_spans


@given(
    length=st.integers(1, 3000),
    tile_units=st.integers(2, 64),
    overlap=st.integers(0, 15),
    multiple_of=st.sampled_from([1, 8]),
)
def test_tiles_cover_the_side_with_the_overlap(
    length: int, tile_units: int, overlap: int, multiple_of: int
) -> None:
    tile = tile_units * 8
    spans = tile_spans(length, tile, overlap, multiple_of)
    assert spans[0][0] == 0 and spans[-1][1] == length
    sides = {end - start for start, end in spans}
    assert len(sides) == 1  # one size
    side = sides.pop()
    assert 0 < side <= tile
    if len(spans) > 1:
        assert side % multiple_of == 0
    for (start, end), (next_start, _) in itertools.pairwise(spans):
        assert start < next_start and end - next_start >= overlap  # neighbours share that much
    # The fewest tiles: one less could not cover the side with that overlap.
    fewer = len(spans) - 1
    assert fewer == 0 or fewer * tile - (fewer - 1) * overlap < length


def test_an_overlap_as_large_as_the_tile_is_refused() -> None:
    with pytest.raises(ValueError, match="tile overlap must be from 0 to 63, got 64"):
        tile_spans(500, 64, 64)


@given(height=st.integers(1, 200), width=st.integers(1, 200), tile=st.integers(16, 96))
def test_crops_of_one_picture_blend_back_into_it(height: int, width: int, tile: int) -> None:
    """The weights always sum to what was added: blending cannot leave a seam of its own."""
    picture = np.random.default_rng(height * width).random((height, width, 3), dtype=np.float32)
    blender = TileBlender(height, width, 3, fade=8)
    for top, bottom in tile_spans(height, tile, 8):
        for left, right in tile_spans(width, tile, 8):
            blender.add(top, left, picture[top:bottom, left:right])
    assert np.allclose(blender.result(), picture, atol=1e-5)


def test_two_different_tiles_cross_fade_in_small_steps() -> None:
    blender = TileBlender(1, 100, 1, fade=20)
    (first_start, first_end), (second_start, second_end) = tile_spans(100, 60, 20)
    blender.add(0, first_start, np.zeros((1, first_end - first_start, 1), dtype=np.float32))
    blender.add(0, second_start, np.ones((1, second_end - second_start, 1), dtype=np.float32))
    row = blender.result()[0, :, 0]
    assert row[0] == 0 and row[-1] == 1
    assert np.all(np.diff(row) >= 0) and np.diff(row).max() < 0.1  # a ramp, not a step


def test_tiles_that_leave_a_gap_are_reported() -> None:
    blender = TileBlender(10, 10, 1, fade=2)
    blender.add(0, 0, np.ones((10, 5, 1), dtype=np.float32))
    with pytest.raises(ValueError, match="do not cover the whole output"):
        blender.result()
