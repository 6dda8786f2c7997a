"""The chunks a prompt may make: each is one more text-encoder pass and 77 more keys in every
cross-attention of every UNet step, and BREAK (or wildcards) can make hundreds."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from bot.policy.prompt_safety import plan_request
from bot.user_errors import UserError
from inference.img2img_steps import Img2ImgSteps
from inference.passes.jobs import image_jobs
from inference.prompts import PromptError, build_plan
from inference.prompts import plan as prompt_plan
from inference.prompts.plan import MAX_PROMPT_CHUNKS, MAX_SCHEDULED_CHUNKS
from inference.prompts.tokenizer import CHUNK_LENGTH
from inference.types import Mode, RenderInputError, RenderRequest


def chunks_of(count: int) -> str:
    """A prompt of ``count`` chunks: BREAK closes each."""
    return " BREAK ".join(f"a cat number {index}" for index in range(count))


def refusal(name: str, count: int) -> str:
    return re.escape(
        f"{name} makes {count} chunks of {CHUNK_LENGTH} tokens after wildcards (each BREAK "
        f"starts a new one); at most {MAX_PROMPT_CHUNKS} are allowed: shorten it or use "
        "fewer BREAKs"
    )


def test_a_prompt_at_the_cap_plans() -> None:
    plan = build_plan(chunks_of(MAX_PROMPT_CHUNKS), chunks_of(MAX_PROMPT_CHUNKS), seed=1)
    (part,) = plan.subprompts
    assert len(part.schedule[0].chunks) == MAX_PROMPT_CHUNKS
    assert len(plan.negative.schedule[0].chunks) == MAX_PROMPT_CHUNKS


@pytest.mark.parametrize(
    ("prompt", "negative", "name", "count"),
    [
        (chunks_of(MAX_PROMPT_CHUNKS + 1), "", "the prompt", MAX_PROMPT_CHUNKS + 1),
        ("a cat", chunks_of(400), "the negative prompt", 400),
        # AND parts count together: each is conditioned on at every step.
        (f"{chunks_of(76)} AND {chunks_of(75)}", "", "the prompt", 151),
        # An edited text counts at its longest.
        (f"[{chunks_of(10)}:{chunks_of(160)}:5]", "", "the prompt", 160),
    ],
    ids=["prompt", "negative", "and-parts", "edited"],
)
def test_over_the_cap_is_refused_naming_the_count_and_the_limit(
    prompt: str, negative: str, name: str, count: int
) -> None:
    with pytest.raises(PromptError, match=f"^{refusal(name, count)}$"):
        build_plan(prompt, negative, seed=1, steps=20)


def test_the_cap_counts_after_wildcards_and_refuses_before_queueing(tmp_path: Path) -> None:
    # A short prompt whose wildcard expands past the cap: refused by the planner (the member
    # told, nothing queued); at the cap it is accepted.
    (tmp_path / "scenes.txt").write_text(chunks_of(MAX_PROMPT_CHUNKS + 20), encoding="utf-8")
    request = RenderRequest("__scenes__", seed=1, steps=4)
    with pytest.raises(UserError, match=f"^{refusal('the prompt', MAX_PROMPT_CHUNKS + 20)}"):
        plan_request(request, set(), tmp_path)
    (tmp_path / "scenes.txt").write_text(chunks_of(MAX_PROMPT_CHUNKS), encoding="utf-8")
    assert plan_request(request, set(), tmp_path).seed == request.seed  # not refused


def edited(chunks: int, edits: int) -> str:
    """A prompt of ``chunks`` chunks whose last one is edited ``edits`` times over the steps:
    ``edits + 1`` distinct texts, each encoded on its own."""
    return f"{chunks_of(chunks - 1)} BREAK " + " ".join(
        f"[red{k}:blue{k}:{2 * k}]" for k in range(1, edits + 1)
    )


def test_the_chunks_of_every_distinct_text_over_the_steps_are_capped_together() -> None:
    # Four texts of 150 chunks: at the cap.
    at_cap = build_plan(edited(MAX_PROMPT_CHUNKS, 3), "", seed=1, steps=20)
    (part,) = at_cap.subprompts
    assert sum(len(entry.chunks) for entry in part.schedule) == MAX_SCHEDULED_CHUNKS
    # A fifth: each text within the cap per text, the sum over it.
    over = 5 * MAX_PROMPT_CHUNKS
    with pytest.raises(PromptError, match=f"^the prompt makes at least {over} chunks of 75 "):
        build_plan(edited(MAX_PROMPT_CHUNKS, 4), "", seed=1, steps=20)
    # The review's prompt: 110 BREAKs edited one step after another, 150 steps.
    many = " BREAK ".join(f"[a{index}:b{index}:{index + 1}]" for index in range(110))
    with pytest.raises(PromptError, match=rf"at most {MAX_SCHEDULED_CHUNKS} are allowed"):
        build_plan(many, "", seed=1, steps=150)


def test_a_pass_of_more_steps_refuses_the_prompt_with_the_sentence_not_an_internal_error() -> None:
    # Edits at steps 10, 20, ... 50: the request's 8 steps see one text; a hires pass of 60
    # steps sees six, 900 chunks (refused at the fifth, 750). The member reads why, not
    # "internal error (PromptError)".
    prompt = f"{chunks_of(MAX_PROMPT_CHUNKS - 1)} BREAK " + " ".join(
        f"[red{k}:blue{k}:{10 * k}]" for k in range(1, 6)
    )
    [job] = image_jobs(RenderRequest(prompt, seed=1, steps=8), None, [], [])
    with pytest.raises(RenderInputError, match=r"^the prompt makes at least 750 chunks of 75 "):
        job.plan(60, None)


def test_a_hires_pass_of_more_steps_is_planned_at_submit_and_stops_at_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # ~14 chunks whose alternations of 2, 3, 5 and 7 make a new text at each step: the
    # request's 20 steps are within the cap, a hires pass of 150 (2,100 chunks) is over it.
    prompt = " ".join(["cat"] * 985) + " [a|b] [c|d|e] [f|g|h|i|j] [k|l|m|n|o|p|q]"
    request = RenderRequest(prompt, seed=1, steps=20, options={"hires_scale": 2.0})
    plan_request(request, (), None)
    weighted: list[str] = []
    chunks = prompt_plan._weighted_chunks

    def counted(text: str, tokenizer: Any) -> Any:
        weighted.append(text)
        return chunks(text, tokenizer)

    monkeypatch.setattr(prompt_plan, "_weighted_chunks", counted)
    hires = {"hires_scale": 2.0, "hires_steps": 150}
    with pytest.raises(UserError, match=r"^the prompt makes at least 60\d chunks of 75 tokens"):
        plan_request(dataclasses.replace(request, options=hires), (), None)
    # The request's 20 texts, then the pass's refused as its count passed the cap (~44
    # texts), not after all its 150.
    assert 20 + 40 < len(weighted) < 20 + 60


def test_the_fix_faces_prompt_is_planned_at_the_faces_steps_only() -> None:
    # The review's case: alternations of 2, 3, 5 and 7 make a new text at each step, over
    # the cap at a hires pass of 150 steps, within it at the faces pass's (the request's 30).
    alternating = " ".join(["cat"] * 300) + " [a|b] [c|d|e] [f|g|h|i|j] [k|l|m|n|o|p|q]"
    options = {
        "hires_scale": 2.0,
        "hires_steps": 150,
        "fix_faces": True,
        "fix_faces_prompt": alternating,
    }
    request = RenderRequest("a portrait", "blurry", seed=5, steps=30, options=options)
    assert plan_request(request, ("boat",), None).seed == request.seed  # not refused
    # The prompt itself is planned at the hires pass's steps.
    as_prompt = dataclasses.replace(
        request, prompt=alternating, options=options | {"fix_faces_prompt": "a face"}
    )
    with pytest.raises(UserError, match=r"^the prompt makes at least 60\d chunks of 75 tokens"):
        plan_request(as_prompt, ("boat",), None)


def test_a_bad_hires_option_without_a_size_is_the_members_sentence() -> None:
    # /use-settings with pasted settings that name no size: never validated with one.
    request = RenderRequest(
        "a cat", seed=1, steps=20, options={"hires_scale": 2.0, "hires_steps": 999}
    )
    with pytest.raises(
        UserError, match=r"^hires steps must be from 0 \(same as steps\) to 150, got 999; "
    ):
        plan_request(request, (), None)


@pytest.mark.parametrize(
    ("mode", "options"),
    [
        ("img2img", {}),
        ("inpaint", {}),
        ("upscale", {"upscale_mode": "creative", "upscale_strength": 0.95}),
    ],
)
def test_a_pass_from_a_picture_is_planned_over_the_request_s_steps(
    mode: Mode, options: dict[str, object]
) -> None:
    # Edits at half and 70% of the steps, with alternations: within the cap over 24 steps,
    # over it over 23. A pass at denoising 0.95 runs 23 of the 24, but plans over all 24 (the
    # web UI's rule, the engine's since): not refused (it was, planned over the 23).
    def repeated(word: str) -> str:
        return " BREAK ".join([word] * 36)

    prompt = (
        f"[{repeated('apple')}:[{repeated('cherry')}:{repeated('date')}:0.7]:0.5] [x|y] [m|n|o]"
    )
    assert Img2ImgSteps.img2img(24, 0.95).run == 23
    build_plan(prompt, "", seed=1, steps=24)
    with pytest.raises(PromptError):
        build_plan(prompt, "", seed=1, steps=23)
    request = RenderRequest(
        prompt, seed=1, steps=24, mode=mode, denoising_strength=0.95, options=options
    )
    assert plan_request(request, (), None).seed == request.seed  # not refused


def test_a_second_order_sampler_is_planned_over_its_calls_at_submit() -> None:
    """Heun's plans count its 2 model calls a step, in admission as in the engine: a prompt
    over the cap only there is refused at submit, not on the device thread (X6's case: 150
    steps are within it, 300 calls are not)."""
    prompt = " ".join(["cat"] * 180) + " [a|b] [c|d|e] [f|g|h|i|j] [k|l|m|n|o|p|q]"
    euler = RenderRequest(prompt, seed=1, steps=150, sampler="Euler")
    plan_request(euler, (), None)
    assert len(image_jobs(euler, None, [], [])) == 1  # accepted
    heun = dataclasses.replace(euler, sampler="Heun Karras")
    with pytest.raises(UserError, match=r"^the prompt makes at least 60\d chunks of 75 tokens"):
        plan_request(heun, (), None)
    with pytest.raises(RenderInputError, match=r"^the prompt makes at least 60\d chunks "):
        image_jobs(heun, None, [], [])
