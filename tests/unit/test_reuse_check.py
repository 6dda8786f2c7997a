"""A stored picture is reused only under the server's banned words of now: what it was
conditioned on (typed and rendered) is read as a new prompt's text is, and the refusal never
names the word."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from bot.policy.moderation import (
    BANNED_SINCE,
    STORED_TOO_LONG,
    ConditioningTexts,
    check_banned_since,
    conditioning_texts,
    find_banned_rendering,
)
from bot.policy.prompt_safety import plan_request
from bot.user_errors import Reason, UserError
from inference.face_options import FIX_FACES_PROMPT
from inference.infotext import format_infotext
from inference.prompts import renderings
from inference.prompts.stopping import PlanStopped, stopping_when
from inference.types import RenderRequest


@pytest.mark.parametrize(
    "texts",
    [
        # a choice, written wide with a zero-width space
        ConditioningTexts(("a [dog|Ｃａ\u200bt] in the rain",)),
        ConditioningTexts(("a [dog:cat:0.5] in the rain",)),  # the later side of a schedule
        ConditioningTexts(("a (red_cat2:1.3)",)),  # a run of letters, as CLIP reads it
        ConditioningTexts(("a dog", "a cat, drawn from the wildcard")),  # only as rendered
        # The engine reads a negative prompt's extra-network tag as words, as submit does.
        ConditioningTexts(("a dog",), ("<lora:cat:1>",)),
    ],
)
def test_a_word_banned_since_refuses_the_picture_without_naming_it(
    texts: ConditioningTexts,
) -> None:
    with pytest.raises(UserError) as refused:
        check_banned_since(texts, ["cat"])
    assert str(refused.value) == BANNED_SINCE and "cat" not in str(refused.value).lower()
    assert refused.value.reason is Reason.BANNED_WORD


@pytest.mark.parametrize(
    ("texts", "banned"),
    [
        # inside a word; a prompt's extra-network tag (applied, not read)
        (ConditioningTexts(("a concatenated dog <lora:cat:0.8>",), ("blurry",)), ["cat"]),
        (ConditioningTexts(("a cat",)), []),  # nothing banned
    ],
)
def test_pictures_that_meet_the_servers_words_are_reused(
    texts: ConditioningTexts, banned: list[str]
) -> None:
    check_banned_since(texts, banned)


def drawn_texts(request: dict[str, Any], infotexts: list[str]) -> ConditioningTexts:
    """A stored job's texts as its banned-word read has them: fix-faces prompts drawn."""
    return conditioning_texts(request, infotexts).with_fix_faces_drawn()


def test_the_texts_read_are_the_typed_prompts_and_each_pictures_rendered_ones() -> None:
    request = {
        "prompt": "a __animal__",
        "negative_prompt": "blurry",
        "options": {"fix_faces_prompt": "a smiling face"},
    }
    infotexts = [
        format_infotext("a cat", "blurry", {"Steps": 2, "Sampler": "Euler", "Seed": 1}),
        format_infotext("a dog", "blurry", {"Steps": 2, "Sampler": "Euler", "Seed": 2}),
    ]
    assert drawn_texts(request, infotexts) == ConditioningTexts(
        ("a __animal__", "a smiling face", "a cat", "a dog"), ("blurry",)
    )


def picture_infotext(seed: int) -> str:
    return format_infotext("a portrait", "", {"Steps": 2, "Sampler": "Euler", "Seed": seed})


def test_a_fix_faces_prompt_is_read_as_each_picture_drew_it(tmp_path: Path) -> None:
    """The faces pass renders the fix-faces prompt as drawn where the job was planned, at each
    picture's seed: a word banned since in one picture's draw refuses it (/show, U1-U4)."""
    (tmp_path / "pet.txt").write_text("cat\n", encoding="utf-8")
    typed = "a {h|m}at with a __pet__"
    queued = plan_request(
        RenderRequest("a portrait", seed=1, count=2, options={FIX_FACES_PROMPT: typed}),
        banned_words=(),
        wildcards_dir=tmp_path,
    )
    request = json.loads(queued.to_json())  # as the journal stores it
    check_banned_since(conditioning_texts(request, []), ["cat"])  # "pet", as typed
    texts = conditioning_texts(request, [picture_infotext(1), picture_infotext(2)])
    assert {"a hat with a cat", "a mat with a cat"} <= set(texts.with_fix_faces_drawn().prompts)
    with pytest.raises(UserError, match=BANNED_SINCE):
        check_banned_since(texts, ["cat"])


@pytest.mark.parametrize("typed", ["a __pet__ ", " a __pet__"])
def test_a_padded_fix_faces_prompt_is_read_as_its_draw(tmp_path: Path, typed: str) -> None:
    """The engine trims the prompt (``FaceOptions``) and its draws are recorded by that text:
    the recheck reads the draw ("a cat"), not the wildcard as typed."""
    (tmp_path / "pet.txt").write_text("cat\n", encoding="utf-8")
    queued = plan_request(
        RenderRequest("a portrait", seed=1, options={FIX_FACES_PROMPT: typed}),
        banned_words=(),
        wildcards_dir=tmp_path,
    )
    texts = conditioning_texts(json.loads(queued.to_json()), [picture_infotext(1)])
    assert "a cat" in texts.with_fix_faces_drawn().prompts
    with pytest.raises(UserError, match=BANNED_SINCE):
        check_banned_since(texts, ["cat"])


def test_a_fix_faces_prompt_of_a_job_queued_before_draws_were_recorded_is_drawn_again() -> None:
    request = {"prompt": "a portrait", "options": {FIX_FACES_PROMPT: "a {c|h}at"}}
    assert drawn_texts(request, [picture_infotext(1)]).prompts[-1] == "a hat"
    with pytest.raises(UserError, match=BANNED_SINCE):
        check_banned_since(conditioning_texts(request, [picture_infotext(2)]), ["cat"])


def test_a_fix_faces_prompt_of_a_picture_past_32_bits_is_read_as_it_was_drawn(
    tmp_path: Path,
) -> None:
    """A batch past 2**32-1 renders and writes seed + i (4294967296 and up); the faces pass
    drew at that seed, and the recheck reads that draw, not the one of its low 32 bits."""
    (tmp_path / "pet.txt").write_text("".join(f"pet{n}\n" for n in range(40)), encoding="utf-8")
    options = {FIX_FACES_PROMPT: "a __pet__"}
    queued = plan_request(
        RenderRequest("a portrait", seed=2**32 - 1, count=4, options=options),
        banned_words=(),
        wildcards_dir=tmp_path,
    )
    request = json.loads(queued.to_json())
    drawn = [drawn_texts(request, [picture_infotext(seed)]).prompts[-1] for seed in range(3)]
    past = [drawn_texts(request, [picture_infotext(2**32 + n)]).prompts[-1] for n in range(3)]
    assert "a __pet__" not in past and past != drawn


def test_stored_texts_with_too_many_combinations_are_not_the_members_to_simplify() -> None:
    """They passed when typed (under the words of then): refused in the stored picture's own
    words, not "simplify it"."""
    with pytest.raises(UserError) as refused:
        check_banned_since(ConditioningTexts(("[a|b]" * 30,)), ["a much longer banned phrase"])
    assert str(refused.value) == STORED_TOO_LONG


def test_reading_for_banned_words_stops_once_nobody_waits() -> None:
    """Each part of a rendering is a checkpoint: a stored check past its budget frees its
    thread instead of reading 34 long texts on."""
    stop = threading.Event()
    stop.set()
    read = [renderings("a red boat, " * 50)]
    with pytest.raises(PlanStopped):
        stopping_when(stop, find_banned_rendering, read, ["zebra"])
