"""Attention parsing, expected values from the web UI wiki's documented behaviour."""

from __future__ import annotations

import pytest

from inference.prompts import parse_attention

R = 1.1
S = 1 / 1.1


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("", [("", 1.0)]),
        ("a cat", [("a cat", 1.0)]),
        ("(cat)", [("cat", R)]),
        ("((cat))", [("cat", 1.0 * R * R)]),
        ("(((cat)))", [("cat", 1.0 * R * R * R)]),
        ("[cat]", [("cat", S)]),
        ("[[cat]]", [("cat", 1.0 * S * S)]),
        ("(cat:1.5)", [("cat", 1.5)]),
        ("(cat:0.25)", [("cat", 0.25)]),
        ("(cat: 1.5 )", [("cat", 1.5)]),
        ("(cat:.5)", [("cat", 0.5)]),
        ("(cat:-1)", [("cat", -1.0)]),
        ("a (cat:1.5) b", [("a ", 1.0), ("cat", 1.5), (" b", 1.0)]),
        ("((cat:1.5))", [("cat", 1.5 * R)]),
        ("[(cat:1.5)]", [("cat", 1.5 * S)]),
        ("(a [b] c)", [("a ", R), ("b", R * S), (" c", R)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", R)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("\\\\", [("\\", 1.0)]),
        ("a \\: b", [("a : b", 1.0)]),
        ("a\\b", [("ab", 1.0)]),
        ("\\(x\\)", [("(x)", 1.0)]),
        ("(x\\))", [("x)", R)]),
        ("a (b", [("a ", 1.0), ("b", R)]),
        ("a [b", [("a ", 1.0), ("b", S)]),
        ("a ((b) c", [("a ", 1.0), ("b", 1.0 * R * R), (" c", R)]),
        ("a ) b", [("a ) b", 1.0)]),
        ("a ] b", [("a ] b", 1.0)]),
        ("a : b", [("a : b", 1.0)]),
        ("(a:b)", [("a:b", R)]),
        ("(x:1.2.3)", [("x:1.2.3", R)]),
        ("()", [("", 1.0)]),
        ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
        ("aBREAK b", [("aBREAK b", 1.0)]),
        ("a break b", [("a break b", 1.0)]),
        ("a BREAK, b", [("a", 1.0), ("BREAK", -1.0), (", b", 1.0)]),
        ("(a BREAK b)", [("a", R), ("BREAK", -1.0 * R), ("b", R)]),
        ("(a)(b)", [("ab", R)]),
        ("(a)((b))", [("a", R), ("b", 1.0 * R * R)]),
        ("猫 (ネコ:1.3) émoji 🎉", [("猫 ", 1.0), ("ネコ", 1.3), (" émoji 🎉", 1.0)]),
    ],
)
def test_parse_attention(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert parse_attention(prompt) == expected


def test_wiki_example_multiplies_nested_weights_innermost_first() -> None:
    parsed = parse_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")
    assert parsed == [
        ("a ", 1.0),
        ("house", 1.3 * R * R),
        (" ", R),
        ("on", 1.0),
        (" a ", R),
        ("hill", 0.5 * R),
        (", sun, ", R),
        ("sky", 1.0 * R * R * R * R),
        (".", R),
    ]


def test_long_prompt_is_parsed_whole() -> None:
    prompt = "(masterpiece:1.2), best quality, " * 200
    parsed = parse_attention(prompt)
    assert "".join(text for text, _ in parsed) == prompt.replace("(", "").replace(":1.2)", "")
    assert {weight for _, weight in parsed} == {1.2, 1.0}
