"""A pasted infotext as a request (bot.infotext_import), and the parser under it: what Easel
writes comes back as the same settings, other tools' forms are read, and what cannot be
honoured is said."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bot.infotext_import import (
    MAX_INFOTEXT_CHARS,
    NOT_HONOURED,
    Installed,
    request_from_infotext_text,
)
from bot.requests import RequestError
from inference.infotext import format_infotext, parse_infotext, web_ui_sampler_fields
from inference.samplers import SAMPLERS, SCHEDULE_TYPES, SamplerSpec, scheduler_spec
from inference.types import RenderInputError

TINY_HASH = "0123456789"
INSTALLED = Installed(
    models=["tiny", "other"],
    model_hash={"tiny": TINY_HASH, "other": "abcdefabcd"}.__getitem__,
    loras=["detail"],
    vaes=["clear-vae"],
    upscalers=["Lanczos", "tiny-esrgan-2x"],
    fallback_model="tiny",
)

# Civitai's "copy generation data": the web UI layout plus its own JSON fields.
CIVITAI = (
    "masterpiece, a lighthouse at dusk, <lora:detail:0.6>, <lora:missing-style:0.8>\n"
    "Negative prompt: lowres, watermark\n"
    "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 5.5, Seed: 1234567, "
    "Size: 512x768, Clip skip: 2, Created Date: 2024-05-01T10:00:00.0000000Z, "
    'Civitai resources: [{"type":"checkpoint","modelVersionId":128713,"modelName":"Dream"}], '
    'Hashes: {"model": "ABCDEFABCD", "lora:detail": "62b0bd5e1e6c"}, Model: DreamShaper, '
    "ADetailer model: face_yolov8n.pt, Hires upscale: 1.5, Hires upscaler: 4x-UltraSharp, "
    "Denoising strength: 0.45"
)


def imported(text: str) -> tuple[dict[str, object], list[str]]:
    result = request_from_infotext_text(text, INSTALLED)
    request = result.request
    fields = {
        "prompt": request.prompt,
        "negative": request.negative_prompt,
        "seed": request.seed,
        "steps": request.steps,
        "cfg": request.cfg_scale,
        "sampler": (request.sampler, request.schedule_type),
        "size": (request.width, request.height),
        "model": request.model,
        "variation": (request.variation_seed, request.variation_strength),
        "options": request.options,
    }
    assert [note for note in request.notes if note.startswith(NOT_HONOURED)] == [
        f"{NOT_HONOURED}: {sentence}" for sentence in result.unhonoured
    ]
    return fields, result.unhonoured


def test_civitai_form_is_read_and_what_cannot_be_honoured_is_named() -> None:
    fields, unhonoured = imported(CIVITAI)
    assert fields["prompt"] == (
        "masterpiece, a lighthouse at dusk, <lora:detail:0.6>, <lora:missing-style:0.8>"
    )
    assert fields["negative"] == "lowres, watermark"
    assert (fields["seed"], fields["steps"], fields["cfg"]) == (1234567, 30, 5.5)
    assert fields["sampler"] == ("DPM++ 2M", "Karras")
    assert fields["size"] == (512, 768)
    # Not installed by name, but Civitai's model hash matches an installed file.
    assert fields["model"] == "other"
    assert fields["options"] == {
        "clip_skip": 2,
        "hires_scale": 1.5,
        "hires_denoising": 0.45,
        "hires_upscaler": "Lanczos",
        "fix_faces": True,
    }
    assert unhonoured == [
        "hires upscaler '4x-UltraSharp' is not installed here; Lanczos is used instead",
        "ADetailer model face_yolov8n.pt: this server's face detector is used",
        "unknown LoRA 'missing-style' ignored",
        "noise source GPU (no RNG field): Easel draws noise on the CPU, as the web UI's "
        "'RNG: CPU' does, so the picture will differ",
    ]


def test_one_line_paste_whose_negative_ends_in_a_comma_keeps_its_prompt() -> None:
    # "a cat Negative prompt: ugly," glued to "Steps:" reads as one more parameter pair.
    text = "a cat Negative prompt: ugly, Steps: 12, Sampler: Euler a, CFG scale: 7, Seed: 5"
    fields, _ = imported(text)
    assert (fields["prompt"], fields["negative"], fields["steps"]) == ("a cat", "ugly,", 12)
    # A later key may name a negative prompt of its own.
    adetailer = "a cat\nNegative prompt: ugly\nSteps: 12, Seed: 5, ADetailer Negative prompt: x"
    assert parse_infotext(adetailer) == (
        "a cat",
        "ugly",
        {"Steps": 12, "Seed": 5, "ADetailer Negative prompt": "x"},
    )


def test_one_line_paste_unknown_sampler_and_missing_model() -> None:
    # Discord's text options drop line breaks.
    text = (
        "a cat Negative prompt: dog Steps: 12, Sampler: DPM++ 2M, Schedule type: Align Your Steps, "
        "CFG scale: 7, Seed: 5, Size: 4096x4096, Model hash: 1111111111, Model: sdxl-base, "
        "RNG: CPU, VAE: other-vae.safetensors, Emphasis: No norm"
    )
    fields, unhonoured = imported(text)
    assert (fields["prompt"], fields["negative"], fields["steps"]) == ("a cat", "dog", 12)
    assert (fields["sampler"], fields["size"], fields["model"]) == (
        ("DPM++ 2M", "Automatic"),
        (None, None),
        "tiny",
    )
    assert unhonoured == [
        "size '4096x4096': width must be a multiple of 8 between 64 and 2048; the model's "
        "native size is used instead",
        "schedule type 'Align Your Steps' is not available for DPM++ 2M here; the sampler's "
        "own schedule is used instead (the picture will differ)",
        "model 'sdxl-base' (hash 1111111111) is not installed here; 'tiny' is used instead",
        "VAE 'other-vae.safetensors' is not installed here; the model's own VAE is used",
        "not used here: Emphasis: No norm",
    ]


def test_a_vae_that_fits_only_the_missing_model_is_left_out_not_refused() -> None:
    """The picture's model is missing and "tiny" stands in: its VAE, of the picture's
    family, does not fit the stand-in, so it is dropped with a note; with the picture's own
    model installed the same mismatch is refused, as the render would refuse it."""
    refusing = dataclasses.replace(INSTALLED, vae_refusal=lambda request: "VAE does not fit")
    text = "a cat\nSteps: 12, Sampler: Euler, Seed: 5, Model: {model}, VAE: clear-vae.safetensors"
    stood_in = request_from_infotext_text(text.format(model="flux-dev"), refusing)
    assert "vae" not in stood_in.request.options and stood_in.request.model == "tiny"
    assert (
        "VAE 'clear-vae.safetensors' does not fit tiny, which stands in for the picture's; "
        "the model's own VAE is used"
    ) in stood_in.unhonoured
    with pytest.raises(RequestError, match="VAE does not fit"):
        request_from_infotext_text(text.format(model="tiny"), refusing)


def test_a_model_of_the_same_name_with_another_hash_is_named() -> None:
    text = "a cat\nSteps: 3, Sampler: Euler, Seed: 1, Model hash: 9999999999, Model: tiny, RNG: CPU"
    fields, unhonoured = imported(text)
    assert fields["model"] == "tiny"
    assert unhonoured == [
        f"model 'tiny' here has hash {TINY_HASH}, not 9999999999: a different file of that "
        "name, so the picture may differ"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("just a prompt", "no generation settings found"),
        ("Steps: 3, Sampler: Euler, Seed: 1", "carry no prompt"),
        ("x" * 4001 + "\nSteps: 3, Sampler: Euler, Seed: 1", "at most 4,000"),
        ("a\nNegative prompt: " + "y" * 4001 + "\nSteps: 3, Sampler: Euler, Seed: 1", "4,000"),
        ("a" * (MAX_INFOTEXT_CHARS + 1), "at most 16,000 are read"),
    ],
)
def test_what_cannot_be_rendered_is_refused(text: str, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        request_from_infotext_text(text, INSTALLED)


def _renderable(sampler: str, schedule_type: str) -> SamplerSpec | None:
    try:
        return scheduler_spec(sampler, schedule_type)
    except RenderInputError:
        return None


# Every (sampler, schedule type) pair Easel renders.
RENDERABLE = [
    (sampler, schedule)
    for sampler in SAMPLERS
    for schedule in SCHEDULE_TYPES
    if _renderable(sampler, schedule) is not None
]
PROMPT_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="<>[]{}()|\\:-"),
    min_size=1,
    max_size=60,
).filter(
    lambda text: text.strip() == text and "Negative prompt" not in text and "Steps" not in text
)
EASEL_SETTINGS = st.fixed_dictionaries(
    {
        "prompt": PROMPT_TEXT,
        "negative": st.one_of(st.just(""), PROMPT_TEXT),
        "steps": st.integers(1, 150),
        "cfg": st.sampled_from([1.0, 6.5, 7.0, 11.25, 30.0]),
        "seed": st.integers(0, 2**32 - 1),
        "size": st.tuples(st.integers(8, 256), st.integers(8, 256)).map(
            lambda pair: (pair[0] * 8, pair[1] * 8)
        ),
        "sampler": st.sampled_from(RENDERABLE),
        "clip_skip": st.integers(1, 12),
        "variation": st.one_of(
            st.none(), st.tuples(st.integers(0, 2**32 - 1), st.sampled_from([0.1, 0.5, 1.0]))
        ),
        "one_line": st.booleans(),
    }
)


@given(EASEL_SETTINGS)
@settings(max_examples=150, deadline=None)
def test_what_easel_writes_comes_back_as_the_same_settings(chosen: dict[str, object]) -> None:
    variation = chosen["variation"]
    assert variation is None or isinstance(variation, tuple)
    width, height = chosen["size"]  # type: ignore[misc]
    params = {
        "Steps": chosen["steps"],
        **web_ui_sampler_fields(*chosen["sampler"]),  # type: ignore[misc]
        "CFG scale": chosen["cfg"],
        "Seed": chosen["seed"],
        "Size": f"{width}x{height}",
        "Model hash": TINY_HASH,
        "Model": "tiny",
        "Variation seed": None if variation is None else variation[0],
        "Variation seed strength": None if variation is None else variation[1],
        "Clip skip": chosen["clip_skip"] if chosen["clip_skip"] != 1 else None,
        "RNG": "CPU",
        "Version": "Easel 0.1.0",
    }
    text = format_infotext(str(chosen["prompt"]), str(chosen["negative"]), params)
    if chosen["one_line"]:
        text = text.replace("\n", " ")
    fields, unhonoured = imported(text)
    assert unhonoured == []
    assert fields["prompt"] == chosen["prompt"] and fields["negative"] == chosen["negative"]
    assert (fields["steps"], fields["cfg"], fields["seed"]) == (
        chosen["steps"],
        chosen["cfg"],
        chosen["seed"],
    )
    # The same scheduler, whichever spelling: "DPM++ 2M Karras" reads back as DPM++ 2M + Karras.
    assert scheduler_spec(*fields["sampler"]) == scheduler_spec(*chosen["sampler"])  # type: ignore[misc]
    assert (fields["size"], fields["model"]) == ((width, height), "tiny")
    assert fields["variation"] == (variation or (None, 0.0))
    assert fields["options"] == (
        {"clip_skip": chosen["clip_skip"]} if chosen["clip_skip"] != 1 else {}
    )


# Pieces of real infotexts in any order: the parser's hard cases, more often than random text.
INFOTEXT_PIECES = st.lists(
    st.sampled_from(
        [
            "Steps: 3,",
            " Steps: 200, ",
            "Negative prompt:",
            "\n",
            "Sampler: Euler, ",
            "Schedule type: Karras",
            "Seed: -4,",
            'Lora hashes: "a: 1, b: 2"',
            '"',
            "{",
            '{"model": "0123456789"}',
            "Size: 64x64, ",
            "Model: tiny, ",
            "a cat",
            ":",
            ",",
            "<lora:detail:x>",
        ]
    ),
    max_size=30,
).map("".join)


@given(st.one_of(st.text(max_size=400), INFOTEXT_PIECES))
@settings(max_examples=300, deadline=None)
def test_any_text_is_read_or_refused_in_one_sentence(text: str) -> None:
    try:
        request_from_infotext_text(text, INSTALLED)
    except RequestError as error:
        assert "\n" not in str(error)


PARAMETER_LINE = st.lists(
    st.tuples(
        st.sampled_from(["Steps", "Sampler", "Seed", "Hashes", "Size", "X y", "Lora hashes"]),
        st.one_of(
            st.integers(-5, 10**10), st.text(max_size=20), st.floats(allow_nan=False, width=32)
        ),
    ),
    min_size=3,
    max_size=8,
    unique_by=lambda pair: pair[0],
)


@given(PROMPT_TEXT, PARAMETER_LINE)
@example("0", [("Steps", 0), ("Sampler", ' "'), ("Seed", 0)])  # a quote after spaces
@settings(max_examples=200, deadline=None)
def test_parser_round_trips_any_parameter_values(
    prompt: str, pairs: list[tuple[str, object]]
) -> None:
    text = format_infotext(prompt, "", dict(pairs))
    parsed_prompt, _negative, params = parse_infotext(text)
    assert parsed_prompt == prompt
    assert list(params) == [key for key, _ in pairs]
