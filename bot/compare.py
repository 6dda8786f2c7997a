"""``/compare``'s X/Y plot, planned (pure: no torch, no discord): axis values parsed as the web
UI's X/Y/Z plot writes them, checked, and turned into the cells of one comparison request
(``inference.compare``)."""

from __future__ import annotations

import csv
import dataclasses
import re
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bot.policy.unavailable import unavailable_here
from bot.user_errors import UserError
from inference.compare import COMPARE_OPTION, MAX_CELLS, AxisLabels, cell_requests
from inference.face_options import FIX_FACES_PROMPT
from inference.infotext import format_value
from inference.limits import MAX_CFG, MAX_SEED, MIN_CFG, MIN_STEPS
from inference.names import as_typed
from inference.prompts.wildcards import draws_by_seed
from inference.samplers import canonical_sampler_name
from inference.types import RenderInputError, RenderRequest


class Axis(StrEnum):
    SEED = "seed"
    SAMPLER = "sampler"
    STEPS = "steps"
    CFG = "cfg"
    MODEL = "model"
    PROMPT = "prompt"  # search/replace: the first value is searched for, each value replaces it


# The web UI's axis names (its grid infotext says "X Type: CFG Scale").
AXIS_TITLES = {
    Axis.SEED: "Seed",
    Axis.SAMPLER: "Sampler",
    Axis.STEPS: "Steps",
    Axis.CFG: "CFG Scale",
    Axis.MODEL: "Checkpoint name",
    Axis.PROMPT: "Prompt S/R",
}
# "1-4" or "2-10 (+2)": an inclusive range with a step, as the web UI writes it.
# The web UI's X/Y plot ranges: ``1-5``, an increment ``1-5 (+2)`` or ``10-5 (-3)``, or how
# many values ``1-10 [5]``.
_RANGE = re.compile(
    r"(?P<start>\d+(?:\.\d+)?)\s*-\s*(?P<end>\d+(?:\.\d+)?)"
    r"(?:\s*\((?P<sign>[+-])\s*(?P<step>\d+(?:\.\d+)?)\)|\s*\[\s*(?P<count>\d+)\s*\])?"
)


@dataclass(frozen=True)
class AxisValues:
    axis: Axis
    labels: list[str]
    changes: list[dict[str, Any]]  # what each value changes in a cell's request


@dataclass(frozen=True)
class Comparison:
    request: RenderRequest  # one job: count = cells, the cells in its options
    x: AxisValues
    y: AxisValues | None

    @property
    def cells(self) -> list[RenderRequest]:
        return cell_requests(self.request)


def parse_axis(
    axis: Axis, text: str, prompt: str, max_steps: int, models: Collection[str]
) -> AxisValues:
    """The values typed for ``axis`` (comma-separated, quotes allowed), or ``UserError``
    naming the bad one and the accepted range. ``models``: those this server may use."""
    values = [value.strip() for value in next(csv.reader([text], skipinitialspace=True), [])]
    values = [value for value in values if value]
    if not values:
        raise UserError(f"Give the {axis.value} axis at least one value, separated by commas.")
    if axis is Axis.PROMPT:
        return _search_replace(values, prompt)
    parsed: list[Any] = []
    for value in values:
        parsed.extend(_parse_value(axis, value, max_steps, models))
        if len(parsed) > MAX_CELLS:
            break
    field = {Axis.SEED: "seed", Axis.SAMPLER: "sampler", Axis.STEPS: "steps"}.get(
        axis, "cfg_scale" if axis is Axis.CFG else "model"
    )
    return AxisValues(axis, [format_value(v) for v in parsed], [{field: v} for v in parsed])


def plan_comparison(base: RenderRequest, x: AxisValues, y: AxisValues | None) -> Comparison:
    """One request whose cells are every X value on every Y value (rows are Y), at most
    ``MAX_CELLS`` pictures; the same axis twice is refused."""
    if y is not None and y.axis is x.axis:
        raise UserError(f"The X and Y axes are both {x.axis.value}; choose two different axes.")
    rows = y.changes if y is not None else [{}]
    cells = [{**row, **column} for row in rows for column in x.changes]
    if len(cells) > MAX_CELLS:
        raise UserError(
            f"A comparison renders at most {MAX_CELLS} pictures; "
            f"{_count(x)}{'' if y is None else ' x ' + _count(y)} make {len(cells)}: "
            "give fewer values."
        )
    plan: dict[str, Any] = {"cells": cells, "x": _axis_plan(x)}
    if y is not None:
        plan["y"] = _axis_plan(y)
    options = {**base.options, COMPARE_OPTION: plan}
    request = dataclasses.replace(base, count=len(cells), options=options)
    if "sampler" in cells[0]:
        # A sampler axis: the base's sampler renders in no cell; the job's is its first
        # cell's, the one admission checks the model's family against.
        request = dataclasses.replace(request, sampler=cells[0]["sampler"])
    return Comparison(request, x, y)


def cells_planned_apart(cells: list[RenderRequest]) -> list[RenderRequest]:
    """One cell of each group whose prompts the admission plans alike (the others need no plan
    of their own): the same prompt and model, at the same steps (which, with the hires and
    faces options every cell shares, give the step counts each pass plans over: a prompt within
    the caps at 10 steps may be over them at 150); a prompt that draws by seed (wildcards,
    ``{a|b}``) also at the same seed."""
    distinct: dict[tuple[str, str | None, int, int | None], RenderRequest] = {}
    for cell in cells:
        key = (cell.prompt, cell.model, cell.steps, cell.seed if redraws_by_seed(cell) else None)
        distinct.setdefault(key, cell)
    return list(distinct.values())


def redraws_by_seed(request: RenderRequest) -> bool:
    """Whether a prompt the engine plans for ``request`` (its prompt, negative prompt or
    fix-faces prompt) may draw other text at another seed: each seed is then planned (and
    checked) on its own."""
    face_prompt = request.options.get(FIX_FACES_PROMPT)
    return draws_by_seed(
        request.prompt,
        request.negative_prompt,
        face_prompt if isinstance(face_prompt, str) else "",
    )


def grid_infotext(first_cell_infotext: str, x: AxisLabels, y: AxisLabels | None) -> str:
    """The first picture's infotext with the axes, as the web UI's X/Y plot writes them."""
    axes = [("X", x)] + ([] if y is None else [("Y", y)])
    pairs = [
        f"{name} Type: {format_value(title)}, {name} Values: {format_value(', '.join(labels))}"
        for name, (title, labels) in axes
    ]
    return f"{first_cell_infotext}, {', '.join(pairs)}"


def _count(values: AxisValues) -> str:
    return f"{len(values.labels)} {values.axis.value} values"


def _axis_plan(values: AxisValues) -> dict[str, Any]:
    return {"title": AXIS_TITLES[values.axis], "labels": values.labels}


def _search_replace(values: list[str], prompt: str) -> AxisValues:
    search = values[0]
    if search not in prompt:
        raise UserError(
            f"Prompt S/R searches the prompt for its first value, {search!r}, "
            "which the prompt does not contain."
        )
    return AxisValues(
        Axis.PROMPT, values, [{"prompt": prompt.replace(search, value)} for value in values]
    )


def _parse_value(axis: Axis, value: str, max_steps: int, models: Collection[str]) -> list[Any]:
    if axis is Axis.SAMPLER:
        try:
            return [canonical_sampler_name(value)]
        except RenderInputError as error:
            raise UserError(f"{error}.") from None
    if axis is Axis.MODEL:
        model = as_typed(value)
        if model not in models:
            raise unavailable_here("model", value, models, "/models")
        return [model]
    numbers = _numbers(axis, value)
    low, high = {
        Axis.SEED: (0, MAX_SEED),
        Axis.STEPS: (MIN_STEPS, max_steps),
        Axis.CFG: (MIN_CFG, MAX_CFG),
    }[axis]
    for number in numbers:
        if not low <= number <= high:
            raise UserError(
                f"{axis.value} values must be between {format_value(low)} and "
                f"{format_value(high)} here, not {format_value(number)}."
            )
    return numbers


def _numbers(axis: Axis, value: str) -> list[Any]:
    """A number or a range of them: whole numbers for seeds and steps, decimals for cfg."""
    kind = float if axis is Axis.CFG else int
    accepted = "a number" if kind is float else "a whole number"
    try:
        return [kind(value)]
    except ValueError:
        pass
    match = _RANGE.fullmatch(value)
    if match is None:
        raise UserError(
            f"{value!r} is not {accepted} or a range such as 1-4, 2-10 (+2), 10-4 (-3) "
            f"or 1-10 [5] for the {axis.value} axis."
        )
    try:
        start, end = kind(match["start"]), kind(match["end"])
        step = kind(match["step"] or 1)
        count = None if match["count"] is None else int(match["count"])
    except ValueError:
        raise UserError(f"The {axis.value} range {value!r} needs whole numbers.") from None
    if count is not None:
        return _spread(kind, start, end, count, value)
    if step == 0:
        raise UserError(f"The range {value!r} needs a step other than 0.")
    descending = match["sign"] == "-"
    if end > start if descending else end < start:
        way = "down" if descending else "up"
        raise UserError(f"The range {value!r} must go {way} from its first to its last value.")
    numbers: list[Any] = []
    number = start
    # Past MAX_CELLS values the plan is refused anyway: no need to list them all.
    while abs(number - start) <= abs(end - start) + 1e-9 and len(numbers) <= MAX_CELLS:
        numbers.append(round(number, 4) if kind is float else number)
        number += -step if descending else step
    return numbers


def _spread(
    kind: type[int] | type[float], start: Any, end: Any, count: int, value: str
) -> list[Any]:
    """``count`` values evenly from ``start`` to ``end``, both included: whole numbers are
    truncated, as the web UI gives ``1-10 [5]`` as 1, 3, 5, 7, 10. They are worked out in
    whole numbers: a float keeps 53 bits, and seeds have 63."""
    if count < 1:
        raise UserError(f"The range {value!r} must ask for at least 1 value.")
    if count == 1:
        return [start]
    indexes = range(min(count, MAX_CELLS + 1))
    if kind is int:  # floored: the same as truncated, as a range's values are not negative
        return [start + (end - start) * index // (count - 1) for index in indexes]
    return [round(start + (end - start) * index / (count - 1), 4) for index in indexes]
