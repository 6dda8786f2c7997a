"""Wildcards and dynamic prompts, on a temporary wildcards folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.prompts import (
    NestingError,
    PromptError,
    UnknownWildcardError,
    WildcardLibrary,
    WildcardRecursionError,
    expand_prompt,
)


@pytest.fixture
def library(tmp_path: Path) -> WildcardLibrary:
    (tmp_path / "color.txt").write_text("red\n# a comment\nblue\n\ngreen\n", encoding="utf-8")
    (tmp_path / "animals").mkdir()
    (tmp_path / "animals" / "pet.txt").write_text("cat\ndog\n", encoding="utf-8")
    (tmp_path / "looping.txt").write_text("more __looping__\n", encoding="utf-8")
    (tmp_path / "ping.txt").write_text("__pong__\n", encoding="utf-8")
    (tmp_path / "pong.txt").write_text("__ping__\n", encoding="utf-8")
    (tmp_path / "webui.txt").write_text("[red|blue] hair\n", encoding="utf-8")
    (tmp_path / "places.yaml").write_text(
        "places:\n  city:\n    - paris\n    - rome\n", encoding="utf-8"
    )
    (tmp_path / "moods.json").write_text('{"moods": ["calm", "wild"]}', encoding="utf-8")
    return WildcardLibrary(tmp_path)


def texts(template: str, seed: int, library: WildcardLibrary | None, count: int = 1) -> list[str]:
    return [e.text for e in expand_prompt(template, seed, library, count=count)]


def test_wildcards_from_files_folders_and_collections(library: WildcardLibrary) -> None:
    for seed in range(20):
        color, pet, city, mood = texts(
            "__color__ __animals/pet__ __places/city__ __moods__", seed, library
        )[0].split()
        assert color in {"red", "blue", "green"}
        assert pet in {"cat", "dog"} and city in {"paris", "rome"} and mood in {"calm", "wild"}
    assert {"color", "animals/pet", "places/city", "moods"} <= set(library.names())


def test_same_seed_same_text_and_batch_uses_seed_plus_index(library: WildcardLibrary) -> None:
    template = "{a|b|c|d|e|f|g|h} __color__ {2$$w|x|y|z} {0.5::p|2::q}"
    first = texts(template, 1234, library, count=4)
    assert first == texts(template, 1234, library, count=4)
    assert first[1:] == texts(template, 1235, library, count=3)
    assert len(set(texts(template, seed, library)[0] for seed in range(40))) > 5


def test_variants_cover_all_options() -> None:
    seen = {texts("{a|b|c}", seed, None)[0] for seed in range(60)}
    assert seen == {"a", "b", "c"}
    two = texts("{2$$a|b|c}", 3, None)[0].split(",")
    assert len(two) == 2 and len(set(two)) == 2


def test_expansion_returns_template_and_text(library: WildcardLibrary) -> None:
    expansion = expand_prompt("a __animals/pet__", 9, library)[0]
    assert expansion.template == "a __animals/pet__"
    assert expansion.text in {"a cat", "a dog"} and expansion.seed == 9


def test_unknown_wildcard_suggests_closest(library: WildcardLibrary) -> None:
    with pytest.raises(UnknownWildcardError) as caught:
        expand_prompt("__colour__", 1, library)
    assert caught.value.name == "colour"
    assert "unknown wildcard __colour__: did you mean __color__?" in str(caught.value)


def test_self_including_wildcards_stop_at_depth_limit(library: WildcardLibrary) -> None:
    with pytest.raises(WildcardRecursionError, match="__looping__ -> __looping__"):
        expand_prompt("__looping__", 1, library)
    with pytest.raises(WildcardRecursionError, match="__ping__ -> __pong__ -> __ping__"):
        expand_prompt("__ping__", 1, library)


@pytest.mark.parametrize(
    "prompt",
    [
        "a [b|c] (x:1.2) <lora:foo:0.5> [d:e:0.5] \\(esc\\)",
        "#1 best, 100% $5 deal",
        "long_hair, a __ b, snake_case__name",
        "a } b",
        "[a|b] and [c:d:3]",
    ],
)
def test_web_ui_syntax_survives_expansion(prompt: str, library: WildcardLibrary) -> None:
    assert texts(prompt, 5, library) == [prompt]


def test_web_ui_alternation_inside_variants_and_values(library: WildcardLibrary) -> None:
    assert {texts("{x|[b|c]}", seed, library)[0] for seed in range(30)} == {"x", "[b|c]"}
    assert {texts("[a|{b|c}]", seed, library)[0] for seed in range(30)} == {"[a|b]", "[a|c]"}
    assert texts("__webui__", 1, library) == ["[red|blue] hair"]


def test_malformed_braces_are_kept_with_a_warning() -> None:
    expansion = expand_prompt("a {b c", 1)[0]
    assert expansion.text == "a {b c"
    # In plain words, naming where: never the parser's own grammar message.
    assert expansion.warnings == (
        "a '{' has no matching '}' (at '{b c'); the text is used as typed",
    )
    [unclosed] = expand_prompt("{a|{b} c", 1)[0].warnings
    assert unclosed == "a '{' has no matching '}' (at '{a|{b} c'); the text is used as typed"


def test_without_library_wildcards_stay_and_warn() -> None:
    expansion = expand_prompt("__color__ {x|x}", 1)[0]
    assert expansion.text == "__color__ x"
    assert "no wildcards folder" in expansion.warnings[0]


def test_braces_nested_too_deep_are_refused_in_prompts_and_values(tmp_path: Path) -> None:
    (tmp_path / "deep.txt").write_text("{" * 11 + "a" + "}" * 11 + "\n", encoding="utf-8")
    library = WildcardLibrary(tmp_path)
    assert texts("{" * 10 + "a" + "}" * 10, 1, library) == ["a"]
    with pytest.raises(NestingError, match=r"the prompt nests \{ \} braces 39 deep; at most 10"):
        expand_prompt("{" * 39 + "a|b" + "}" * 39, 1, library)
    with pytest.raises(NestingError, match=r"a value of __deep__ nests \{ \} braces 11"):
        expand_prompt("__deep__", 1, library)


def test_expansion_stops_at_its_limits(tmp_path: Path) -> None:
    (tmp_path / "dot.txt").write_text(".\n", encoding="utf-8")
    (tmp_path / "many.txt").write_text("__dot__" * 1200 + "\n", encoding="utf-8")
    (tmp_path / "huge.txt").write_text("word " * 5000 + "\n", encoding="utf-8")
    library = WildcardLibrary(tmp_path)
    with pytest.raises(PromptError, match="expand more than 1000 times"):
        expand_prompt("__many__", 1, library)
    with pytest.raises(PromptError, match="more than 16,000 characters"):
        expand_prompt("__huge__", 1, library)
    with pytest.raises(PromptError, match="more than 16,000 characters"):
        expand_prompt("{x|x} " + "a" * 17_000, 1, library)


def test_a_wildcard_that_climbs_out_of_the_folder_is_unknown_and_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``__../x__`` reads nothing outside the folder, and the member's text stays out of the
    logs (dynamicprompts would log it, with a traceback, for every such name)."""
    (tmp_path / "secret.txt").write_text("outside\n", encoding="utf-8")
    (tmp_path / "wildcards").mkdir()
    library = WildcardLibrary(tmp_path / "wildcards")
    caplog.set_level("DEBUG")
    for name in ("../secret", "animals/../../secret", "..", "**/../secret"):
        with pytest.raises(UnknownWildcardError):
            expand_prompt(f"a __{name}__ cat", 1, library)
    assert not [record for record in caplog.records if "secret" in record.getMessage()]
    assert not [record for record in caplog.records if record.exc_info]
