"""/compare's plan (bot/compare.py, inference/compare.py) and its labelled grid."""

from __future__ import annotations

import dataclasses
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from bot.compare import Axis, cells_planned_apart, grid_infotext, parse_axis, plan_comparison
from bot.compare_grid import labelled_grid_png
from bot.user_errors import UserError
from inference.compare import MAX_CELLS, axis_labels, cell_requests
from inference.face_options import FIX_FACES_PROMPT
from inference.infotext import infotext_from_png
from inference.types import RenderInputError, RenderRequest

BASE = RenderRequest(prompt="a red cat", seed=5, steps=10, cfg_scale=7.0, model="tiny")


def parse(axis: Axis, text: str, models: tuple[str, ...] = ("tiny", "other")) -> list[object]:
    values = parse_axis(axis, text, BASE.prompt, 50, models)
    return [next(iter(change.values())) for change in values.changes]


@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=MAX_CELLS))
def test_listed_seeds_are_read_back(seeds: list[int]) -> None:
    assert parse(Axis.SEED, ", ".join(map(str, seeds))) == seeds


@given(st.integers(1, 40), st.integers(0, 8), st.integers(1, 5))
def test_a_range_steps_up_from_its_start_to_its_end(start: int, span: int, step: int) -> None:
    end = start + span
    assert parse(Axis.STEPS, f"{start}-{end} (+{step})") == list(range(start, end + 1, step))


@pytest.mark.parametrize(
    ("axis", "text", "values"),
    [  # the web UI's X/Y plot examples (its features page)
        (Axis.STEPS, "1-5", [1, 2, 3, 4, 5]),
        (Axis.STEPS, "1-5 (+2)", [1, 3, 5]),
        (Axis.STEPS, "10-5 (-3)", [10, 7]),
        (Axis.CFG, "1-3 (+0.5)", [1.0, 1.5, 2.0, 2.5, 3.0]),
        (Axis.STEPS, "1-10 [5]", [1, 3, 5, 7, 10]),
        (Axis.CFG, "0.0-1.0 [6]", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (Axis.SEED, "10-1 [4]", [10, 7, 4, 1]),
        (Axis.STEPS, "3-9 [1]", [3]),
        # Worked out in whole numbers: a float's 53 bits gave 2**62 for all three.
        (Axis.SEED, f"{2**62 + 1}-{2**62 + 3} [3]", [2**62 + 1, 2**62 + 2, 2**62 + 3]),
        (Axis.SEED, f"{2**63 - 11}-{2**63 - 1} [2]", [2**63 - 11, 2**63 - 1]),
        (Axis.SEED, f"{2**63 - 1}-{2**63 - 10} [4]", [2**63 - 1, 2**63 - 4, 2**63 - 7, 2**63 - 10]),
    ],
)
def test_the_web_uis_range_forms(axis: Axis, text: str, values: list[float]) -> None:
    assert parse(axis, text) == values


def test_seeds_past_32_bits_render_as_typed() -> None:
    """As /imagine's --seed and a caption's seed: up to 2**63 - 1, rendered as typed."""
    seeds = parse_axis(Axis.SEED, f"{2**32 + 5}, {2**63 - 1}", BASE.prompt, 50, ())
    assert seeds.labels == [str(2**32 + 5), str(2**63 - 1)]
    assert [change["seed"] for change in seeds.changes] == [2**32 + 5, 2**63 - 1]
    with pytest.raises(UserError, match=f"between 0 and {2**63 - 1} here, not {2**63}"):
        parse(Axis.SEED, str(2**63))


def test_values_of_each_axis() -> None:
    assert parse(Axis.CFG, "3, 7.5") == [3.0, 7.5]
    assert parse(Axis.SAMPLER, 'euler a,"DPM++ 2M Karras"') == ["Euler a", "DPM++ 2M Karras"]
    assert parse(Axis.MODEL, "other") == ["other"]
    assert parse(Axis.PROMPT, "red, blue") == ["a red cat", "a blue cat"]


@pytest.mark.parametrize(
    ("axis", "text", "message"),
    [
        (Axis.STEPS, "10, 60", "steps values must be between 1 and 50 here, not 60"),
        (Axis.CFG, "31", "cfg values must be between 0 and 30"),
        (Axis.SEED, "cat", "'cat' is not a whole number or a range"),
        (Axis.SAMPLER, "Nope", "unknown sampler 'Nope'"),
        (Axis.MODEL, "forbidden", "model `forbidden` is not installed or not allowed here"),
        (Axis.PROMPT, "green, blue", "which the prompt does not contain"),
        (Axis.SEED, " , ", "at least one value"),
        (Axis.STEPS, "9-3", "must go up"),
        (Axis.STEPS, "3-9 (-2)", "must go down"),
        (Axis.STEPS, "3-9 (+0)", "a step other than 0"),
        (Axis.STEPS, "3-9 [0]", "at least 1 value"),
        (Axis.SEED, "1-2 [x]", r"or 1-10 \[5\] for the seed axis"),
    ],
)
def test_bad_values_are_refused_in_one_sentence(axis: Axis, text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse(axis, text)


def test_cells_are_every_x_on_every_y_row_by_row() -> None:
    x = parse_axis(Axis.SEED, "1, 2", BASE.prompt, 50, ())
    y = parse_axis(Axis.CFG, "3, 9", BASE.prompt, 50, ())
    comparison = plan_comparison(BASE, x, y)
    assert comparison.request.count == 4
    cells = cell_requests(comparison.request)
    assert [(c.seed, c.cfg_scale, c.count) for c in cells] == [
        (1, 3.0, 1),
        (2, 3.0, 1),
        (1, 9.0, 1),
        (2, 9.0, 1),
    ]
    assert all("compare" not in c.options and c.prompt == BASE.prompt for c in cells)
    assert axis_labels(comparison.request) == (("Seed", ["1", "2"]), ("CFG Scale", ["3", "9"]))
    # The plan survives the journal.
    assert cell_requests(RenderRequest.from_json(comparison.request.to_json())) == cells


def test_too_many_cells_and_the_same_axis_twice_are_refused() -> None:
    x = parse_axis(Axis.SEED, "1-5", BASE.prompt, 50, ())
    y = parse_axis(Axis.STEPS, "1-4", BASE.prompt, 50, ())
    with pytest.raises(UserError, match=r"at most 16 pictures; 5 seed values x 4 steps .* make 20"):
        plan_comparison(BASE, x, y)
    seeds = parse_axis(Axis.SEED, "1-17", BASE.prompt, 50, ())
    with pytest.raises(UserError) as refused:
        plan_comparison(BASE, seeds, None)
    assert str(refused.value) == (
        "A comparison renders at most 16 pictures; 17 seed values make 17: give fewer values."
    )
    with pytest.raises(UserError, match="both seed"):
        plan_comparison(BASE, x, x)


def test_a_journaled_cell_may_change_only_the_axis_fields() -> None:
    forged = RenderRequest(prompt="x", options={"compare": {"cells": [{"init_image": "/etc"}]}})
    with pytest.raises(RenderInputError, match="may change only"):
        cell_requests(forged)


def test_the_grid_is_labelled_and_carries_the_axes() -> None:
    cells = [Image.new("RGB", (64, 64), colour) for colour in ["red", "green", "blue", "white"]]
    x, y = ("Seed", ["1", "2"]), ("CFG Scale", ["3", "9"])
    png = labelled_grid_png(cells, x, y, grid_infotext("a cat\nSteps: 2", x, y))
    with Image.open(io.BytesIO(png)) as grid:
        grid = grid.convert("RGB")
        width, height = grid.size
        assert width > 128 and height > 128  # room for the labels
        left, top = width - 128, height - 128
        assert grid.getpixel((left + 32, top + 32)) == (255, 0, 0)
        assert grid.getpixel((left + 96, top + 96)) == (255, 255, 255)
        assert grid.getpixel((left + 32, top + 96)) == (0, 0, 255)
        # The labels are ink on the margins.
        assert max(low for low, _ in grid.crop((left, 0, width, top)).getextrema()) < 128
        assert max(low for low, _ in grid.crop((0, top, left, height)).getextrema()) < 128
    assert infotext_from_png(png) == (
        'a cat\nSteps: 2, X Type: Seed, X Values: "1, 2", Y Type: CFG Scale, Y Values: "3, 9"'
    )


def test_cells_are_planned_apart_at_each_steps_and_each_seed_that_draws() -> None:
    """A prompt within the caps at 10 steps may be over them at 150: each steps value is
    planned; seeds are planned apart only for a prompt that draws by seed."""
    steps = plan_comparison(BASE, parse_axis(Axis.STEPS, "10, 150, 10", BASE.prompt, 150, ()), None)
    assert [cell.steps for cell in cells_planned_apart(steps.cells)] == [10, 150]
    seeds = parse_axis(Axis.SEED, "1, 2", BASE.prompt, 50, ())
    assert len(cells_planned_apart(plan_comparison(BASE, seeds, None).cells)) == 1
    drawing = dataclasses.replace(BASE, prompt="a {red|blue} cat")
    assert len(cells_planned_apart(plan_comparison(drawing, seeds, None).cells)) == 2
    # The fix-faces prompt is planned at each seed too (it may be the only one that draws).
    faces = dataclasses.replace(BASE, options={FIX_FACES_PROMPT: "{green|brown} eyes"})
    assert len(cells_planned_apart(plan_comparison(faces, seeds, None).cells)) == 2
