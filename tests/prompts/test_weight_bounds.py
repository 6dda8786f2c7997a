"""Every weight a prompt gives (emphasis, AND, LoRA) is refused outside -100..100, NaN and
infinity included, naming the range: past it the picture came out black and was charged. So
are the weights the engine adds up: a LoRA tagged more than once, and the AND parts' (without
their signs). A LoRA's only where the engine applies the prompt's LoRAs."""

from __future__ import annotations

import functools
import json
import operator

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bot.policy.prompt_safety import plan_request
from bot.user_errors import UserError
from inference.face_options import FIX_FACES_PROMPT
from inference.passes.jobs import ImageJob, OwnRequest, image_jobs
from inference.prompts import PromptError, build_plan, explain
from inference.prompts.weights import MAX_WEIGHT
from inference.types import APPLIED_LORAS_OPTION, RenderInputError, RenderRequest

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
@example(weight="500", place="emphasis")
@example(weight="-100.5", place="negative emphasis")
def test_a_weight_is_refused_exactly_outside_the_range(weight: str, place: str) -> None:
    prompt = PLACES[place].format(weight)
    negative = f"(blurry:{weight})" if place == "negative emphasis" else ""
    if -MAX_WEIGHT <= float(weight) <= MAX_WEIGHT:
        # Strict JSON (no NaN, no Infinity), as for the weight of a tag the engine ignores.
        result = explain(f"{prompt} <a:x:nan> <hypernet:y:-1e999>", negative, seed=1)
        assert json.loads(json.dumps(result, allow_nan=False))["extra_networks"][-2:] == [
            {"kind": "a", "name": "x", "weight": None},
            {"kind": "hypernet", "name": "y", "weight": None},
        ]
    else:
        with pytest.raises(PromptError, match=RANGE_REFUSAL) as refused:
            explain(prompt, negative, seed=1)
        if "emphasis" in place:  # one bracket gives it: told as typed
            which, piece = ("negative prompt", "blurry") if negative else ("prompt", "red")
            assert str(refused.value) == (
                f"the {which}'s weight of {piece!r} is {weight}; {RANGE_REFUSAL}"
            )


@pytest.mark.parametrize("weight", ["nan", "inf", "-inf", "1e9", "-1e9", "1e400"])
def test_a_lora_weight_that_is_no_finite_number_in_range_is_refused(weight: str) -> None:
    with pytest.raises(
        PromptError, match=rf"^the weight of <lora:x> in the prompt is .*; {RANGE_REFUSAL}$"
    ):
        explain(f"a cat <lora:x:{weight}>", seed=1)


def test_nested_brackets_are_judged_by_the_weight_they_multiply_to() -> None:
    # 1.1 ** 48 is 97.0, 1.1 ** 49 is 106.7; (a:100) inside (a:100) is 10,000; ((a:-100)) -110.
    explain("(" * 48 + "a" + ")" * 48, seed=1)
    explain("((a:500):0.1)", seed=1)  # 50: only the product counts
    for prompt, product in (
        ("(" * 49 + "a", repr(functools.reduce(operator.mul, [1.1] * 49, 1.0))),
        ("((a:100):100)", "10000.0"),
        ("((a:-100))", repr(-100 * 1.1)),
        ("[(a:500)]", repr(500 / 1.1)),
        ("(b (a:500))", repr(500 * 1.1)),
    ):
        with pytest.raises(PromptError) as refused:
            explain(prompt, seed=1)
        assert str(refused.value) == (
            f"the prompt's weight of 'a' is {product} (its brackets multiplied); {RANGE_REFUSAL}"
        )


@pytest.mark.parametrize(
    ("prompt", "told"),
    [
        ("a (cat:500)", "'cat' is 500"),
        ("a (cat: -0500.50 ) dog", "'cat' is -0500.50"),
        ("(a:1) (b:1e3) (c:+101.)", "'c' is +101."),  # 1e3 is no weight: ":1e3" stays text
        ("(a:200) [b", "'a' is 200"),  # the unclosed "[" weighs only what follows it
        ("(wide " + "x" * 50 + ":101)", repr("wide " + "x" * 34 + "…") + " is 101"),
    ],
)
def test_a_weight_one_bracket_gives_is_told_as_typed(prompt: str, told: str) -> None:
    with pytest.raises(PromptError) as refused:
        explain(prompt, seed=1)
    assert str(refused.value) == f"the prompt's weight of {told}; {RANGE_REFUSAL}"


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
        build_plan("a face <lora:x:te=2:unet=-5e2>", seed=1)
    assert str(refused.value) == (
        f"the UNet weight of <lora:x> in the prompt is -5e2; {RANGE_REFUSAL}"
    )


@pytest.mark.parametrize("mode", ["txt2img", "img2img", "inpaint"])
def test_only_a_prompt_whose_loras_the_engine_applies_has_their_weights_checked(
    mode: str,
) -> None:
    """A fix-faces prompt's LoRA tags, and /fix-faces' and the upscales' (their jobs apply no
    LoRA: ``inference.passes.faces``, ``.upscale``), are removed and do nothing; the prompt's
    in every mode that applies them (``applies_networks``)."""
    creative = {"upscale_factor": 2, "upscale_mode": "creative"}
    faces_prompt = {FIX_FACES_PROMPT: "a face <lora:x:500>"}
    for request in (
        RenderRequest("a cat", seed=1, mode=mode, options=faces_prompt),
        RenderRequest("a cat <lora:x:1:-500>", seed=1, mode="upscale", options=creative),
        RenderRequest("a cat" + " <lora:x:60>" * 2, seed=1, mode="faces"),
    ):
        assert plan_request(request, (), None).options[APPLIED_LORAS_OPTION] == []
    # The engine's own plan of a pass's prompt (the faces pass's, a tile's): its job's LoRAs
    # are its ``loras``, none here.
    face = ImageJob("a face <lora:x:500>", "", 1, None, 0.0, own_request=OwnRequest()).plan(
        20, None
    )
    assert face.loras() == [] and face.extra_networks[0].weight == 500
    # The prompt whose LoRAs the mode applies: refused at admission and by the engine.
    imagine = RenderRequest("a cat <lora:x:500>", seed=1, mode=mode)
    told = f"the weight of <lora:x> in the prompt is 500; {RANGE_REFUSAL}"
    with pytest.raises(UserError, match=f"^{told}; fix the prompt"):
        plan_request(imagine, (), None)
    with pytest.raises(RenderInputError, match=f"^{told}$"):
        image_jobs(imagine, None, ["x"], [])


def test_explain_writes_a_weight_no_finite_number_as_null_naming_it_in_a_warning() -> None:
    result = explain("a cat <a:x:nan> <lyco:y:1e999> <a:z>", seed=1)
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert result["extra_networks"] == [
        {"kind": "a", "name": "x", "weight": None},
        {"kind": "lyco", "name": "y", "weight": None},
        {"kind": "a", "name": "z", "weight": 1.0},
    ]
    assert result["warnings"][-2:] == [
        "<a:x> weight 'nan' is no finite number: written as null",
        "<lyco:y> weight '1e999' is no finite number: written as null",
    ]


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
