"""A pasted infotext as a request (bot.infotext_import), and the parser under it: what Easel
writes comes back as the same settings, other tools' forms are read, and what cannot be
honoured is said."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from pathlib import Path

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from bot.infotext_import import (
    MAX_INFOTEXT_CHARS,
    NOT_HONOURED,
    Installed,
    installed_in,
    request_from_infotext_text,
)
from bot.policy.addons import AddonKind, AddonRules
from bot.requests import RequestError
from cogs.use_settings import _allowed_here
from inference import file_hashes
from inference.infotext import format_infotext, parse_infotext, web_ui_sampler_fields
from inference.limits import MAX_SEED
from inference.prompts.chaos import chaos_prompt
from inference.registry import ModelRegistry
from inference.samplers import SAMPLERS, SCHEDULE_TYPES, SamplerSpec, scheduler_spec
from inference.types import RenderInputError
from inference.upscale import LANCZOS, HiresOptions

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
    # The tag of a LoRA not installed here is dropped (typed, it is refused), told below.
    assert fields["prompt"] == "masterpiece, a lighthouse at dusk, <lora:detail:0.6>"
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
    # A prompt ending in a colon reads as a key whose value is "Negative prompt:" (found by
    # the round-trip property test below).
    colon = "A: Negative prompt: , Steps: 12, Sampler: Euler a, CFG scale: 7, Seed: 5"
    assert parse_infotext(colon)[:2] == ("A:", ",")
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
        "model 'sdxl-base' (hash 1111111111) is not installed or not allowed here; 'tiny' is "
        "used instead",
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
# Prompt syntax included; a LoRA-like tag (<lora:x>) is read as one, so it is left out.
PROMPT_TEXT = st.text(
    st.one_of(st.characters(blacklist_categories=("Cs", "Cc")), st.sampled_from("<>[]{}()|\\:-,")),
    min_size=1,
    max_size=60,
).filter(
    lambda text: (
        text.strip() == text
        and "Negative prompt" not in text
        and "Steps" not in text
        and re.search(r"<[^>]*:", text) is None
        # A flag (" --A") is cut from a typed prompt: Easel never writes one in a prompt.
        and re.search(r"(?:^|\s)--[A-Za-z]", text) is None
    )
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
        "tile": st.booleans(),
        "stop": st.one_of(st.none(), st.integers(10, 99)),
        # Scale, hires steps (0: the first pass's), denoising, upscaler.
        "hires": st.one_of(
            st.none(),
            st.tuples(
                st.sampled_from([1.25, 1.5, 2.0]),
                st.integers(0, 150),
                st.sampled_from([0.3, 0.7]),
                st.sampled_from(["Lanczos", "tiny-esrgan-2x", "Latent (bicubic)"]),
            ),
        ),
    }
)


@given(EASEL_SETTINGS)
@settings(max_examples=150, deadline=None)
def test_what_easel_writes_comes_back_as_the_same_settings(chosen: dict[str, object]) -> None:
    variation = chosen["variation"]
    assert variation is None or isinstance(variation, tuple)
    width, height = chosen["size"]  # type: ignore[misc]
    hires = chosen["hires"]
    assert hires is None or isinstance(hires, tuple)
    assume(hires is None or max(width, height) * hires[0] <= 2048)  # the largest side rendered
    hires_options = (
        {}
        if hires is None
        else {
            "hires_scale": hires[0],
            "hires_denoising": hires[2],
            "hires_upscaler": hires[3],
            **({"hires_steps": hires[1]} if hires[1] else {}),
        }
    )
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
        # As inference.upscale.HiresOptions.infotext and inference.passes.output write them.
        "Denoising strength": None if hires is None else hires[2],
        "Hires upscale": None if hires is None else hires[0],
        "Hires steps": None if hires is None else hires[1] or None,
        "Hires upscaler": None if hires is None else hires[3],
        "Tiling": True if chosen["tile"] else None,
        "Stop at": None if chosen["stop"] is None else f"{chosen['stop']}%",
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
    assert fields["options"] == {
        **({"clip_skip": chosen["clip_skip"]} if chosen["clip_skip"] != 1 else {}),
        **({"tile": True} if chosen["tile"] else {}),
        **({"stop": chosen["stop"]} if chosen["stop"] is not None else {}),
        **hires_options,
    }


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
            "Hires resize: 0x",
            "Stop at: \u00b2%",
            'TI hashes: "a:, :b, c: Z"',
            "ADetailer model: hand_",
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


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("Steps", "{}"),
        ("Seed", "{}"),
        ("CFG scale", "{}"),
        ("Size", "{}x512"),
        ("Size", "512x{}"),
        ("Hires upscale", "{}"),
        ("Hires resize", "{}x512"),
        ("Hires resize", "512x{}"),
        ("Stop at", "{}%"),
        ("Clip skip", "{}"),
        ("Variation seed", "{}"),
        ("Variation seed strength", "{}"),
    ],
)
@pytest.mark.parametrize("digits", [400, 4_000, 4_400])
def test_a_number_of_thousands_of_digits_is_told_in_a_sentence(
    key: str, value: str, digits: int
) -> None:
    """Past Python's digit limit for int(), or past a float's range: a note about the setting,
    neither an internal error nor Python's own words."""
    params = {"Steps": "20", "Sampler": "Euler", "Seed": "1", "Size": "512x512", "RNG": "CPU"}
    params |= {"Hires upscaler": "Lanczos", key: value.format("9" * digits)}
    text = "a cat\n" + ", ".join(f"{name}: {said}" for name, said in params.items())
    told = request_from_infotext_text(text, INSTALLED).unhonoured
    assert told
    assert not any(re.search("not supported|instances of|Exceeds|convert", s) for s in told)


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


WEB_UI_TEXT = (
    "a knight, <lora:detail:0.6>\nNegative prompt: EasyNegative, BadHandV4\n"
    "Steps: 20, Sampler: Euler, Seed: 1, Size: 512x768, RNG: CPU, "
)


def test_a_long_pasted_value_is_repeated_only_in_part() -> None:
    """A 5,000-character ``Size`` or ``Hires resize`` makes no 5,000-character note."""
    long_size = "512x" + "9" * 5_000
    pasted = WEB_UI_TEXT.replace("Size: 512x768", f"Size: {long_size}")
    size_note = request_from_infotext_text(pasted, INSTALLED).unhonoured[0]
    assert size_note.startswith("size '512x999") and "…" in size_note and len(size_note) < 250
    resize = "x".join(["big"] * 2_000)
    hires = WEB_UI_TEXT + f"Denoising strength: 0.5, Hires resize: {resize}"
    notes = request_from_infotext_text(hires, INSTALLED).unhonoured
    (resize_note,) = (note for note in notes if note.startswith("hires resize"))
    assert "…" in resize_note and len(resize_note) < 250


def test_embeddings_the_settings_name_that_are_not_read_here_are_told() -> None:
    """Named in ``TI hashes`` or Civitai's ``embed:`` hashes: installed (any letter case) is
    silent; missing and left out by the server read the same, so a hidden file is not told.
    One the server lists but that is not installed is told too: no job here reads it."""
    text = (
        WEB_UI_TEXT + 'TI hashes: "EasyNegative: c74b4e810b03, badhandv4: 5e40d722fc3d", '
        'Hashes: {"embed:ng_deepnegative": "54e7e4826d"}'
    )
    installed = dataclasses.replace(INSTALLED, embeddings=["badhandv4", "EasyNegative"])
    listed = frozenset({"badhandv4", "ng_deepnegative"})
    hidden = _allowed_here(installed, AddonRules({AddonKind.EMBEDDING: listed}))
    assert request_from_infotext_text(text, installed).unhonoured == [
        "embedding 'ng_deepnegative' is not available here: its name is read as words"
    ]
    assert request_from_infotext_text(text, hidden).unhonoured == [
        "embedding 'EasyNegative' is not available here: its name is read as words",
        "embedding 'ng_deepnegative' is not available here: its name is read as words",
    ]


def test_on_a_broker_the_embeddings_the_server_lists_are_not_told_as_words() -> None:
    """A broker's job records and reads every embedding the server lists (a worker may have
    one the bot lacks): the note says "read as words" only of the others, and names no file
    installed for the bot that the server leaves out."""
    text = (
        WEB_UI_TEXT + 'TI hashes: "EasyNegative: c74b4e810b03, badhandv4: 5e40d722fc3d", '
        'Hashes: {"embed:ng_deepnegative": "54e7e4826d"}'
    )
    installed = dataclasses.replace(INSTALLED, embeddings=["badhandv4", "EasyNegative"])
    rules = AddonRules({AddonKind.EMBEDDING: frozenset({"badhandv4", "ng_deepnegative"})})
    on_workers = _allowed_here(installed, rules, renders_on_workers=True)
    assert request_from_infotext_text(text, on_workers).unhonoured == [
        "embedding 'EasyNegative' is not available here: its name is read as words"
    ]


@pytest.mark.parametrize(
    ("hashes", "told"),
    [
        ('Lora hashes: "detail: 7c6bad76eb54"', False),  # the web UI's: of the tensor data
        # The whole file's: Civitai's AutoV2, and Easel's infotexts before the fourteenth stop.
        ('Hashes: {"lora:detail": "0123456789AB"}', False),
        ('Lora hashes: "detail: 99aa99aa99aa, missing-style: 123412341234"', True),
    ],
)
def test_a_lora_of_the_same_name_with_another_hash_is_named(hashes: str, told: bool) -> None:
    installed = dataclasses.replace(
        INSTALLED, lora_hashes={"detail": ["7c6bad76eb54", "0123456789ab"]}.get
    )
    unhonoured = request_from_infotext_text(WEB_UI_TEXT + hashes, installed).unhonoured
    assert unhonoured == (
        [
            "LoRA 'detail' here has hash 7c6bad76eb54, not 99aa99aa99aa: a different file of "
            "that name, so the picture may differ"
        ]
        if told
        else []
    )


def _safetensors(path: Path, metadata: dict[str, str], data: bytes) -> None:
    """A whole ``.safetensors`` file whose one tensor (bytes) is ``data``."""
    tensor = {"dtype": "U8", "shape": [len(data)], "data_offsets": [0, len(data)]}
    header = json.dumps({"__metadata__": metadata, "w": tensor}).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)


def test_an_installed_lora_is_known_by_the_web_uis_hash_and_by_its_files(tmp_path: Path) -> None:
    """The web UI, and Easel since the fourteenth stop, hash a LoRA's tensor data after the
    header (its metadata may be edited); Civitai's AutoV2 and Easel's older infotexts hash the
    whole file."""
    _safetensors(tmp_path / "Lora" / "detail.safetensors", {"ss_output_name": "x"}, b"w" * 99)
    data_hash = hashlib.sha256(b"w" * 99).hexdigest()[:12]
    file_hash = hashlib.sha256((tmp_path / "Lora" / "detail.safetensors").read_bytes())
    # A member's request reads no file itself: the background hasher does, for a later paste.
    recalled = installed_in(ModelRegistry(tmp_path), None, wait_for_hashes=False)
    assert recalled.lora_hashes("detail") is None
    deadline = time.monotonic() + 60
    while file_hashes._HASHER.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert recalled.lora_hashes("detail") == [data_hash, file_hash.hexdigest()[:12]]


def test_hires_resize_is_read_as_a_scale_and_not_as_another_picture() -> None:
    text = WEB_UI_TEXT + "Denoising strength: 0.45, Hires resize: {}, Hires steps: 15"
    for resize in ("1024x1536", "1024x0", "0x1536"):
        result = request_from_infotext_text(text.format(resize), INSTALLED)
        assert result.unhonoured == []
        assert result.request.options == {
            "hires_scale": 2.0,
            "hires_steps": 15,
            "hires_denoising": 0.45,
        }
    # Another shape: enlarged to cover it (the web UI then crops), said.
    cropped = request_from_infotext_text(text.format("1024x1024"), INSTALLED)
    assert cropped.request.options["hires_scale"] == 2.0
    assert cropped.unhonoured == [
        "hires resize 1024x1024: rendered at 1024x1536 (x2; the web UI crops to that shape; "
        "here the picture is enlarged to cover it)"
    ]
    # A denoising strength no hires key explains: the picture was made from another one.
    img2img = request_from_infotext_text(WEB_UI_TEXT + "Denoising strength: 0.45", INSTALLED)
    assert img2img.unhonoured[0].startswith("these settings come from a picture made from")
    # A ratio a hair below the target in floats (1968 / 960): rendered at the target, as the
    # web UI does, not 8 px short with a note blaming multiples of 8.
    tall = "a fox\nSteps: 20, Sampler: Euler, Seed: 1, Size: 640x960, RNG: CPU, " + (
        "Denoising strength: 0.5, Hires resize: 1312x1968"
    )
    exact = request_from_infotext_text(tall, INSTALLED)
    assert exact.unhonoured == []
    options = exact.request.options
    assert HiresOptions.from_options(options, 640, 960).size == (1312, 1968)  # type: ignore[union-attr]
    # A target that is no multiple of 8 is floored, and the note says why.
    floored = request_from_infotext_text(tall.replace("1312x1968", "1310x1965"), INSTALLED)
    assert floored.unhonoured == [
        "hires resize 1310x1965: rendered at 1304x1960 (x2.047; sides are multiples of 8 here)"
    ]
    unread = request_from_infotext_text(text.format("big"), INSTALLED)
    assert unread.unhonoured == ["hires resize 'big' is not WxH; rendered without hires fix"]
    assert "hires_scale" not in unread.request.options


@pytest.mark.parametrize(
    ("size", "resize"), [("1000000x512", "100000x512"), ("512x1024000", "512x102400")]
)
def test_a_pasted_side_of_too_many_digits_is_told_its_range(size: str, resize: str) -> None:
    """WxH all the same: the note names the range the side is past, not the form."""
    pasted = request_from_infotext_text(WEB_UI_TEXT.replace("512x768", size), INSTALLED)
    assert "must be a multiple of 8 between 64 and 2048" in pasted.unhonoured[0]
    text = WEB_UI_TEXT + "Denoising strength: 0.45, Hires resize: {}, Hires steps: 15"
    resized = request_from_infotext_text(text.format(resize), INSTALLED)
    assert resized.unhonoured == [
        f"hires resize {resize!r} has a side past hires scale's range "
        "(at most 4 times the Size); rendered without hires fix"
    ]


ADETAILER = (
    WEB_UI_TEXT + "ADetailer model: {}, ADetailer confidence: 0.3, ADetailer mask blur: 8, "
    "ADetailer dilate erode: 4, ADetailer denoising strength: 0.5, "
    "ADetailer inpaint only masked: False, ADetailer inpaint padding: 32"
)


@pytest.mark.parametrize("detector", ["hand_yolov8n.pt", "person_yolov8n-seg.pt"])
def test_adetailer_models_that_find_no_faces_fix_nothing(detector: str) -> None:
    result = request_from_infotext_text(ADETAILER.format(detector), INSTALLED)
    assert result.request.options == {}
    assert result.unhonoured == [
        f"ADetailer model {detector}: only faces are fixed here (face_* and mediapipe_face* "
        "detectors); rendered without that pass"
    ]


@pytest.mark.parametrize("detector", ["face_yolov8n.pt", "mediapipe_face_full"])
def test_adetailer_face_models_fix_faces_and_other_mask_values_are_named(detector: str) -> None:
    result = request_from_infotext_text(ADETAILER.format(detector), INSTALLED)
    assert result.request.options == {
        "fix_faces": True,
        "fix_faces_confidence": 0.3,
        "fix_faces_strength": 0.5,
    }
    assert result.unhonoured == [
        f"ADetailer model {detector}: this server's face detector is used",
        "ADetailer mask blur 8 (4 here), inpaint only masked False (True here): the face "
        "pass's mask is fixed",
    ]


def test_tiling_and_stop_at_are_read_back_and_a_stop_out_of_range_is_told() -> None:
    text = WEB_UI_TEXT + "Tiling: True, Stop at: {}"
    tiled = request_from_infotext_text(text.format("50%"), INSTALLED)
    assert (tiled.request.options, tiled.unhonoured) == ({"tile": True, "stop": 50}, [])
    early = request_from_infotext_text(text.format("5%"), INSTALLED)
    assert early.request.options == {"tile": True}
    assert early.unhonoured == ["stop at '5%' is not 10-100%; every step is run"]


def test_a_hires_resize_is_written_as_a_short_scale_that_pastes_back_at_its_size() -> None:
    """640x960 to 1312x1968: the ratio is a hair short in floats, and the scale nudged past
    it was written ``Hires upscale: 2.0500000000000003``. The fewest decimals that keep the
    size are written, and pasted back they render that size."""
    tall = "a fox\nSteps: 20, Sampler: Euler, Seed: 1, Size: 640x960, RNG: CPU, Hires {}"
    resized = request_from_infotext_text(tall.format("resize: 1312x1968"), INSTALLED)
    hires = HiresOptions.from_options(resized.request.options, 640, 960)
    assert hires is not None
    written = hires.infotext(LANCZOS)["Hires upscale"]
    assert str(written) == "2.051"
    pasted = request_from_infotext_text(tall.format(f"upscale: {written}"), INSTALLED)
    again = HiresOptions.from_options(pasted.request.options, 640, 960)
    assert pasted.unhonoured == [] and again is not None and again.size == (1312, 1968)


def test_easel_s_chaos_and_relax_are_read_back() -> None:
    """Easel writes both: ``Chaos`` is the chaos option (its weights are already in the
    prompt, and reading them again at the picture's seed changes nothing), ``Relax`` the
    relax queue class, admitted as a typed ``--relax``."""
    prompt = chaos_prompt("a lighthouse, stormy sea, oil painting", 60, 7)
    text = f"{prompt}\nSteps: 20, Sampler: Euler, Seed: 7, RNG: CPU, Chaos: 60, Relax: True"
    pasted = request_from_infotext_text(text, INSTALLED)
    assert pasted.unhonoured == []
    assert pasted.request.options == {"chaos": 60, "relax": True}
    # Honoured, and said: it moves the member to the back of the queue.
    assert pasted.request.notes == [
        "queued as --relax, as the picture was; remove the line 'Relax: True' to keep your "
        "usual place"
    ]
    assert chaos_prompt(pasted.request.prompt, 60, pasted.request.seed) == prompt
    for written in ("250", "50.0"):  # out of range; in range but not a whole number
        wild = request_from_infotext_text(text.replace("Chaos: 60", f"Chaos: {written}"), INSTALLED)
        assert wild.request.options == {"relax": True}
        assert wild.unhonoured == [
            f"chaos {written} is not a whole number from 0 to 100; the prompt is read as written"
        ]
    # A wildcard drew "red sky" after chaos read the prompt: chaos again would reweight it.
    drawn = "(a lighthouse:1.2), red sky"
    template = "(a lighthouse:1.2), __color__ sky"
    params = {"Steps": 20, "Seed": 7, "RNG": "CPU", "Chaos": 60, "Template": template}
    wildcards = format_infotext(drawn, "", params)
    as_written = request_from_infotext_text(wildcards, INSTALLED)
    assert (as_written.request.prompt, as_written.request.options) == (drawn, {})
    assert as_written.unhonoured[0].startswith("chaos 60: its weights are in the prompt already")


def test_adetailer_s_second_unit_is_read_when_it_is_the_face_pass() -> None:
    """Hands first, then faces: the 2nd unit's values make the face pass; the hand unit and
    a third face unit (one face pass runs here) are each told, and their own keys are not
    listed again as unknown."""
    text = (
        WEB_UI_TEXT + "ADetailer model: hand_yolov8n.pt, ADetailer prompt: detailed hands, "
        "ADetailer negative prompt: extra fingers, ADetailer model 2nd: face_yolov8n.pt, "
        "ADetailer prompt 2nd: a calm face, ADetailer confidence 2nd: 0.5, "
        "ADetailer denoising strength 2nd: 0.35, ADetailer mask blur 2nd: 8, "
        "ADetailer model 3rd: mediapipe_face_full, ADetailer prompt 3rd: eyes, "
        "ADetailer version: 24.1.2"
    )
    result = request_from_infotext_text(text, INSTALLED)
    assert result.request.options == {
        "fix_faces": True,
        "fix_faces_prompt": "a calm face",
        "fix_faces_confidence": 0.5,
        "fix_faces_strength": 0.35,
    }
    assert result.unhonoured == [
        "ADetailer model hand_yolov8n.pt: only faces are fixed here (face_* and "
        "mediapipe_face* detectors); rendered without that pass",
        "ADetailer model 2nd face_yolov8n.pt: this server's face detector is used",
        "ADetailer mask blur 2nd 8 (4 here): the face pass's mask is fixed",
        "ADetailer model 3rd mediapipe_face_full: one face pass runs here (ADetailer model "
        "2nd's); rendered without that pass",
    ]


def test_a_face_pass_of_its_own_is_read_and_what_differs_from_the_render_is_told() -> None:
    """ADetailer's separate model, VAE, sampler, steps, CFG and clip skip, and Easel's seed
    of a 🔄 fix pass (Easel writes them where its fix pass over a stored picture used its
    own): not listed as unknown; where they differ from the render's, which Easel's face pass
    uses, one sentence names them."""
    own = (
        "ADetailer model: face_yolov8n.pt, ADetailer use separate checkpoint: True, "
        "ADetailer checkpoint: {checkpoint}, ADetailer use separate VAE: True, "
        "ADetailer VAE: {vae}, ADetailer use separate sampler: True, "
        "ADetailer sampler: {sampler}, ADetailer use separate steps: True, ADetailer steps: 20, "
        "ADetailer use separate CFG scale: True, ADetailer CFG scale: {cfg}, "
        "ADetailer use separate CLIP skip: True, ADetailer CLIP skip: {clip_skip}, "
        "ADetailer seed: {seed}"
    )
    same = own.format(
        checkpoint="tiny [0123456789]", vae="None", sampler="Euler", cfg=7, clip_skip=1, seed=1
    )
    result = request_from_infotext_text(WEB_UI_TEXT + same, INSTALLED)
    assert result.request.options == {"fix_faces": True}
    assert result.unhonoured == [
        "ADetailer model face_yolov8n.pt: this server's face detector is used"
    ]
    differs = own.format(
        checkpoint="other [abcdefabcd]",
        vae="clear-vae.safetensors",
        sampler="DPM++ 2M",
        cfg=4.5,
        clip_skip=2,
        seed=99,
    )
    result = request_from_infotext_text(WEB_UI_TEXT + "Model: tiny, " + differs, INSTALLED)
    assert result.unhonoured[1:] == [
        "ADetailer checkpoint 'other [abcdefabcd]', VAE 'clear-vae.safetensors' (the model's "
        "own here), sampler 'DPM++ 2M' (Euler here), CFG scale 4.5 (7 here), CLIP skip 2 "
        "(1 here), seed 99 (1 here): the face pass renders with the picture's model and "
        "settings here"
    ]


DETECTOR_NOTE = "ADetailer model face_yolov8n.pt: this server's face detector is used"


@pytest.mark.parametrize("vae", ["clear-vae.safetensors", "clear-vae"])
def test_an_adetailer_vae_is_read_by_its_file_name_or_its_stem(vae: str) -> None:
    """ADetailer writes a VAE's file name (as Easel does); its stem names the same file."""
    unit = (
        f"ADetailer model: face_yolov8n.pt, ADetailer use separate VAE: True, ADetailer VAE: {vae}"
    )
    text = WEB_UI_TEXT + "Model: tiny, VAE: clear-vae.safetensors, " + unit
    result = request_from_infotext_text(text, INSTALLED)
    assert result.request.options["vae"] == "clear-vae"
    assert result.unhonoured == [DETECTOR_NOTE]


@pytest.mark.parametrize(
    "unit",
    [
        "ADetailer use separate sampler: True, ADetailer sampler: DPM++ 2M, "
        "ADetailer scheduler: Use same scheduler",
        # ADetailer writes no scheduler where it is "Use same scheduler".
        "ADetailer use separate sampler: True, ADetailer sampler: DPM++ 2M",
        "ADetailer use separate checkpoint: True, ADetailer checkpoint: Use same checkpoint",
        # ADetailer names a checkpoint by the web UI's title: its file's name and hash.
        f"ADetailer use separate checkpoint: True, ADetailer checkpoint: tiny.safetensors "
        f"[{TINY_HASH}]",
        f"ADetailer use separate checkpoint: True, ADetailer checkpoint: SD15/renamed.ckpt "
        f"[{TINY_HASH}]",
        "ADetailer use separate checkpoint: True, ADetailer checkpoint: tiny.safetensors",
    ],
)
def test_a_face_pass_of_its_own_naming_the_render_s_settings_is_not_told(unit: str) -> None:
    text = WEB_UI_TEXT.replace("Sampler: Euler", "Sampler: DPM++ 2M, Schedule type: Karras")
    text += f"Model: tiny, Model hash: {TINY_HASH}, ADetailer model: face_yolov8n.pt, {unit}"
    assert request_from_infotext_text(text, INSTALLED).unhonoured == [DETECTOR_NOTE]
    # Another schedule, or another model, is still told.
    other = unit.replace("Use same scheduler", "Exponential").replace(TINY_HASH, "abcdefabcd")
    if other != unit:
        text = text.replace(unit, other)
        assert len(request_from_infotext_text(text, INSTALLED).unhonoured) == 2


FLUX_TRUE_CFG = (
    "CFG scale 2 beside distilled CFG scale 3.5: 'tiny' takes the distilled value as its CFG, "
    "not the CFG scale; the picture will differ"
)


@pytest.mark.parametrize(
    ("written", "flux", "cfg", "told"),
    [
        # Forge's Flux dev: no true CFG, the distilled guidance; Easel's since writes the same.
        ("CFG scale: 1, Distilled CFG Scale: 3.5", True, 3.5, []),
        # Easel's older Flux pictures wrote both equal.
        ("CFG scale: 3.5, Distilled CFG Scale: 3.5", True, 3.5, []),
        ("CFG scale: 2, Distilled CFG Scale: 3.5", True, 3.5, [FLUX_TRUE_CFG]),
        # An SD model runs true CFG: the text's, where it gives one beside the distilled.
        (
            "CFG scale: 2, Distilled CFG Scale: 3.5",
            False,
            2,
            ["distilled CFG scale 3.5: 'tiny' takes no distilled guidance; CFG scale 2 is used"],
        ),
        # No true CFG (1, or none) beside it: the distilled guidance stands in for it.
        ("CFG scale: 1, Distilled CFG Scale: 3.5", False, 3.5, []),
        ("Distilled CFG Scale: 3.5", False, 3.5, []),
    ],
)
def test_flux_s_distilled_guidance_is_read_as_the_cfg_of_a_distilled_model(
    written: str, flux: bool, cfg: float, told: list[str]
) -> None:
    """An SD 3 model is a flow model whose CFG is true CFG: it reads the text as SD does."""
    for flow in [True] if flux else [False, True]:  # not Flux: SD, then SD 3
        installed = dataclasses.replace(
            INSTALLED,
            flow_models=["tiny"] if flow else [],
            distilled_models=["tiny"] if flux else [],
        )
        result = request_from_infotext_text(WEB_UI_TEXT + written, installed)
        assert (result.request.cfg_scale, result.unhonoured) == (cfg, told)


@pytest.mark.parametrize(
    ("written", "variation_seed", "told"),
    [
        (7, 7, None),
        (-1, -1, None),  # random, drawn at admission
        # Another UI's 64-bit seed: its low 32 bits, as the main seed's.
        (2**63 + 5, 5, f"is past {MAX_SEED}, the largest kept here; variation seed 5 (its"),
        (2**64 - 1, 2**32 - 1, "; variation seed 4294967295 (its low 32 bits"),
        (-7, -1, f"is not a whole number between 0 and {MAX_SEED}; a random variation seed"),
    ],
)
def test_a_variation_seed_is_read_by_the_seed_s_rule(
    written: int, variation_seed: int, told: str | None
) -> None:
    """A pasted variation seed the journal cannot keep renders as a pasted seed does (RR2:
    one past 2**63 - 1 was refused, rendering with no variation): its low 32 bits, or a random
    one, each told naming it."""
    text = f"a cat\nSeed: 3, Variation seed: {written}, Variation seed strength: 0.3, RNG: CPU"
    fields, unhonoured = imported(text)
    assert fields["variation"] == (variation_seed, 0.3)
    if told is None:
        assert unhonoured == []
    else:
        [note] = unhonoured
        assert note.startswith(f"the picture's variation seed {written} ") and told in note


def test_a_variation_refused_for_its_strength_tells_nothing_of_its_seed() -> None:
    text = f"a cat\nSeed: 3, Variation seed: {2**63 + 5}, Variation seed strength: 3, RNG: CPU"
    fields, unhonoured = imported(text)
    assert fields["variation"] == (None, 0.0)
    [note] = unhonoured
    assert note.startswith("variation seed: ") and note.endswith("rendered without a variation")


EASEL_GRID = (
    "two red foxes\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: {seed}, Size: 64x64, "
    "Model: tiny, RNG: CPU, Template: {template}, Version: Easel 0.1.0, "
    "Grid: {count} images, Grid seeds: {seeds}{more}"
)
GRID_SEEDS = "between 0 and 9223372036854775807"
# What was typed: at seed 100 (and 4294967295) it draws the "two red foxes" the grid shows.
GRID_TEMPLATE = "two {red|blue} foxes"


def easel_grid(seed: int, seeds: str, more: str = "", template: str = GRID_TEMPLATE) -> str:
    count = len(seeds.split())
    return EASEL_GRID.format(seed=seed, count=count, seeds=seeds, more=more, template=template)


@pytest.mark.parametrize(
    ("seed", "seeds", "more"),
    [
        (100, "100 101 102 103", ""),
        # Past 2**32 - 1 the seeds go on, as the web UI's (and Easel's since) do.
        (4294967295, "4294967295 4294967296 4294967297 4294967298", ""),
        # A varied batch keeps its seed and steps its variation seed.
        (100, "100 100 100 100", ", Variation seed: 7, Variation seed strength: 0.3"),
    ],
)
def test_easel_s_grid_is_made_again_as_its_batch(seed: int, seeds: str, more: str) -> None:
    result = request_from_infotext_text(easel_grid(seed, seeds, more), INSTALLED)
    assert result.unhonoured == []
    request = result.request
    assert (request.count, request.seed) == (4, seed)
    # Each picture draws from the prompt as typed, as the grid's did.
    assert request.prompt == "two {red|blue} foxes"


NOT_WHOLE = f"its seeds are not all whole numbers {GRID_SEEDS}"
NOT_DRAWN = "its Template does not draw the prompt shown at seed 100"


@pytest.mark.parametrize(
    ("seeds", "more", "template", "why"),
    [
        (
            "100 102 104 106",
            "",
            GRID_TEMPLATE,
            "its seeds are not a batch's from the first picture's seed",
        ),
        (
            "100 101 102 103",
            ", Chaos: 40",
            GRID_TEMPLATE,
            "chaos gave each picture a prompt of its own",
        ),
        ("100 101 102 103 104", "", GRID_TEMPLATE, "a batch here makes at most 4"),
        ("100 101 x 103", "", GRID_TEMPLATE, NOT_WHOLE),
        ("100 -101", "", GRID_TEMPLATE, NOT_WHOLE),
        ("100 " + "1" * 30, "", GRID_TEMPLATE, NOT_WHOLE),
        ("100 9223372036854775808", "", GRID_TEMPLATE, NOT_WHOLE),
        # Arabic-Indic digits: int() reads them, but Easel writes no such seed.
        ("100 \u0661\u0660\u0661", "", GRID_TEMPLATE, NOT_WHOLE),
        # A Template with nothing to render: not an empty batch, charged.
        ("100 101", "", '" "', "its Template carries no prompt"),
        ("100 101", "", '""', "its Template carries no prompt"),
        # A Template that does not draw the picture shown is not what the grid drew from.
        ("100 101", "", "a cat", NOT_DRAWN),
        ("100 101", "", "two {green|blue} foxes", NOT_DRAWN),
        ("100 101", "", "<lora:detail:1>", NOT_DRAWN),
        ("100 101", ", Negative Template: {blurry|dark}", GRID_TEMPLATE, NOT_DRAWN),
    ],
)
def test_a_grid_that_is_no_batch_here_gives_its_first_picture_told(
    seeds: str, more: str, template: str, why: str
) -> None:
    result = request_from_infotext_text(easel_grid(100, seeds, more, template), INSTALLED)
    count = len(seeds.split())
    told = f"grid of {count} pictures ({why}): its first picture's settings are used (seed 100)"
    assert told in result.unhonoured
    assert not any(sentence.startswith("not used here") for sentence in result.unhonoured)
    request = result.request
    assert (request.count, request.seed, request.prompt) == (1, 100, "two red foxes")
    assert request.negative_prompt == ""


def test_a_grid_s_template_is_drawn_with_the_wildcard_folder_its_batch_draws_from(
    tmp_path: Path,
) -> None:
    """Drawn at the first picture's seed, ``__colour__`` gives the prompt shown only with the
    folder admission draws from: without it, the picture shown is made alone, told."""
    (tmp_path / "colour.txt").write_text("red\n", encoding="utf-8")
    text = easel_grid(100, "100 101", template="two __colour__ foxes")
    with_folder = dataclasses.replace(INSTALLED, wildcards_dir=tmp_path)
    result = request_from_infotext_text(text, with_folder)
    assert result.unhonoured == []
    assert (result.request.count, result.request.prompt) == (2, "two __colour__ foxes")
    alone = request_from_infotext_text(text, INSTALLED)
    assert (
        f"grid of 2 pictures ({NOT_DRAWN}): its first picture's settings are used (seed 100)"
        in alone.unhonoured
    )
    assert (alone.request.count, alone.request.prompt) == (1, "two red foxes")
