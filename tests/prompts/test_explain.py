"""``explain`` JSON and the ``PromptPlan`` the engine consumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference.prompts import InlineFlagError, PromptError, build_plan, explain

# The top-level keys of ``easel explain``'s JSON, as the interface contract lists them.
EXPLAIN_KEYS = {"prompt", "negative_prompt", "seed", "subprompts", "extra_networks", "warnings"}


def test_explain_structure() -> None:
    result = explain(
        "a (cat:1.2) <lora:x:0.8> [dog:fox:0.5] AND sky:0.5", "ugly", seed=123, steps=10
    )
    assert set(result) == EXPLAIN_KEYS
    assert result["prompt"] == "a (cat:1.2) <lora:x:0.8> [dog:fox:0.5] AND sky:0.5"
    assert result["negative_prompt"] == "ugly" and result["seed"] == 123
    first, second = result["subprompts"]
    assert first["weight"] == 1.0 and second["weight"] == 0.5
    assert first["schedule"] == [
        {
            "until_step": 5,
            "text": "a (cat:1.2)  dog",
            "chunks": [["a ", 1.0], ["cat", 1.2], ["  dog", 1.0]],
            "tokens": 3,
        },
        {
            "until_step": 10,
            "text": "a (cat:1.2)  fox",
            "chunks": [["a ", 1.0], ["cat", 1.2], ["  fox", 1.0]],
            "tokens": 3,
        },
    ]
    assert second["schedule"] == [
        {"until_step": 10, "text": " sky", "chunks": [[" sky", 1.0]], "tokens": 1}
    ]
    assert result["extra_networks"] == [{"kind": "lora", "name": "x", "weight": 0.8}]
    assert result["warnings"] == []
    assert json.loads(json.dumps(result)) == result


def test_break_and_weight_without_and() -> None:
    result = explain("a cat BREAK a dog:1.5", seed=1)
    (only,) = result["subprompts"]
    assert only["weight"] == 1.5
    assert only["schedule"][0]["chunks"] == [["a cat", 1.0], ["BREAK", -1], ["a dog", 1.0]]
    assert only["schedule"][0]["until_step"] == 20


def test_flags_feed_steps_seed_and_negative() -> None:
    result = explain("a [b|c] --steps 3 --seed 9 --no cars", "blurry")
    assert result["seed"] == 9 and result["negative_prompt"] == "blurry, cars"
    assert [s["until_step"] for s in result["subprompts"][0]["schedule"]] == [1, 2, 3]
    overridden = explain("a --seed 9", seed=4)
    assert overridden["seed"] == 4
    assert overridden["warnings"] == ["the seed option (4) overrides the prompt's flag (9)"]


def test_wildcards_and_reproducible_seed(tmp_path: Path) -> None:
    (tmp_path / "animal.txt").write_text("cat\ndog\nfox\nowl\n", encoding="utf-8")
    first = explain("photo of __animal__", seed=77, wildcards_dir=tmp_path)
    assert first == explain("photo of __animal__", seed=77, wildcards_dir=tmp_path)
    assert first["prompt"] in {f"photo of {a}" for a in ("cat", "dog", "fox", "owl")}


def test_unknown_lora_and_embeddings() -> None:
    plan = build_plan(
        "<lora:detial:1> easynegative cat",
        "<lora:x:1>",
        seed=1,
        loras=["detail"],
        embeddings=["easynegative"],
    )
    assert plan.embeddings_used == ("easynegative",)
    assert plan.loras(["detail"]) == []
    assert any("did you mean detail" in w for w in plan.warnings)
    assert any("negative prompt are read as plain text" in w for w in plan.warnings)


def test_plan_for_engine() -> None:
    plan = build_plan("[a|b] cat", "[ugly:bad:2]", seed=5, steps=4)
    assert plan.steps == 4 and len(plan.subprompts) == 1
    assert [plan.subprompts[0].at_step(s).text for s in (1, 2, 3, 4)] == [
        "a cat",
        "b cat",
        "a cat",
        "b cat",
    ]
    assert [e.text for e in plan.negative.schedule] == ["ugly", "bad"]
    assert plan.subprompts[0].at_step(1).chunks[0].token_ids == (320, 2368)


def test_random_seed_when_none() -> None:
    assert 0 <= explain("a cat")["seed"] < 2**32


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"prompt": "a --foo"}, InlineFlagError, "unknown flag --foo"),
        # Every request's range and sentence (``inference.limits``), not a ceiling of its own.
        (
            {"prompt": "a", "steps": 0},
            PromptError,
            "steps must be a whole number between 1 and 150, got 0",
        ),
        (
            {"prompt": "a", "steps": 151},
            PromptError,
            "steps must be a whole number between 1 and 150, got 151",
        ),
        (
            {"prompt": "a", "seed": 2**63},
            PromptError,
            "seed must be a whole number between 0 and 9223372036854775807, or -1 for a random "
            "seed, got 9223372036854775808",
        ),
    ],
)
def test_bad_input_errors(kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        explain(**kwargs)  # type: ignore[arg-type]
