"""AND composition, extra networks and embeddings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference.prompts import (
    ExtraNetwork,
    extract_extra_networks,
    find_embeddings,
    split_subprompts,
)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a cat", [("a cat", 1.0)]),
        ("a cat:1.5", [("a cat", 1.5)]),
        ("a cat : 1.5 ", [("a cat", 1.5)]),
        ("a cat AND a dog", [("a cat", 1.0), (" a dog", 1.0)]),
        ("a cat:1.2 AND a dog:0.5", [("a cat", 1.2), (" a dog", 0.5)]),
        ("a cat AND a dog:-1", [("a cat", 1.0), (" a dog", -1.0)]),
        ("a cat and a dog", [("a cat and a dog", 1.0)]),
        ("a catAND dog", [("a catAND dog", 1.0)]),
        ("a,AND,b", [("a,", 1.0), (",b", 1.0)]),
        ("(cat:1.5)", [("(cat:1.5)", 1.0)]),
        ("x:2.", [("x", 2.0)]),
        ("x:.5", [("x", 0.5)]),
        ("AND", [("", 1.0), ("", 1.0)]),
    ],
)
def test_split_subprompts(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert [(s.text, s.weight) for s in split_subprompts(prompt)] == expected


@pytest.mark.parametrize(
    ("prompt", "text", "network"),
    [
        ("a <lora:x:0.8> b", "a  b", ExtraNetwork("lora", "x", 0.8, 0.8)),
        ("<lora:x>", "", ExtraNetwork("lora", "x", 1.0, 1.0)),
        ("<lora:x:0.5:0.2>", "", ExtraNetwork("lora", "x", 0.5, 0.2)),
        ("<lora:x:te=0.3:unet=0.7>", "", ExtraNetwork("lora", "x", 0.3, 0.7)),
        ("<lora:x:-1>", "", ExtraNetwork("lora", "x", -1.0, -1.0)),
        ("<lora:my-lora v2:1>", "", ExtraNetwork("lora", "my-lora v2", 1.0, 1.0)),
    ],
)
def test_lora_tags(prompt: str, text: str, network: ExtraNetwork) -> None:
    assert extract_extra_networks(prompt) == (text, [network], [])


def test_unknown_lora_is_a_warning_with_suggestion() -> None:
    text, networks, warnings = extract_extra_networks("<lora:detial:1>", ["detail", "style"])
    assert text == "" and networks[0].name == "detial"
    assert warnings == ["unknown LoRA 'detial' ignored (did you mean detail?)"]


def test_unsupported_and_unknown_kinds_are_removed_with_warnings() -> None:
    text, networks, warnings = extract_extra_networks("a <lyco:x:1> <hypernet:h:0.5> <foo:y>")
    assert text == "a   "
    assert [n.kind for n in networks] == ["lyco", "hypernet", "foo"]
    assert len(warnings) == 3 and "not supported" in warnings[0] and "unknown" in warnings[2]


def test_bad_lora_weight_warns_and_uses_one() -> None:
    _, networks, warnings = extract_extra_networks("<lora:x:strong>")
    assert networks == [ExtraNetwork("lora", "x", 1.0, 1.0)]
    assert "'strong' is not a number" in warnings[0]


@pytest.mark.parametrize(
    ("prompt", "network", "used"),
    [
        ("<lora:x:0.5:dyn=8>", ExtraNetwork("lora", "x", 0.5, 0.5), "weight 0.5"),
        ("<lora:x:0.5:0.2:8>", ExtraNetwork("lora", "x", 0.5, 0.2), "weight 0.5, UNet 0.2"),
        (
            "<lora:x:0.5:unet=0.2:dyn=8>",
            ExtraNetwork("lora", "x", 0.5, 0.2),
            "weight 0.5, UNet 0.2",
        ),
        ("<lora:x:dyn=8>", ExtraNetwork("lora", "x", 1.0, 1.0), "weight 1"),
    ],
)
def test_lora_dynamic_rank_is_read_and_told(prompt: str, network: ExtraNetwork, used: str) -> None:
    """The web UI's ``dyn`` (named, or the fourth value): the weights are read around it, and
    one warning says it is not supported and names the weights used (before, ``dyn=8`` was
    read as the UNet weight and told "using 1.0" while 0.5 was used; the others were silent)."""
    text, networks, warnings = extract_extra_networks(prompt, ["x"])
    assert (text, networks) == ("", [network])
    assert warnings == [
        f"<lora:x> dyn=8: dynamic rank is not supported here; applied at its full rank ({used})"
    ]


def test_dyn_is_told_only_for_a_lora_that_is_applied() -> None:
    # An unknown LoRA is ignored: no sentence also says it is "applied at its full rank".
    _, _, warnings = extract_extra_networks("a fox <lora:typo:0.5:dyn=8>", ["real"])
    assert warnings == ["unknown LoRA 'typo' ignored"]
    _, _, warnings = extract_extra_networks("<lyco:real:0.5:dyn=8>", ["real"])
    assert warnings == ["<lyco:real> ignored: lyco networks are not supported"]


def test_a_bad_unet_weight_names_the_weight_used() -> None:
    _, networks, warnings = extract_extra_networks("<lora:x:0.5:strong>")
    assert networks == [ExtraNetwork("lora", "x", 0.5, 0.5)]
    assert warnings == ["<lora:x> UNet weight 'strong' is not a number; using 0.5"]


_WEIGHT = st.floats(-4, 4, allow_nan=False).map(lambda value: round(value, 2))


_SETTINGS = ("te", "unet", "dyn")


@given(
    te=_WEIGHT,
    unet=_WEIGHT,
    dyn=st.integers(1, 256),
    positional=st.integers(0, 3),
    order=st.permutations(_SETTINGS),
)
def test_lora_settings_read_alike_positional_or_named(
    te: float, unet: float, dyn: int, positional: int, order: list[str]
) -> None:
    """The first ``positional`` of te, unet, dyn given by position, the others by name in
    any order: the same weights, and one warning about dyn."""
    values = {"te": te, "unet": unet, "dyn": dyn}
    args = [str(values[key]) for key in _SETTINGS[:positional]]
    args += [f"{key}={values[key]}" for key in order if key not in _SETTINGS[:positional]]
    _, networks, warnings = extract_extra_networks(f"<lora:x:{':'.join(args)}>", ["x"])
    assert networks == [ExtraNetwork("lora", "x", te, unet)]
    assert len(warnings) == 1 and f"dyn={dyn}:" in warnings[0]


def test_not_a_tag_stays() -> None:
    assert extract_extra_networks("a <b> c <:x>") == ("a <b> c <:x>", [], [])


def test_find_embeddings_whole_words_case_insensitive() -> None:
    found = find_embeddings(
        "EasyNegative, bad-hands-5, notbadhands",
        ["easynegative", "bad-hands-5", "badhands", "absent"],
    )
    assert found == ["bad-hands-5", "easynegative"]
