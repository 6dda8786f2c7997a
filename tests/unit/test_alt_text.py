"""The alt text of Easel's pictures (``bot.alt_text``): where each of U1-U4 is in the grid as
it is really drawn, and never over Discord's 1024 characters."""

from __future__ import annotations

import pytest
from PIL import Image

from bot.alt_text import grid_place, picture_description, result_description
from inference.images import picture_grid
from inference.limits import MAX_BATCH_IMAGES, MAX_COUNT
from tests.fake_discord.rules import MAX_ATTACHMENT_DESCRIPTION_CHARS

JOB = "0123456789abcdef"
# Where each place names a point of a grid of 2 columns (left, right) and 2 rows (top, bottom),
# as fractions of its width and height.
POINTS = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top left": (0.25, 0.25),
    "top right": (0.75, 0.25),
    "bottom left": (0.25, 0.75),
    "bottom right": (0.75, 0.75),
}


@pytest.mark.parametrize("count", range(2, MAX_COUNT + 1))
def test_each_place_named_is_where_the_grid_draws_that_picture(count: int) -> None:
    colours = [(40 * index + 20, 0, 0) for index in range(count)]
    grid = picture_grid([Image.new("RGB", (8, 8), colour) for colour in colours])
    for index, colour in enumerate(colours):
        x, y = POINTS[grid_place(index, count)]
        assert grid.getpixel((int(x * grid.width), int(y * grid.height))) == colour


def test_a_grid_says_where_each_u_is_and_which_cell_is_empty() -> None:
    assert result_description(JOB, 2, comparison=False) == (
        f"2 pictures of job {JOB}, 2 across and 1 down: U1 left, U2 right."
    )
    assert result_description(JOB, 3, comparison=False) == (
        f"3 pictures of job {JOB}, 2 across and 2 down: U1 top left, U2 top right, "
        "U3 bottom left; the bottom right is empty."
    )
    assert result_description(JOB, 1, comparison=False) == f"The picture of job {JOB}."
    assert picture_description(JOB, 3, 4) == (
        f"Picture 4 of job {JOB}: U4, bottom right in its grid."
    )


def test_no_description_is_over_discords_limit() -> None:
    said = [result_description(JOB, MAX_BATCH_IMAGES, comparison=True)]
    for count in range(1, MAX_COUNT + 1):
        said.append(result_description(JOB, count, comparison=False))
        said += [picture_description(JOB, index, count) for index in range(count)]
    assert max(map(len, said)) <= MAX_ATTACHMENT_DESCRIPTION_CHARS
