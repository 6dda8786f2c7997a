"""A prompt's inline flags are parsed once per request: the preset's name, the requests and
the style reference all read the same parse (it used to be three, two on the event loop)."""

from __future__ import annotations

import pytest

import bot.requests as requests_module
from bot.requests import (
    ImagineOptions,
    RequestError,
    build_request,
    build_requests,
    preset_named,
    style_reference_flags,
)
from inference.prompts import InlineFlags


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The prompts ``bot.requests`` parses, one entry per parse."""
    parsed: list[str] = []
    parse = requests_module.parse_inline_flags

    def counted(prompt: str) -> tuple[str, InlineFlags]:
        parsed.append(prompt)
        return parse(prompt)

    monkeypatch.setattr(requests_module, "parse_inline_flags", counted)
    return parsed


def test_every_reader_of_one_request_shares_one_parse(parses: list[str]) -> None:
    options = ImagineOptions("a fox --seed 5 --ar 3:2 --sref 123456789012345678 --repeat 2")
    assert preset_named(options) is None
    requests = build_requests(options)
    assert style_reference_flags(options) == ("123456789012345678", None)
    assert [request.seed for request in requests] == [5, 6]
    assert requests[0].options["aspect"] == "3:2" and requests[0].prompt == "a fox"
    assert parses == [options.prompt]


def test_a_preset_given_as_an_option_is_read_without_parsing(parses: list[str]) -> None:
    options = ImagineOptions("a fox --preset other", preset="mine")
    assert preset_named(options) == "mine"
    assert parses == []
    build_request(options)
    assert parses == [options.prompt]


def test_a_bad_flag_is_refused_by_every_reader(parses: list[str]) -> None:
    options = ImagineOptions("a fox --seed many")
    for read in (preset_named, build_requests, style_reference_flags):
        with pytest.raises(RequestError, match="bad value 'many' for --seed"):
            read(options)
    # A failed parse is not kept: each reader refuses it again, with the same sentence.
    assert len(parses) == 3


def test_a_prompt_too_long_is_refused_before_it_is_parsed(parses: list[str]) -> None:
    options = ImagineOptions("a fox " * 1000 + "--seed 5")
    with pytest.raises(RequestError, match="at most 4,000 are allowed"):
        preset_named(options)
    assert parses == []
