"""The early family check (``inference.family_rules``, before a request is queued) and the
engine's last line (``inference.passes.flow``) refuse an SD3 of any size in one wording."""

from __future__ import annotations

import pytest

from inference.family_rules import check_family_request, check_flow_request
from inference.flow_detect import FLOW_FAMILY_NAMES, SD3_LABEL
from inference.flow_families import SD3
from inference.types import RenderInputError, RenderRequest

SD3_SIZES = [SD3_LABEL, FLOW_FAMILY_NAMES["sd35-large"], FLOW_FAMILY_NAMES["sd35-medium"]]


def _refusal(check: object, *args: object) -> str:
    with pytest.raises(RenderInputError) as refused:
        check(*args)  # type: ignore[operator]
    return str(refused.value)


@pytest.mark.parametrize("family", SD3_SIZES)
@pytest.mark.parametrize(
    "request_",
    [
        RenderRequest(prompt="a cat", fast=True),
        RenderRequest(prompt="a cat", sampler="DPM++ SDE"),
    ],
    ids=["fast", "sampler"],
)
def test_every_sd3_size_is_refused_early_in_the_engine_s_words(
    family: str, request_: RenderRequest
) -> None:
    early = _refusal(check_family_request, family, "big", request_)
    # The engine tells the pipeline's family (SD3), never its size.
    assert early == _refusal(check_flow_request, SD3.label, request_)
    assert "SD 3 models" in early
