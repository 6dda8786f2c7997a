"""The rows ``PromptGuidance`` evaluates for one UNet call, checked against the web UI's
formula on a stand-in UNet: negatives first, then each picture's first positive, then the
extra rows of ``AND``; a batch of plain prompts passes its rows through untouched."""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import given
from hypothesis import strategies as st

from inference.conditioning import Conditioning
from inference.guidance import (
    ImageConditioning,
    PromptGuidance,
    ScheduledConditioning,
    _combined,
    _rows,
)

# A picture: the weights of its sub-prompts (one at weight 1: a plain prompt).
pictures = st.lists(
    st.one_of(
        st.just([1.0]),
        st.lists(st.sampled_from([0.3, 0.5, 1.0, 1.4]), min_size=1, max_size=3),
    ),
    min_size=1,
    max_size=4,
)


def conditioning(value: float) -> Conditioning:
    return Conditioning(torch.full((1, 1, 1), value), None)


def scheduled(weight: float, value: float) -> ScheduledConditioning:
    return ScheduledConditioning(weight, ((1, conditioning(value)),))


@given(pictures, st.booleans())
def test_every_output_row_is_the_web_uis_combination(
    weights: list[list[float]], guided: bool
) -> None:
    # Picture i's negative reads as 10 * i + 1, its sub-prompt j as 10 * i + 2 + j.
    images = [
        ImageConditioning(
            tuple(scheduled(w, 10 * i + 2 + j) for j, w in enumerate(subs)),
            scheduled(1.0, 10 * i + 1),
        )
        for i, subs in enumerate(weights)
    ]
    guidance: Any = PromptGuidance(encoder=None, plans=lambda: [])  # type: ignore[arg-type]
    guidance.images = images
    count = len(images)
    rows = 2 * count if guided else count
    plan = guidance.row_plan(rows)
    # The stand-in UNet: an evaluated row is its input row's value plus its text's value.
    sample = 1000.0 * torch.arange(rows, dtype=torch.float64).reshape(rows, 1, 1)
    texts = torch.cat([c.hidden for c in plan.evaluations.conditionings]).to(torch.float64)
    predicted = _rows(sample, plan.sources, rows) + texts
    output = _combined(predicted, plan.recipes) if plan.combined else predicted

    def unet(row: int, text: float) -> float:
        return 1000.0 * row + text

    expected = []
    if guided:
        expected += [unet(i, 10 * i + 1) for i in range(count)]
    first = count if guided else 0
    for i, subs in enumerate(weights):
        row = first + i
        if subs == [1.0]:
            expected.append(unet(row, 10 * i + 2))
            continue
        # The uncond is the negative half's row with CFG, the picture's own row without.
        base = combined = unet(i if guided else row, 10 * i + 1)
        for j, w in enumerate(subs):  # summed in the web UI's order
            combined += w * (unet(row, 10 * i + 2 + j) - base)
        expected.append(combined)
    assert output.flatten().tolist() == expected
    if all(subs == [1.0] for subs in weights):
        assert plan.sources is None and not plan.combined
