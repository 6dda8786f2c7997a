"""``/compare``'s picture: the cells in rows (Y) and columns (X) with their values written
above and beside them, as the web UI's X/Y plot draws it (Pillow only)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from bot.compare import grid_infotext
from inference.compare import AxisLabels, axis_labels
from inference.infotext import png_with_infotext
from inference.types import RenderRequest

_BACKGROUND = (255, 255, 255)
_INK = (0, 0, 0)
_MIN_FONT_PX = 12


def comparison_png(
    request: RenderRequest, pictures: Sequence[Image.Image], first_infotext: str
) -> bytes:
    """A comparison job's pictures as its labelled grid, carrying the first picture's
    infotext and the axes."""
    x, y = axis_labels(request)
    return labelled_grid_png(pictures, x, y, grid_infotext(first_infotext, x, y))


def labelled_grid_png(
    pictures: Sequence[Image.Image], x: AxisLabels, y: AxisLabels | None, infotext: str
) -> bytes:
    """A column per X value and a row per Y value (one row without Y), each labelled
    ``Title: value``, carrying ``infotext``."""
    x_labels = [f"{x[0]}: {label}" for label in x[1]]
    y_labels = None if y is None else [f"{y[0]}: {label}" for label in y[1]]
    columns, rows = len(x_labels), len(y_labels or [""])
    if len(pictures) != columns * rows:
        raise ValueError(f"{len(pictures)} pictures do not fill {columns} x {rows} cells")
    cell_w = max(p.width for p in pictures)
    cell_h = max(p.height for p in pictures)
    font_px = max(_MIN_FONT_PX, min(cell_w, cell_h) // 10)
    font = ImageFont.load_default(size=font_px)
    line_h = round(font_px * 1.25)
    # Labels wrap to their cell's width (X) or to a column as wide as a cell (Y).
    chars = max(4, int(cell_w / (font_px * 0.6)))
    x_text = [textwrap.wrap(label, chars) or [""] for label in x_labels]
    y_text = [textwrap.wrap(label, chars) or [""] for label in (y_labels or [])]
    top = line_h * max(len(lines) for lines in x_text) + font_px // 2
    left = 0
    if y_labels is not None:
        widest = max(font.getlength(line) for lines in y_text for line in lines)
        left = min(cell_w, int(widest)) + font_px
    grid = Image.new("RGB", (left + columns * cell_w, top + rows * cell_h), _BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for column, lines in enumerate(x_text):
        centre = left + column * cell_w + cell_w // 2
        for index, line in enumerate(lines):
            draw.text((centre, index * line_h), line, font=font, fill=_INK, anchor="ma")
    for row, lines in enumerate(y_text):
        middle = top + row * cell_h + cell_h // 2 - len(lines) * line_h // 2
        for index, line in enumerate(lines):
            draw.text((font_px // 2, middle + index * line_h), line, font=font, fill=_INK)
    for index, picture in enumerate(pictures):
        row, column = divmod(index, columns)
        grid.paste(picture, (left + column * cell_w, top + row * cell_h))
    return png_with_infotext(grid, infotext)
