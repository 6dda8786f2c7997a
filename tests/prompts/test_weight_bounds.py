"""Every weight a prompt gives (emphasis, AND, LoRA) is refused outside -100..100, NaN and
infinity included, naming the range: past it the picture came out black and was charged. So
are the weights the engine adds up: a LoRA tagged more than once, and the AND parts' (without
their signs)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference.prompts import PromptError, build_plan, explain
from inference.prompts.weights import MAX_WEIGHT

RANGE_REFUSAL = "a weight must be a number between -100 and 100"
# Weights as members write them: decimals of any size, and runs of nines past a float's range.
WEIGHT_TEXTS = st.one_of(
    st.floats(min_value=-1e4, max_value=1e4).map(lambda weight: f"{weight:f}"),
    st.sampled_from(["100", "-100", "100.0000001", "-100.0000001", "0", "-0.5", "1.5"]),
    st.integers(1, 400).map(lambda digits: "9" * digits),
)
PLACES = {
    "emphasis": "a (red:{}) cat",
    "negative emphasis": "a cat",  # the weight goes in the negative prompt
    "AND": "a cat:0 AND a dog:{}",  # the first part weighs 0: the parts' sum is the weight
    "lora": "a cat <lora:x:{}>",
    "lora unet": "a cat <lora:x:1:{}>",
}


@given(weight=WEIGHT_TEXTS, place=st.sampled_from(sorted(PLACES)))
def test_a_weight_is_refused_exactly_outside_the_range(weight: str, place: str) -> None:
    prompt = PLACES[place].format(weight)
    negative = f"(blurry:{weight})" if place == "negative emphasis" else ""
    if -MAX_WEIGHT <= float(weight) <= MAX_WEIGHT:
        # Strict JSON (no NaN, no Infinity), as for the weight of a tag the engine ignores.
        result = explain(f"{prompt} <a:x:nan> <hypernet:y:-1e999>", negative, seed=1)
        assert json.loads(json.dumps(result, allow_nan=False))["extra_networks"][-2:] == [
            {"kind": "a", "name": "x", "weight": "nan"},
            {"kind": "hypernet", "name": "y", "weight": "-1e999"},
        ]
    else:
        with pytest.raises(PromptError, match=RANGE_REFUSAL):
            explain(prompt, negative, seed=1)


@pytest.mark.parametrize("weight", ["nan", "inf", "-inf", "1e9", "-1e9", "1e400"])
def test_a_lora_weight_that_is_no_finite_number_in_range_is_refused(weight: str) -> None:
    with pytest.raises(
        PromptError, match=rf"^the weight of <lora:x> in the prompt is .*; {RANGE_REFUSAL}$"
    ):
        explain(f"a cat <lora:x:{weight}>", seed=1)


def test_nested_brackets_are_judged_by_the_weight_they_multiply_to() -> None:
    # 1.1 ** 48 is 97.0, 1.1 ** 49 is 106.7; (a:100) inside (a:100) is 10,000; ((a:-100)) -110.
    explain("(" * 48 + "a" + ")" * 48, seed=1)
    for prompt in ("(" * 49 + "a", "((a:100):100)", "((a:-100))"):
        with pytest.raises(PromptError, match=rf"^the prompt's weight of 'a' is .*{RANGE_REFUSAL}"):
            explain(prompt, seed=1)


def test_the_refusal_names_the_part_and_the_weight_as_typed() -> None:
    with pytest.raises(PromptError) as refused:
        explain("a cat AND a dog:" + "9" * 400, seed=1)
    assert str(refused.value) == (
        f"the weight of the prompt's AND part 'a dog' is {'9' * 400}; {RANGE_REFUSAL}"
    )


def test_only_a_network_the_engine_applies_has_its_weight_checked_told_as_typed() -> None:
    # Discord writes an animated emoji <a:name:id>: ignored with a warning, as any unknown kind.
    emoji = build_plan("a cat <a:party_parrot:123456789012345678>", seed=1)
    assert emoji.warnings == ("<a:party_parrot> ignored: unknown extra network 'a'",)
    assert build_plan("a cat <hypernet:x:500>", seed=1).warnings == (
        "<hypernet:x> ignored: hypernet networks are not supported",
    )
    # A LoRA not installed (where that is known: the engine) does nothing: a typo's warning.
    typo = build_plan("a cat <lora:typo:500>", seed=1, loras=["detail"])
    assert typo.warnings == ("unknown LoRA 'typo' ignored",)
    # Installed, or not known to be missing (admission, whose broker worker may hold it).
    for loras in (["typo"], None):
        with pytest.raises(PromptError) as refused:
            build_plan("a cat <lora:typo:500>", seed=1, loras=loras)
        assert str(refused.value) == (
            f"the weight of <lora:typo> in the prompt is 500; {RANGE_REFUSAL}"
        )
    with pytest.raises(PromptError) as refused:
        build_plan("a face <lora:x:te=2:unet=-5e2>", seed=1, name="the fix-faces prompt")
    assert str(refused.value) == (
        f"the UNet weight of <lora:x> in the fix-faces prompt is -5e2; {RANGE_REFUSAL}"
    )


@given(
    weights=st.lists(st.integers(-60, 60), min_size=2, max_size=8),
    unet=st.booleans(),
    installed=st.sampled_from([None, ["x"]]),
)
def test_a_lora_tagged_again_is_judged_by_the_weights_it_adds_up_to(
    weights: list[int], unet: bool, installed: list[str] | None
) -> None:
    """The engine applies one LoRA per name at its tags' summed weights (``merged_loras``):
    thirty ``<lora:x:100>`` are one LoRA at 3,000."""
    tags = " ".join(f"<lora:x:1:{weight}>" if unet else f"<lora:x:{weight}>" for weight in weights)
    prompt = f"a cat {tags} <lora:other:100>"
    if -MAX_WEIGHT <= sum(weights) <= MAX_WEIGHT:
        build_plan(prompt, seed=1, loras=installed)
    else:
        with pytest.raises(PromptError) as refused:
            build_plan(prompt, seed=1, loras=installed)
        assert str(refused.value) == (
            f"the {'UNet weight' if unet else 'weight'} of <lora:x> in the prompt is "
            f"{float(sum(weights))!r} (it is tagged {len(weights)} times: the engine adds up "
            f"their weights); {RANGE_REFUSAL}"
        )


def test_a_lora_the_engine_does_not_apply_is_not_added_up() -> None:
    # Not installed where that is known: dropped with its warning, whatever its tags.
    assert build_plan("a cat" + " <lora:typo:60>" * 2, seed=1, loras=["x"]).warnings == (
        "unknown LoRA 'typo' ignored",
        "unknown LoRA 'typo' ignored",
    )


@given(weights=st.lists(st.integers(-60, 60), min_size=2, max_size=16))
def test_and_parts_are_judged_by_their_weights_added_up_without_their_signs(
    weights: list[int],
) -> None:
    """The engine adds each part's pull scaled by its weight: fifteen parts of 100 pull as one
    of 1,500 would, and a negative part pulls away as far."""
    prompt = " AND ".join(f"part {index}:{weight}" for index, weight in enumerate(weights))
    total = sum(abs(weight) for weight in weights)
    if total <= MAX_WEIGHT:
        explain(prompt, seed=1)
    else:
        with pytest.raises(PromptError) as refused:
            explain(prompt, seed=1)
        assert str(refused.value) == (
            f"the weights of the prompt's {len(weights)} AND parts add up to {float(total)!r}, "
            "each counted without its sign (a part without one weighs 1); together they may be "
            "at most 100"
        )
