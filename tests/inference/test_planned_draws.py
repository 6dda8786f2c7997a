"""The engine plans a job's prompts with the texts the bot drew (``PlannedDraws``), not with its
own wildcards folder; a job queued before the bot sent them still reads the folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bot.jobs.broker.wire import max_job_bytes
from bot.policy.prompt_safety import plan_request
from bot.user_errors import UserError
from inference.compare import COMPARE_OPTION, cell_requests
from inference.engine import Engine
from inference.face_options import FIX_FACES_PROMPT
from inference.passes import jobs
from inference.passes.jobs import image_jobs
from inference.prompts import (
    NOT_PLANNED,
    WILDCARD_DRAWS_OPTION,
    PlannedDraws,
    PromptPlan,
    WildcardLibrary,
    build_plan,
)
from inference.types import RenderInputError, RenderRequest

EMPTY: dict[str, list[object]] = {"texts": [], "draws": []}


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """The bot's wildcards folder and a worker's other one."""
    bot, worker = tmp_path / "bot", tmp_path / "worker"
    for folder, pets in ((bot, "cat\ndog\nbird\nfish\nfrog\n"), (worker, "snake\n")):
        folder.mkdir()
        (folder / "pet.txt").write_text(pets, encoding="utf-8")
        (folder / "colour.txt").write_text("red\nblue\n", encoding="utf-8")
    return bot, worker


def texts(request: RenderRequest, folder: Path) -> list[tuple[str, str]]:
    jobs = image_jobs(request, WildcardLibrary(folder), (), ())
    return [(job.prompt, job.negative_prompt) for job in jobs]


@pytest.mark.parametrize(
    "typed",
    [
        RenderRequest("a __pet__, {sunny|rainy}", "__colour__", seed=3, count=4),
        # --chaos reweights each picture's prompt before its wildcards are drawn.
        RenderRequest("a __pet__, on grass, at noon", seed=8, count=3, options={"chaos": 80}),
    ],
)
def test_each_picture_renders_the_bot_s_draw_whatever_the_worker_s_folder(
    folders: tuple[Path, Path], typed: RenderRequest
) -> None:
    bot, worker = folders
    checked = plan_request(typed, (), bot)
    legacy = dataclasses.replace(checked, options=typed.options)  # as the bot's own folder draws
    assert texts(checked, worker) == texts(legacy, bot)
    assert texts(legacy, worker) != texts(legacy, bot)  # the folders do differ


def test_a_comparison_s_cells_and_the_fix_faces_prompt_are_drawn_by_the_bot(
    folders: tuple[Path, Path],
) -> None:
    bot, worker = folders
    cells = [{"seed": 1}, {"seed": 2}, {"prompt": "a __colour__ __pet__"}]
    typed = RenderRequest(
        "a __pet__",
        seed=5,
        count=len(cells),
        options={COMPARE_OPTION: {"cells": cells}, FIX_FACES_PROMPT: "__colour__ eyes"},
    )
    checked = plan_request(typed, (), bot)
    for cell in cell_requests(checked):
        legacy = dataclasses.replace(cell, options=typed.options)
        assert texts(cell, worker) == texts(legacy, bot)
    drawn = PlannedDraws.of(checked.options)
    assert drawn is not None
    assert "__colour__ eyes" in {template for template, _ in drawn.drawn}


def test_a_prompt_the_bot_did_not_plan_is_said_so_and_no_folder_is_read(
    folders: tuple[Path, Path],
) -> None:
    _, worker = folders
    # A template the bot drew nothing for (a picture's own prompt, read by a pass from its
    # infotext): the worker's folder is not read for it either.
    request = RenderRequest("a __pet__", seed=9, options={WILDCARD_DRAWS_OPTION: EMPTY})
    [job] = image_jobs(request, WildcardLibrary(worker), (), ())
    assert (job.prompt, job.warnings) == ("a __pet__", (NOT_PLANNED,))


@pytest.mark.parametrize(
    ("typed", "bot_has_folder", "warning"),
    [
        ("a __pet__", False, "no wildcards folder is configured"),
        ("a __pet__ {cat", True, "a '{' has no matching '}' (at '{cat')"),
    ],
)
def test_the_bot_s_warnings_reach_the_picture_and_nothing_else(
    folders: tuple[Path, Path], typed: str, bot_has_folder: bool, warning: str
) -> None:
    bot, worker = folders
    checked = plan_request(RenderRequest(typed, seed=4), (), bot if bot_has_folder else None)
    [job] = image_jobs(checked, WildcardLibrary(worker), (), ())
    assert job.prompt == typed
    assert [warning in text for text in job.warnings] == [True]


@pytest.mark.parametrize(
    "option",
    [
        [["a", "1", "b"]],
        {"texts": ["a"], "draws": [[0, 1, 1, []]]},  # no text 1
        {"texts": ["a", 2], "draws": []},
    ],
)
def test_a_malformed_option_is_refused_naming_its_shape(
    folders: tuple[Path, Path], option: object
) -> None:
    request = RenderRequest("a __pet__", options={WILDCARD_DRAWS_OPTION: option})
    with pytest.raises(RenderInputError, match=r"wildcard_draws must be \{\"texts\""):
        image_jobs(request, WildcardLibrary(folders[1]), (), ())


def test_a_long_prompt_drawn_for_many_pictures_is_carried_once() -> None:
    prompt = "\N{GRINNING FACE}" * 3990 + " {a|b}"
    cells = [{"seed": seed} for seed in range(16)]
    typed = RenderRequest(prompt, seed=1, count=16, options={COMPARE_OPTION: {"cells": cells}})
    checked = plan_request(typed, (), None)
    # The prompt, and its two draws, once each: not once per cell.
    assert len(checked.to_json()) < 5 * len(typed.to_json())


def test_a_job_too_large_for_the_broker_is_refused_at_admission() -> None:
    prompt = "\N{GRINNING FACE}" * 3970
    # Up to 16 distinct draws of each, 16 KiB apiece in UTF-8: ~340 KiB in all.
    drawn = (" {a|b}{c|d}{e|f}{g|h}", " {i|j}{k|l}{m|n}{o|p}")
    typed = RenderRequest(prompt + drawn[0], prompt + drawn[1], seed=1, count=16)
    default_nats = max_job_bytes(2**20)
    with pytest.raises(UserError, match=r"KiB once encoded .* at most 321 KiB .* the prompt"):
        plan_request(typed, (), None, max_job_bytes=default_nats)
    plan_request(typed, (), None)  # no broker: the in-process queue has no such limit
    # The cap follows the server's max_payload, with the inline pictures it leaves room for.
    small = RenderRequest(prompt, prompt, seed=1, count=4)  # nothing drawn: ~32 KiB
    plan_request(small, (), None, max_job_bytes=default_nats)
    with pytest.raises(UserError, match=r"at most 22 KiB"):
        plan_request(small, (), None, max_job_bytes=max_job_bytes(128 * 1024))


def test_a_job_made_large_by_its_wildcards_says_so(tmp_path: Path) -> None:
    (tmp_path / "style.txt").write_text("\n".join(f"detailed{i}, " * 40 for i in range(30)))
    prompt = " ".join(["__style__"] * 30)
    cells = [{"seed": seed} for seed in range(16)]
    options = {COMPARE_OPTION: {"cells": cells}}
    typed = RenderRequest(prompt, f"{prompt}, ugly", seed=1, count=16, options=options)
    with pytest.raises(UserError, match="use fewer or shorter wildcards") as refused:
        plan_request(typed, (), tmp_path, max_job_bytes=max_job_bytes(2**20))
    assert "Shorten the prompt" not in str(refused.value)


def test_a_creative_upscale_s_tiles_render_the_picture_s_checked_draw(
    engine: Engine, folders: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot, _ = folders
    source = tmp_path / "source.png"
    gradient = np.linspace(0, 255, 40 * 24 * 3).reshape(24, 40, 3).astype(np.uint8)
    Image.fromarray(gradient).save(source)
    options = {"upscale_factor": 4, "upscale_mode": "creative", "upscale_strength": 0.5}
    typed = RenderRequest(
        "a __pet__ {sunny|rainy|foggy|windy}",
        seed=3,
        steps=4,
        mode="upscale",
        init_image=str(source),
        options=options,
    )
    checked = plan_request(typed, (), bot)
    drawn = PlannedDraws.of(checked.options)
    assert drawn is not None
    checked_text = drawn.expansion(typed.prompt, 3).text
    read: list[tuple[str, tuple[str, ...]]] = []

    def reading(*args: Any, **kwargs: Any) -> PromptPlan:
        plan = build_plan(*args, **kwargs)
        read.append((plan.prompt, plan.warnings))
        return plan

    monkeypatch.setattr(jobs, "build_plan", reading)
    engine.render(checked)
    # Six tiles (160x96 in 64-pixel tiles), each of them the text the bot checked.
    assert read == [(checked_text, ())] * 6
