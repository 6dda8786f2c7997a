"""Edges of the prompt check at submit (bot.policy.prompt_safety) that a mutation audit found no
test pinned. Refusals are asserted by type (their wording is the user-facing texts' own tests'
concern)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

from bot.policy import prompt_safety
from bot.policy.prompt_safety import OperatorWarnings, explain_prompt, plan_request
from bot.user_errors import UserError
from inference.infotext import format_infotext, png_with_infotext
from inference.prompts import PlannedDraws
from inference.types import APPLIED_LORAS_OPTION, RenderRequest

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


def test_a_lora_tag_only_the_prompt_s_own_choices_spell_is_refused_as_typed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``<lo{ra|ra}:name:1>`` is a tag only once drawn, but the member spelled it, not a
    wildcard file: it was ignored as a file's line, a file warned of for it and the member's
    words logged."""
    (tmp_path / "style.txt").write_text("oil painting\n", encoding="utf-8")
    warned = OperatorWarnings()
    with (
        caplog.at_level(logging.WARNING, logger="bot.policy.prompt_safety"),
        pytest.raises(UserError, match="x1"),
    ):
        plan_request(
            RenderRequest("a cat, __style__, <lo{ra|ra}:x1:1>", seed=1),
            (),
            tmp_path,
            installed_loras=lambda: ["ink-style"],
            warned=warned,
        )
    assert not caplog.records
    assert not warned.lately(("lora file", "style.txt"))


def test_a_lora_tag_typed_around_a_wildcard_of_names_is_the_file_s(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``<lora:__names__:0.8>``: the name is a line of the file, drawn at some seeds and not
    others, so one not installed is ignored (as a tag in a line is), and the file named."""
    (tmp_path / "names.txt").write_text("film-grain\n", encoding="utf-8")
    (tmp_path / "other.txt").write_text("watercolour\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="bot.policy.prompt_safety"):
        planned = plan_request(
            RenderRequest("a cat, <lora:__names__:0.8>", seed=1),
            (),
            tmp_path,
            installed_loras=lambda: ["ink-style"],
        )
    assert planned.options[APPLIED_LORAS_OPTION] == []
    assert [record.getMessage() for record in caplog.records] == [
        "Wildcard file names.txt names 1 LoRA not installed, whose tags are ignored: 'film-grain'"
    ]


def _three_files_each_naming_a_lora(folder: Path) -> RenderRequest:
    for name in ("a", "b", "c"):
        (folder / f"{name}.txt").write_text(f"<lora:l{name}:1> photo\n", encoding="utf-8")
    return RenderRequest("__a__ __b__ __c__", seed=1)


def test_a_lora_drawn_as_a_whole_value_is_blamed_on_its_own_file_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``<lora:__names__:1>`` drawing ``art``: names.txt is to blame, not every file holding
    "art" in any letter case; and a wildcard whose value is ``__names__`` blames names.txt,
    whose line it is."""
    (tmp_path / "names.txt").write_text("art\n", encoding="utf-8")
    (tmp_path / "outer.txt").write_text("__names__\n", encoding="utf-8")
    (tmp_path / "colours.txt").write_text("party\nsmart\n", encoding="utf-8")
    (tmp_path / "places.txt").write_text("Art deco hall\n", encoding="utf-8")
    for prompt in ("a cat, <lora:__names__:1>", "a cat, <lora:__outer__:1>"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="bot.policy.prompt_safety"):
            plan_request(RenderRequest(prompt, seed=1), (), tmp_path, installed_loras=lambda: [])
        assert [record.args[0] for record in caplog.records] == ["names.txt"]  # type: ignore[index]


def test_the_names_warned_of_are_bounded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The oldest file goes first once ``WARNINGS_KEPT`` are kept: three files named at each
    plan with two kept are each warned of again at the next plan (each pushed out by the
    one after it), and no more than two are held."""
    request = _three_files_each_naming_a_lora(tmp_path)
    monkeypatch.setattr(prompt_safety, "WARNINGS_KEPT", 2)
    warned = OperatorWarnings()
    with caplog.at_level(logging.WARNING, logger="bot.policy.prompt_safety"):
        for _ in range(2):
            plan_request(
                request, (), tmp_path, installed_loras=lambda: ["ink-style"], warned=warned
            )
    files = [record.args[0] for record in caplog.records if isinstance(record.args, tuple)]
    assert files == ["a.txt", "b.txt", "c.txt"] * 2
    told = [warned.lately(("lora file", f"{name}.txt")) for name in "abc"]
    assert told == [False, True, True]


def test_a_file_of_more_loras_than_are_kept_is_warned_of_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``<lora:__artists__:1>`` drawing from a file of more names than ``WARNINGS_KEPT``: one
    line for the file, with a few of its names, not one per name at each plan forever; and the
    file is the one its wildcard reads, known from the draw: no other file of the folder is
    read for the log, at any plan (review R_FINA: the whole folder was read again at each plan
    once a file named more LoRAs than were kept)."""
    monkeypatch.setattr(prompt_safety, "WARNINGS_KEPT", 20)
    names = [f"artist-{index}" for index in range(2000)]
    (tmp_path / "artists.txt").write_text("\n".join(names), encoding="utf-8")
    (tmp_path / "other.txt").write_text("artist-1\nwatercolour\n", encoding="utf-8")
    read: list[str] = []
    for method in ("open", "read_text"):
        real = getattr(Path, method)
        monkeypatch.setattr(
            Path,
            method,
            lambda path, *args, real=real, **kw: read.append(path.name) or real(path, *args, **kw),
        )
    warned = OperatorWarnings()
    with caplog.at_level(logging.WARNING, logger="bot.policy.prompt_safety"):
        for seed in range(10):
            plan_request(
                RenderRequest("<lora:__artists__:1> " * 40, seed=seed),
                (),
                tmp_path,
                installed_loras=lambda: ["ink"],
                warned=warned,
            )
    [line] = [record.getMessage() for record in caplog.records]
    assert line.startswith("Wildcard file artists.txt names ")
    assert line.endswith(" more") and line.count("'artist-") == 3
    assert "artists.txt" in read and "other.txt" not in read


def test_a_broken_wildcard_file_is_logged_once_not_at_each_refusal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "style.txt").write_text("__missing__\n", encoding="utf-8")
    warned = OperatorWarnings()
    with caplog.at_level(logging.WARNING, logger="bot.policy.prompt_safety"):
        for seed in range(5):
            with pytest.raises(UserError, match="`__style__` is broken"):
                plan_request(
                    RenderRequest("a cat, __style__", seed=seed), (), tmp_path, warned=warned
                )
            with pytest.raises(UserError, match="`__style__` is broken"):
                explain_prompt("a cat, __style__", "", None, tmp_path, warned)
    assert [record.getMessage() for record in caplog.records] == [
        "A wildcard file names __missing__, which is no wildcard: style.txt"
    ]


def test_a_broken_wildcard_is_blamed_on_the_file_whose_line_names_it(tmp_path: Path) -> None:
    """Only the file of the wildcard that drew ``__missing__``, not every file mentioning it
    (a comment, an unused wildcard)."""
    (tmp_path / "style.txt").write_text("__missing__\n", encoding="utf-8")
    (tmp_path / "old.txt").write_text("# __missing__ was removed\nplain\n", encoding="utf-8")
    (tmp_path / "unused.txt").write_text("__missing__\n", encoding="utf-8")
    with pytest.raises(UserError) as refused:
        plan_request(RenderRequest("a cat, __style__", seed=1), (), tmp_path)
    assert "style" in str(refused.value)
    assert "old" not in str(refused.value) and "unused" not in str(refused.value)


@pytest.mark.parametrize("values", ["<lora:{fa|fb}:1>\nplain\n", "<lora:{fa|fb}:1>\n"])
@pytest.mark.parametrize("seed", range(6))
def test_a_lora_drawn_by_n_dollar_dollar_from_a_value_with_choices_is_the_file_s(
    tmp_path: Path, values: str, seed: int
) -> None:
    """``{2$$__w__}`` draws the file's value as ``__w__`` does, its ``{fa|fb}`` drawn in it:
    the LoRA the drawn text names is the file's (ignored, not installed), at every seed, not
    the member's (refused as typed)."""
    (tmp_path / "w.txt").write_text(values, encoding="utf-8")
    for prompt in ("a cat, __w__", "a cat, {2$$__w__}", "a cat, {2$$, $$__w__}"):
        planned = plan_request(
            RenderRequest(prompt, seed=seed),
            (),
            tmp_path,
            installed_loras=lambda: ["ink"],
        )
        assert planned.options[APPLIED_LORAS_OPTION] == []


def test_the_separator_the_member_typed_between_drawn_values_is_no_value_drawn(
    tmp_path: Path,
) -> None:
    """A tag in ``{2$$<sep>$$__w__}``'s separator is the member's: refused as typed."""
    (tmp_path / "w.txt").write_text("cat\ndog\n", encoding="utf-8")
    with pytest.raises(UserError, match="x1"):
        plan_request(
            RenderRequest("{2$$ <lora:x1:1> $$__w__}", seed=1),
            (),
            tmp_path,
            installed_loras=lambda: ["ink"],
        )
