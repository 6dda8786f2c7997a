"""Edges of the prompt check at submit (bot.policy.prompt_safety) that a mutation audit found no
test pinned. Refusals are asserted by type (their wording is the user-facing texts' own tests'
concern)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

from bot.policy.addons import APPLIED_LORAS_OPTION
from bot.policy.prompt_safety import plan_request
from bot.user_errors import UserError
from inference.infotext import format_infotext, png_with_infotext
from inference.prompts import PlannedDraws
from inference.types import RenderRequest

BANNED = {"forbidden"}


@pytest.mark.parametrize(
    ("typed_prompt", "typed_negative", "left_to_the_picture"),
    [("a cat", "", "negative"), ("", "blurry", "prompt")],
)
def test_a_pass_over_a_picture_checks_the_picture_s_text_for_the_half_left_empty(
    tmp_path: Path, typed_prompt: str, typed_negative: str, left_to_the_picture: str
) -> None:
    """Fix faces with only one of the two prompts typed renders the picture's own for the
    other (``rendered_prompts``): that one is checked and planned too, not only when both are
    left empty."""
    picture_prompt, picture_negative = "a forbidden {x|y} cat", "forbidden {ugly|blurry}"
    picture = tmp_path / "picture.png"
    infotext = format_infotext(
        picture_prompt, picture_negative, {"Steps": 3, "Sampler": "Euler", "Seed": 1}
    )
    picture.write_bytes(png_with_infotext(Image.new("RGB", (64, 64)), infotext))
    request = RenderRequest(
        typed_prompt,
        negative_prompt=typed_negative,
        mode="faces",
        init_image=str(picture),
        options={"fix_faces": True},
        seed=1,
    )
    with pytest.raises(UserError):
        plan_request(request, BANNED, None)
    draws = PlannedDraws.of(plan_request(request, set(), None).options)
    assert draws is not None
    rendered = picture_negative if left_to_the_picture == "negative" else picture_prompt
    assert (rendered, 1) in draws.drawn  # its {a|b} drawn here, not on the render thread


def test_the_operator_is_warned_of_only_the_wildcard_files_holding_the_tag(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A drawn LoRA tag that is not installed is ignored and its file named in the log: not
    every file of the folder, and a sub-folder is no file to read."""
    (tmp_path / "style.txt").write_text("<lora:film-grain:0.6> photo\n", encoding="utf-8")
    (tmp_path / "other.txt").write_text("watercolour\n", encoding="utf-8")
    (tmp_path / "animals").mkdir()
    (tmp_path / "animals" / "pet.txt").write_text("cat\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="bot.policy.prompt_safety"):
        planned = plan_request(
            RenderRequest("a cat, __style__", seed=1),
            (),
            tmp_path,
            installed_loras=lambda: ["ink-style"],
        )
    assert planned.options[APPLIED_LORAS_OPTION] == []
    warned = [record.getMessage() for record in caplog.records]
    assert warned and all("style.txt" in line for line in warned)
    assert not any("other.txt" in line or "pet.txt" in line for line in warned)
