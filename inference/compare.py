"""An X/Y comparison as one job: the request carries its cells (what each picture changes),
the engine renders them one by one, the bot lays them out as one labelled grid.

Pure Python (no torch) so the bot plans cells with the same code the engine reads them with.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from inference.limits import MAX_BATCH_IMAGES
from inference.types import RenderInputError, RenderRequest

# ``RenderRequest.options`` key of a comparison: {"cells": [...], "x": axis, "y": axis}, each
# axis {"title": str, "labels": [str, ...]} (no "y": one row).
COMPARE_OPTION = "compare"
# What one cell may change; anything else is the same for every picture of the grid.
CELL_FIELDS = frozenset({"seed", "sampler", "steps", "cfg_scale", "model", "prompt"})
# An axis's title and the label of each of its values.
AxisLabels = tuple[str, list[str]]
# A 4x4 plot: as many pictures as a batch may hold.
MAX_CELLS = MAX_BATCH_IMAGES


def is_comparison(request: RenderRequest) -> bool:
    return COMPARE_OPTION in request.options


def cell_requests(request: RenderRequest) -> list[RenderRequest]:
    """One single-picture request per cell, row by row, each with its own changes applied.
    The cells came from the journal, so they are checked again here."""
    plan = request.options.get(COMPARE_OPTION)
    cells = plan.get("cells") if isinstance(plan, dict) else None
    if not isinstance(cells, list) or not 1 <= len(cells) <= MAX_CELLS:
        raise RenderInputError(f"a comparison has 1 to {MAX_CELLS} pictures")
    options = {key: value for key, value in request.options.items() if key != COMPARE_OPTION}
    base = dataclasses.replace(request, count=1, options=options)
    return [dataclasses.replace(base, **_cell_changes(cell)) for cell in cells]


def axis_labels(request: RenderRequest) -> tuple[AxisLabels, AxisLabels | None]:
    """``(title, labels)`` of the X axis and of the Y axis (None: a single row)."""
    plan = request.options[COMPARE_OPTION]
    y = plan.get("y")
    return _axis(plan["x"]), None if y is None else _axis(y)


def _axis(axis: dict[str, Any]) -> AxisLabels:
    return str(axis["title"]), [str(label) for label in axis["labels"]]


def _cell_changes(cell: object) -> dict[str, Any]:
    if not isinstance(cell, dict) or not set(cell) <= CELL_FIELDS:
        raise RenderInputError(
            f"a comparison cell may change only {', '.join(sorted(CELL_FIELDS))}"
        )
    return cell
