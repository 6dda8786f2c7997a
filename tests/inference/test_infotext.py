from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from sd_parsers import ParserManager

from inference.infotext import (
    MAX_JSON_DEPTH,
    InfotextError,
    format_infotext,
    infotext_from_png,
    parse_infotext,
    parse_parameters,
    png_with_infotext,
)

# Written by hand in the layout the web UI puts in its PNGs.
WEB_UI_SAMPLE = (
    "masterpiece, (best quality:1.2), a castle on a hill, <lora:detail:0.6>\n"
    "Negative prompt: lowres, bad anatomy,\nworst quality\n"
    "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 3960000142, "
    "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, "
    "Denoising strength: 0.45, Hires upscale: 2, Hires upscaler: Latent, "
    'Lora hashes: "detail: 62b0bd5e1e6c", Version: v1.6.0'
)


def test_parse_web_ui_sample() -> None:
    prompt, negative, params = parse_infotext(WEB_UI_SAMPLE)
    assert prompt == "masterpiece, (best quality:1.2), a castle on a hill, <lora:detail:0.6>"
    assert negative == "lowres, bad anatomy,\nworst quality"
    assert params["Steps"] == 28
    assert params["Sampler"] == "DPM++ 2M Karras"
    assert params["CFG scale"] == 6.5
    assert params["Seed"] == 3960000142
    assert params["Size"] == "512x768"
    assert params["Model hash"] == "6ce0161689"
    assert params["Lora hashes"] == "detail: 62b0bd5e1e6c"
    assert params["Version"] == "v1.6.0"


# More hand-written samples in web UI layouts: hires fix, no negative, quoted values.
MORE_SAMPLES = [
    (
        "portrait of a knight, intricate armor\n"
        "Steps: 30, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 512x512, "
        "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.7, "
        "Hires upscale: 2, Hires steps: 15, Hires upscaler: Latent",
        "portrait of a knight, intricate armor",
        "",
        {"Seed": 1234, "Hires upscale": 2, "Hires steps": 15, "Hires upscaler": "Latent"},
    ),
    (
        "a cat\nNegative prompt: dog\n"
        "Steps: 20, Sampler: DPM++ SDE Karras, CFG scale: 5.5, Seed: 7, Size: 768x512, "
        'Variation seed: 99, Variation seed strength: 0.25, TI hashes: "easyneg: c74b4e810b03"',
        "a cat",
        "dog",
        {
            "CFG scale": 5.5,
            "Variation seed": 99,
            "Variation seed strength": 0.25,
            "TI hashes": "easyneg: c74b4e810b03",
        },
    ),
]


@pytest.mark.parametrize(("text", "prompt", "negative", "expected"), MORE_SAMPLES)
def test_parse_more_web_ui_samples(
    text: str, prompt: str, negative: str, expected: dict[str, object]
) -> None:
    parsed_prompt, parsed_negative, params = parse_infotext(text)
    assert (parsed_prompt, parsed_negative) == (prompt, negative)
    assert {key: params[key] for key in expected} == expected


def test_parse_without_negative_or_parameters() -> None:
    assert parse_infotext("just a prompt") == ("just a prompt", "", {})
    # A last line with fewer than three pairs is still prompt, as in the web UI.
    assert parse_infotext("a cat\nstyle: ink") == ("a cat\nstyle: ink", "", {})


def test_format_matches_web_ui_layout() -> None:
    text = format_infotext(
        "a cat",
        "",
        {
            "Steps": 20,
            "Sampler": "Euler a",
            "CFG scale": 7.0,
            "Seed": 1,
            "Size": "512x512",
            "Model hash": "abcdef1234",
            "Model": "name",
            "Variation seed": None,
        },
    )
    assert text == (
        "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, "
        "Model hash: abcdef1234, Model: name"
    )


@pytest.mark.parametrize(
    "value", ["plain", "with, comma", "key: colon", 'starts "quoted', "multi\nline", "ünïcödé 猫"]
)
def test_round_trip(value: str) -> None:
    params = {"Steps": 4, "CFG scale": 7.5, "Seed": 42, "Model": value, "Denoising strength": 0.3}
    text = format_infotext("a (cat:1.1),\nsecond line", "neg, ugly", params)
    assert parse_infotext(text) == ("a (cat:1.1),\nsecond line", "neg, ugly", params)


def test_a_prompt_holding_the_negative_label_reads_back_whole() -> None:
    """The words inside a prompt line are prompt (the web UI splits only at a line that
    starts with them); only a text of one line (a paste that lost its breaks) is split there."""
    prompt = "a cat, masterpiece Negative prompt: blurry, lowres"
    params = {"Steps": 4, "Sampler": "Euler a", "CFG scale": 7, "Seed": 5}
    written = format_infotext(prompt, "", params)
    assert parse_infotext(written) == (prompt, "", params)
    assert parse_infotext(written.replace("\n", " ")) == (
        "a cat, masterpiece",
        "blurry, lowres",
        params,
    )


def test_unbalanced_quote_is_not_parameters() -> None:
    assert parse_parameters('Steps: 1, Model: "open, Seed: 2') is None


def test_png_chunk_read_back_by_us_and_sd_parsers() -> None:
    infotext = format_infotext(
        "a cat",
        "blurry",
        {"Steps": 20, "Sampler": "Euler a", "CFG scale": 7, "Seed": 99, "Size": "64x64"},
    )
    png = png_with_infotext(Image.new("RGB", (64, 64), "red"), infotext)
    assert infotext_from_png(png) == infotext
    info = ParserManager().parse(Image.open(io.BytesIO(png)))
    assert info is not None
    assert [p.value for p in info.prompts] == ["a cat"]
    assert [p.value for p in info.negative_prompts] == ["blurry"]
    sampler = info.samplers[0]
    assert sampler.name == "Euler a"
    assert sampler.parameters["seed"] == "99"


def test_non_latin1_text_survives_png() -> None:
    png = png_with_infotext(Image.new("RGB", (8, 8)), "猫 on a mat")
    assert infotext_from_png(png) == "猫 on a mat"
    assert infotext_from_png(png_with_infotext(Image.new("RGB", (8, 8)), "x")) == "x"


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ('"a \\ud800 face"', "half a surrogate pair"),  # an escape for no character
        ("[" * 3000 + "]" * 3000, "more than 20 deep"),  # the decoder would recurse 3,000 deep
        ('{"a": ' * 21 + "1" + "}" * 21, "more than 20 deep"),
    ],
    ids=["surrogate", "deep list", "deep object"],
)
def test_an_unreadable_quoted_value_is_refused_naming_its_key(value: str, named: str) -> None:
    with pytest.raises(InfotextError, match=f"'Hashes'.*{named}"):
        parse_infotext(f"a cat\nSteps: 2, Seed: 5, Hashes: {value}")


def test_json_nested_within_the_limit_and_long_digits_are_read() -> None:
    nested = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    _, _, params = parse_infotext(f"a cat\nSteps: 2, Seed: {'7' * 5000}, Hashes: {nested}")
    assert params["Hashes"] == nested
    assert params["Seed"] == "7" * 5000  # past Python's int conversion limit: text


_VALUE_PIECES = st.lists(
    st.sampled_from(['"', "[", "]", "{", "}", "\\", "\\ud800", "\\u0041", ",", ":", "a"]),
    max_size=8,
).map("".join)
# A prompt, then parameters whose values, bare or quoted, are made of the pieces JSON reads.
_INFOTEXTS = st.builds(
    lambda prompt, values: (
        f"{prompt}\nSteps: 2, Seed: 5, "
        + ", ".join(f"Key {index}: {value}" for index, value in enumerate(values))
    ),
    st.text(max_size=5),
    st.lists(_VALUE_PIECES | _VALUE_PIECES.map(lambda text: f'"{text}"'), max_size=4),
)


@given(_INFOTEXTS)
def test_the_reader_raises_only_its_own_error_and_reads_only_utf8(text: str) -> None:
    try:
        prompt, negative, params = parse_infotext(text)
    except InfotextError:
        return
    for read in (prompt, negative, *params, *map(str, params.values())):
        read.encode("utf-8")  # what a PNG's infotext and Discord must carry
