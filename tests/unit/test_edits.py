"""bot.edits and bot.policy.styles: requests built from a picture, and styles.csv (pure, fast)."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import TextIO

import pytest

from bot.edits import (
    InpaintSettings,
    Picture,
    PictureRenderers,
    expand_request,
    fix_faces_request,
    inpaint_request,
    input_path,
    picture_settings,
    request_from_infotext,
    upscale_request,
    vary_request,
)
from bot.infotext_import import MAX_INFOTEXT_CHARS
from bot.jobs.accounting import RenderSize, estimated_cost
from bot.policy.addons import AddonKind, AddonRules, under_addon_rules
from bot.policy.styles import SETTLED_NS, Style, apply_style, load_styles
from bot.requests import RequestError
from bot.user_errors import UserError
from inference.types import RenderRequest

INFOTEXT = (
    "a red fox\nNegative prompt: blurry\n"
    "Steps: 12, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 77, Size: 64x64, Model: tiny"
)
PICTURE = Picture(Path("/data/inputs/a.png"), 96, 64, INFOTEXT)


def test_infotext_gives_prompt_seed_and_settings() -> None:
    request = request_from_infotext(INFOTEXT, None, {"tiny"})
    assert (request.prompt, request.negative_prompt, request.seed) == ("a red fox", "blurry", 77)
    assert (request.steps, request.cfg_scale, request.sampler) == (12, 6.5, "DPM++ 2M Karras")
    assert request.model == "tiny" and request.notes == []
    assert request_from_infotext(INFOTEXT, " a fox ", {"tiny"}).prompt == "a fox"


def test_a_flux_picture_s_buttons_keep_its_distilled_guidance() -> None:
    """Flux dev's text says CFG scale 1 (no true CFG runs) and its guidance apart."""
    flux = INFOTEXT.replace("CFG scale: 6.5", "CFG scale: 1, Distilled CFG Scale: 3.5")
    assert request_from_infotext(flux, None, {"tiny"}).cfg_scale == 3.5
    # Forge's true CFG beside it: run by an SD model, the distilled guidance by a Flux one.
    both = INFOTEXT.replace("CFG scale: 6.5", "CFG scale: 5, Distilled CFG Scale: 3.5")
    assert request_from_infotext(both, None, {"tiny"}).cfg_scale == 5
    flux = request_from_infotext(
        both, None, {"tiny"}, flow_models={"tiny"}, distilled_models={"tiny"}
    )
    assert flux.cfg_scale == 3.5
    # SD 3 is a flow model with a true CFG: the CFG scale, as an SD model reads it.
    assert request_from_infotext(both, None, {"tiny"}, flow_models={"tiny"}).cfg_scale == 5


@pytest.mark.parametrize(("default_model", "cfg"), [("flux", 3.5), ("sd3", 5), (None, 5)])
def test_a_stand_in_for_a_removed_model_reads_the_cfg_as_its_own_family_does(
    default_model: str | None, cfg: float
) -> None:
    """The picture's model is gone: the default renders it, and its family says which of
    the text's CFG values it runs (Flux: the distilled guidance; SD 3 and SD: the true CFG)."""
    both = INFOTEXT.replace("CFG scale: 6.5", "CFG scale: 5, Distilled CFG Scale: 3.5")
    renderers = PictureRenderers(["flux", "sd3"], [], ["flux", "sd3"], ["flux"], default_model)
    request = picture_settings(both, renderers)
    assert request.model is None and request.cfg_scale == cfg
    assert (
        request.notes[0] == "the picture's model is not available here; the default model is used"
    )


def test_parameters_past_the_read_bound_are_carried_only_where_a_prompt_is_needed() -> None:
    too_long = "x" * MAX_INFOTEXT_CHARS + "\n" + INFOTEXT.split("\n", 1)[1]
    # Its prompt is the one needed: refused, naming the prompt's length.
    with pytest.raises(RequestError, match=f"prompt is {MAX_INFOTEXT_CHARS:,} characters"):
        request_from_infotext(too_long, None, {"tiny"})
    # A prompt typed, or none needed (a fast upscale): taken as a picture without settings.
    typed = request_from_infotext(too_long, "a fox", {"tiny"})
    assert (typed.prompt, typed.seed == 77) == ("a fox", False)
    assert typed.steps == RenderRequest("").steps
    assert request_from_infotext(too_long, None, None, prompt_required=False).prompt == ""


def test_a_fast_picture_is_remade_fast() -> None:
    assert request_from_infotext(INFOTEXT, None, {"tiny"}).fast is False
    made_fast = request_from_infotext(INFOTEXT + ", Fast: DeepCache 3", None, {"tiny"})
    assert made_fast.fast is True and made_fast.seed == 77


def test_unknown_model_and_sampler_fall_back_with_notes() -> None:
    text = INFOTEXT.replace("DPM++ 2M Karras", "Magic").replace("Model: tiny", "Model: huge")
    request = request_from_infotext(text, None, {"tiny"})
    assert request.model is None and request.sampler == RenderRequest("x").sampler
    assert request.notes == [
        "the picture's sampler is unknown here; the default sampler was used",
        "the picture's model is not available here; the default model is used",
    ]
    # A model the server leaves out (not among those usable here) reads as one not installed.
    assert request_from_infotext(INFOTEXT, None, {"other"}).notes == [
        "the picture's model is not available here; the default model is used"
    ]
    # A pass using no model (a fast upscale) neither takes the picture's nor notes it.
    unread = request_from_infotext(INFOTEXT, None, None)
    assert unread.model is None and unread.notes == []


SHAPED = INFOTEXT + ", Clip skip: 2, Pad conds: True, Tiling: True, VAE: warm.pt, Relax: True"


def test_the_options_shaping_a_picture_are_read_from_its_text() -> None:
    request = request_from_infotext(SHAPED, None, {"tiny"}, usable_vaes={"warm"})
    assert request.options == {
        "clip_skip": 2,
        "pad_conds": True,
        "tile": True,
        "vae": "warm",
        "relax": True,
    }
    assert request.notes == ["queued as --relax (free, after other jobs), as the picture was"]
    # Each edit keeps them, under its own options.
    for edit in (
        vary_request(request, PICTURE, "subtle"),
        expand_request(request, PICTURE, pan="left"),
        fix_faces_request(request, PICTURE, restore=False),
    ):
        assert {k: edit.options[k] for k in request.options} == request.options
    assert expand_request(request, PICTURE, pan="left").options["outpaint"] == {"left": 48}


def test_a_vae_not_usable_or_made_for_another_model_is_left_out_with_a_note() -> None:
    missing = request_from_infotext(SHAPED, None, {"tiny"})
    assert "vae" not in missing.options and missing.options["clip_skip"] == 2
    assert "the picture's VAE is not installed here" in missing.notes[0]
    stand_in = request_from_infotext(SHAPED, None, {"other"}, usable_vaes={"warm"})
    assert stand_in.model is None and stand_in.options == {"relax": True}
    # Without the picture's model, what was set for it is left out: the default model may be
    # of another family (a Flux one takes no clip skip), refused only after the queue.
    assert stand_in.notes[1:] == [
        "the picture's VAE does not fit the default model, which stands in for the picture's; "
        "the model's own VAE is used",
        "clip skip, tiling, pad conds left out: set for the picture's model, which the default "
        "model stands in for",
        "queued as --relax (free, after other jobs), as the picture was",
    ]
    # A fast upscale renders nothing: no option is read, nor noted.
    assert request_from_infotext(SHAPED, None, None).options == {}
    out_of_range = request_from_infotext(INFOTEXT + ", Clip skip: 99", None, {"tiny"})
    assert "clip_skip" not in out_of_range.options
    assert out_of_range.notes == ["the picture's clip skip is not 1-12; 1 is used instead"]


def test_a_picture_without_infotext_needs_a_prompt() -> None:
    with pytest.raises(RequestError, match="give one with `prompt`"):
        request_from_infotext(None, None, {"tiny"})
    assert request_from_infotext(None, None, (), prompt_required=False).prompt == ""
    assert 0 <= request_from_infotext(None, "a fox", ()).seed <= 2**32 - 1


@pytest.mark.parametrize(("strength", "denoise"), [("subtle", 0.35), ("Strong", 0.7), (0.2, 0.2)])
def test_vary_is_img2img_at_the_picture_size(strength: str | float, denoise: float) -> None:
    base = RenderRequest("a fox", seed=5, width=512, height=512, count=4, options={"aspect": "1:1"})
    varied = vary_request(base, PICTURE, strength)
    assert (varied.mode, varied.init_image, varied.denoising_strength) == (
        "img2img",
        str(PICTURE.path),
        denoise,
    )
    assert (varied.width, varied.height, varied.count, varied.seed) == (None, None, 1, 5)
    assert varied.options == {}


@pytest.mark.parametrize("strength", ["medium", "0", "1.5"])
def test_vary_strength_out_of_range_is_refused(strength: str) -> None:
    with pytest.raises(RequestError, match="vary strength"):
        vary_request(RenderRequest("a fox"), PICTURE, strength)


def test_inpaint_options_and_size_checks() -> None:
    mask = Picture(Path("/data/inputs/m.png"), 96, 64)
    request = inpaint_request(
        RenderRequest("a hat"), PICTURE, mask, InpaintSettings(0.6, 8, 16, "fill", True, True)
    )
    assert request.mode == "inpaint" and request.mask_image == str(mask.path)
    assert request.options == {
        "mask_blur": 8,
        "only_masked_padding": 16,
        "masked_content": "fill",
        "only_masked": True,
        "mask_invert": True,
    }
    with pytest.raises(RequestError, match="the mask is 64x64 but the picture is 96x64"):
        inpaint_request(
            RenderRequest("a hat"), PICTURE, Picture(mask.path, 64, 64), InpaintSettings()
        )
    with pytest.raises(RequestError, match="between 64 and 4096 pixels"):
        small = Picture(PICTURE.path, 32, 32)
        inpaint_request(RenderRequest("a hat"), small, small, InpaintSettings())


def test_zoom_out_and_pans_name_the_canvas_they_render_so_the_quota_reserves_it() -> None:
    """The engine renders an expand's grown canvas (``outpainted``), rounded up to 8s: the
    request names that size, so its quota reserves the canvas's pixels, not the picture's."""
    base = RenderRequest("a hat", steps=20)
    canvases = {
        (2.0, None): (192, 128),
        (1.5, None): (144, 96),
        (None, "left"): (144, 64),
        (None, "up"): (96, 96),
    }
    for (zoom_out, pan), (width, height) in canvases.items():
        expanded = expand_request(base, PICTURE, zoom_out=zoom_out, pan=pan)
        assert (expanded.width, expanded.height) == (width, height)
        at_the_canvas = RenderRequest("a hat", steps=expanded.steps, width=width, height=height)
        reserved = estimated_cost(expanded, RenderSize(input_size=(PICTURE.width, PICTURE.height)))
        assert reserved == estimated_cost(at_the_canvas)
    # A canvas past the engine's side: refused here, before queueing, not by the engine.
    with pytest.raises(RequestError, match="outpainting would make a 3072x64 picture"):
        expand_request(base, Picture(PICTURE.path, 2048, 64), pan="right")


def test_a_picture_past_the_engines_side_is_refused_before_queueing_by_every_button() -> None:
    """A fast 4x upscale posts up to 8192 px; Vary, Zoom/Pan, Fix faces and Vary (Region) on
    it are refused here, privately, not by the engine after a wait in the queue."""
    wide = Picture(PICTURE.path, 8192, 4096)
    base = RenderRequest("a hat")
    makes = {
        "vary": lambda: vary_request(base, wide, "subtle"),
        "expand": lambda: expand_request(base, wide, zoom_out=1.5),
        "fix faces in": lambda: fix_faces_request(base, wide, restore=False),
        "inpaint": lambda: inpaint_request(base, wide, wide, InpaintSettings()),
    }
    for role, make in makes.items():
        sentence = f"the picture to {role} is 8192x4096; each side must be between 64 and 4096"
        with pytest.raises(RequestError, match=sentence):
            make()


def test_upscale_checks_factor_size_and_upscaler() -> None:
    request = upscale_request(RenderRequest(""), PICTURE, 4, "creative")
    assert request.mode == "upscale"
    assert request.options == {"upscale_factor": 4, "upscale_mode": "creative"}
    with pytest.raises(RequestError, match="upscale factor must be 2 or 4"):
        upscale_request(RenderRequest(""), PICTURE, 3)
    with pytest.raises(RequestError, match="largest side allowed is 4096"):
        upscale_request(RenderRequest(""), Picture(PICTURE.path, 1200, 1024), 4, "creative")
    installed = ["Lanczos", "4x-UltraSharp", "4x-Secret"]
    # Not installed: kept as typed, for admission to refuse naming only what the server allows
    # (this refusal named every installed upscaler, those the server leaves out too).
    unknown = upscale_request(
        RenderRequest(""), PICTURE, 2, upscaler="ESRGAN", installed_upscalers=installed
    )
    assert unknown.options["upscaler"] == "ESRGAN"
    rules = AddonRules({AddonKind.UPSCALER: frozenset({"4x-UltraSharp"})})
    with pytest.raises(
        UserError, match=r"`ESRGAN` is not installed or .* use: 4x-UltraSharp, Lanczos\.$"
    ):
        under_addon_rules(unknown, rules)
    # Any letter case; the request carries the installed spelling.
    chosen = upscale_request(
        RenderRequest(""), PICTURE, 2, upscaler="4X-ULTRASHARP", installed_upscalers=installed
    )
    assert chosen.options["upscaler"] == "4x-UltraSharp"


@pytest.mark.parametrize("unused", ["Steps: 0", "CFG scale: 99", "Seed: -5"])
def test_a_fast_upscale_checks_no_setting_it_does_not_use(unused: str) -> None:
    """A fast upscale renders nothing: a Steps, CFG scale or seed out of range in the
    picture's text refuses it no more than an unknown sampler's note follows it. A creative
    one renders with them, and is refused; at a random seed where the text's is out of range
    (the member never typed it), with a note, as Use settings does."""
    text = INFOTEXT.replace("Steps: 12", unused).replace("CFG scale: 6.5", unused)
    text = text.replace("Seed: 77", unused).replace("DPM++ 2M Karras", "Magic")
    picture = Picture(PICTURE.path, 96, 64, text)
    base = request_from_infotext(text, None, None, prompt_required=False)
    fast = upscale_request(base, picture, 2)
    assert (fast.prompt, fast.negative_prompt, fast.notes) == ("a red fox", "blurry", [])
    assert 0 <= fast.seed < 2**32
    if unused == "Seed: -5":
        creative = upscale_request(base, picture, 2, "creative")
        assert creative.seed == base.seed and 0 <= base.seed < 2**32
        assert f"the picture's seed -5 is not a whole number between 0 and {2**63 - 1}" in str(
            creative.notes
        )
        return
    with pytest.raises(RequestError):
        upscale_request(base, picture, 2, "creative")


def test_a_seed_the_web_ui_wrote_past_32_bits_is_taken_as_written() -> None:
    """The web UI's seed + i goes on past 2**32 - 1 (and Easel's since): rendered as it is."""
    past = request_from_infotext(INFOTEXT.replace("Seed: 77", "Seed: 4294967373"), None, None)
    assert past.seed == 4294967373


def test_input_paths_are_fresh_pngs(tmp_path: Path) -> None:
    first, second = input_path(tmp_path), input_path(tmp_path)
    assert first != second and first.parent == tmp_path and first.suffix == ".png"


def test_styles_csv_is_parsed_again_only_once_edited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The autocomplete reads the styles at every keystroke: an unchanged file is not parsed
    again, an edited one (even to the same size) is, and one edited too recently for its
    modification time to tell is parsed at every read."""
    parsed: list[Path] = []
    reader = csv.DictReader

    def counted(file: TextIO) -> csv.DictReader[str]:
        parsed.append(Path(file.name))
        return reader(file)

    monkeypatch.setattr(csv, "DictReader", counted)
    path = tmp_path / "styles.csv"
    settled = time.time_ns() - 10 * SETTLED_NS

    def write(text: str, written_at_ns: int) -> None:
        path.write_text(f"name,prompt,negative_prompt\n{text}\n")
        os.utime(path, ns=(written_at_ns, written_at_ns))

    write("Oil,oil painting,", settled)
    assert load_styles(path)["Oil"].prompt == "oil painting"
    load_styles(path)["Oil"] = Style("Oil", "changed by a caller", "")
    assert load_styles(path)["Oil"].prompt == "oil painting" and len(parsed) == 1
    write("Oil,oil pastels,", settled + 1_000_000_000)  # the same size
    assert load_styles(path)["Oil"].prompt == "oil pastels" and len(parsed) == 2
    # The same size and modification time (``cp -p``, ``touch -r``): only its change time
    # tells, which moves at the file system's clock tick.
    changed_at = path.stat().st_ctime_ns
    while path.stat().st_ctime_ns == changed_at:
        write("Oil,oil crayons,", settled + 1_000_000_000)
    assert load_styles(path)["Oil"].prompt == "oil crayons" and len(parsed) == 3
    # Modified "in the future" is as recent as now, however long the machine stalls.
    write("Ink,ink drawing,", time.time_ns() + 60 * 10**9)
    assert sorted(load_styles(path)) == ["Ink"]
    assert sorted(load_styles(path)) == ["Ink"] and len(parsed) == 5
    path.unlink()
    assert load_styles(path) == {}


def test_styles_csv_placeholder_append_and_unknown(tmp_path: Path) -> None:
    assert load_styles(tmp_path / "missing.csv") == {}
    path = tmp_path / "styles.csv"
    path.write_text(
        "name,prompt,negative_prompt\n"
        '"Oil","oil painting of {prompt}, canvas",photo\n'
        "Sharp,sharp focus,\n"
        "Soft , soft light ,  blurry \n"
        "Plain,,\n"
        ",ignored,\n"
    )
    styles = load_styles(path)
    assert sorted(styles) == ["Oil", "Plain", "Sharp", "Soft"]
    assert apply_style(styles, "Oil", "a cat", "dog") == (
        "oil painting of a cat, canvas",
        "dog, photo",
    )
    assert apply_style(styles, "Sharp", "a cat", None) == ("a cat, sharp focus", "")
    assert apply_style(styles, "Sharp", "", None) == ("sharp focus", "")
    # A style's texts are trimmed; an empty one leaves the member's text as it is.
    assert apply_style(styles, "Soft", "a cat", "dog") == ("a cat, soft light", "dog, blurry")
    assert apply_style(styles, "Plain", "a cat", None) == ("a cat", "")
    with pytest.raises(RequestError, match="style 'Nope' does not exist; known styles: Oil"):
        apply_style(styles, "Nope", "a cat", None)
    # No operator's file name for a member to puzzle over; a long list says it was cut.
    with pytest.raises(RequestError, match=r"^style 'Nope' does not exist: this bot has no"):
        apply_style({}, "Nope", "a cat", None)
    many = {f"s{n:02}": styles["Oil"] for n in range(12)}
    with pytest.raises(RequestError, match=r"known styles: s00, .*, s09 and 2 more$"):
        apply_style(many, "Nope", "a cat", None)


def test_styles_csv_without_its_columns_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A styles.csv whose first row does not name the columns is read as before (no name
    column: no style) and logged, as the refusal of its styles blames a missing file."""
    path = tmp_path / "styles.csv"
    path.write_text("title,text\nOil,oil painting\n")
    assert load_styles(path) == {}
    path.write_text("name,negative_prompt\nSoft,blurry\n")
    assert load_styles(path) == {"Soft": Style("Soft", "", "blurry")}
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "ERROR",
            f"{path}: the first row must name the columns name,prompt,negative_prompt; "
            f"missing {missing}",
        )
        for missing in ("name, prompt", "prompt")
    ]
