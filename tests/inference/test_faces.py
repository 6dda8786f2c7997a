"""Faces on a real photograph (scikit-image's astronaut, shipped inside its wheel): the local
detector finds the face, a tiny random RestoreFormer restores it and the ADetailer-style pass
re-renders it with the tiny model, and nothing away from the face changes."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from inference.engine import Engine
from inference.face_options import (
    FACE_RESTORE,
    FIX_FACES,
    FIX_FACES_STRENGTH,
    HAAR_DETECTOR,
    FaceOptions,
)
from inference.face_restorers import resolve_face_restorer
from inference.faces import (
    RESTORE_MARGIN,
    FaceBox,
    face_detector,
    load_face_restorer,
    restore_faces,
)
from inference.flow_families import FLUX_DEV, SD3, FlowFamily
from inference.infotext import InfotextValue, format_infotext, parse_infotext, png_with_infotext
from inference.model_cache import LoadedModel, VaeOverride
from inference.passes import faces as faces_pass
from inference.passes.faces import separate_settings
from inference.passes.networks import vae_params
from inference.registry import ModelRegistry
from inference.tiny import write_tiny_face_restorer, write_tiny_model, write_tiny_upscaler
from inference.types import RenderFailed, RenderInputError, RenderRequest, StepProgress
from tests.inference.conftest import TINY

# Where the astronaut's face is in the 512x512 photograph (checked by eye once).
FACE_CENTRE = (223, 113)
# Its ``Prompt warnings`` are whoever wrote the text's: a render of it must not carry them.
PICTURE_S_WARNING = "admins ask everyone to run /forget-me"
# ADetailer's keys for a fix pass that used settings of its own (a separate model...).
SEPARATE_KEYS = [
    f"ADetailer {key}"
    for what in ("checkpoint", "VAE", "sampler", "steps", "CFG scale", "CLIP skip")
    for key in (f"use separate {what}", what)
]
PHOTO_INFOTEXT = format_infotext(
    "portrait of an astronaut",
    "",
    {
        "Steps": 4,
        "Seed": 1234,
        "Size": "512x512",
        "Model": TINY,
        "Prompt warnings": PICTURE_S_WARNING,
    },
)


@pytest.fixture(scope="module")
def face_models(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny checkpoint and a tiny RestoreFormer in ``face_restore/``."""
    directory = tmp_path_factory.mktemp("face-models")
    (directory / TINY).symlink_to(models_dir / TINY, target_is_directory=True)
    write_tiny_face_restorer(directory)
    return directory


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(skimage.data.astronaut())


@pytest.fixture(scope="module")
def photo_png(photo: Image.Image, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    path.write_bytes(png_with_infotext(photo, PHOTO_INFOTEXT))
    return path


def only_near(face: FaceBox, before: np.ndarray, after: np.ndarray) -> None:
    """Something changed inside ``face``'s restore crop, and nothing outside it."""
    crop = face.square_around(RESTORE_MARGIN, (before.shape[1], before.shape[0]))
    changed = np.abs(before.astype(int) - after.astype(int)).sum(axis=-1) > 0
    inside = np.zeros_like(changed)
    inside[crop.top : crop.bottom, crop.left : crop.right] = True
    assert changed[inside].mean() > 0.5, "the face was left as it was"
    assert not changed[~inside].any(), "pixels away from the face changed"


def test_the_haar_detector_finds_the_astronauts_face(photo: Image.Image, tmp_path: Path) -> None:
    detector = face_detector(tmp_path)  # no models/adetailer/: OpenCV's own cascade
    assert detector.name == HAAR_DETECTOR
    [face] = detector.detect(photo)
    assert face.left < FACE_CENTRE[0] < face.right and face.top < FACE_CENTRE[1] < face.bottom
    assert 60 <= face.right - face.left <= 160
    assert detector.detect(Image.new("RGB", (256, 256), "grey")) == []


def test_restoration_changes_the_face_and_nothing_else(
    face_models: Path, photo: Image.Image
) -> None:
    name, path = resolve_face_restorer(ModelRegistry(face_models), None)
    restorer = load_face_restorer(name, path, "cpu")
    assert (name, restorer.architecture) == ("tiny-restoreformer", "RestoreFormer")
    [face] = face_detector(face_models).detect(photo)
    restored = restore_faces(restorer, photo, [face])
    only_near(face, np.asarray(photo), np.asarray(restored))


def test_a_restorer_giving_not_a_number_fails_naming_it(tmp_path: Path, photo: Image.Image) -> None:
    """A file of NaN weights restores a face to NaN pixels, which would be pasted in black."""
    made = write_tiny_face_restorer(tmp_path / "made")
    state = load_file(str(made))
    nan = {k: v.fill_(torch.nan) if v.is_floating_point() else v for k, v in state.items()}
    broken = tmp_path / "nan-restoreformer.safetensors"
    save_file(nan, str(broken))
    restorer = load_face_restorer("nan-restoreformer", broken, "cpu")
    [face] = face_detector(tmp_path).detect(photo)
    with pytest.raises(RenderFailed) as failed:
        restore_faces(restorer, photo, [face])
    assert str(failed.value) == (
        "face restorer 'nan-restoreformer' (nan-restoreformer.safetensors) gave not-a-number "
        "or infinite values, a blank picture: its file may be broken; try another face "
        "restorer, or ask an admin to check it"
    )


def test_restorers_are_named_checked_and_refused_with_a_sentence(
    face_models: Path, tmp_path: Path
) -> None:
    registry = ModelRegistry(face_models)
    # An upscaler in the web UI's GFPGAN/ folder is not a face restorer.
    upscaler = write_tiny_upscaler(tmp_path / "GFPGAN", scale=2)
    assert ModelRegistry(tmp_path).face_restorer_files() == {"tiny-esrgan-2x": upscaler}
    with pytest.raises(RenderInputError, match="not a face restorer"):
        load_face_restorer("tiny-esrgan-2x", upscaler, "cpu")
    # Without a name, a file named as a restorer comes before other files (the web UI's
    # GFPGAN/ holds its detector's and parser's weights too).
    restorer = write_tiny_face_restorer(tmp_path)
    assert resolve_face_restorer(ModelRegistry(tmp_path), None) == ("tiny-restoreformer", restorer)
    with pytest.raises(RenderInputError, match="no face restorer 'gfpgan' here; choose one of "):
        resolve_face_restorer(registry, "gfpgan")


def test_face_options_refuse_bad_values_with_the_range() -> None:
    # img2img's rule at the default 0.4: int(0.4 x 20) + 1.
    assert FaceOptions.from_options({FIX_FACES: True}).fix_steps(20) == 9
    with pytest.raises(RenderInputError, match=r"strength must be a number from 0\.05 to 1"):
        FaceOptions.from_options({FIX_FACES: True, FIX_FACES_STRENGTH: 1.5})
    with pytest.raises(RenderInputError, match="true or a face restorer's name"):
        FaceOptions.from_options({FACE_RESTORE: 3})


def test_face_options_split_a_batch() -> None:
    plain = RenderRequest("a face", seed=1)
    fixed = RenderRequest("a face", seed=1, options={FIX_FACES: True})
    assert plain.pipeline_key() != fixed.pipeline_key()


def test_fix_faces_rerenders_and_restores_only_the_face_of_a_stored_picture(
    face_models: Path, photo: Image.Image, photo_png: Path
) -> None:
    engine = Engine(face_models, device="cpu")
    request = RenderRequest(
        "",
        mode="faces",
        init_image=str(photo_png),
        steps=4,
        options={FIX_FACES: True, FACE_RESTORE: True},
    )
    [result] = engine.render(request)
    after = np.asarray(Image.open(io.BytesIO(result.png)).convert("RGB"))
    [face] = face_detector(face_models).detect(photo)
    only_near(face, np.asarray(photo), after)
    prompt, _, params = parse_infotext(result.infotext)
    # The picture keeps its own prompt and seed; the passes are recorded as the web UI does.
    assert prompt == "portrait of an astronaut" and params["Seed"] == 1234
    assert params["ADetailer model"] == HAAR_DETECTOR
    assert params["ADetailer denoising strength"] == 0.4
    assert params["Face restoration"] == "RestoreFormer"
    assert params["Face restoration model"] == "tiny-restoreformer"
    assert PICTURE_S_WARNING not in result.infotext
    # Its text names the model that painted the face and no sampler or CFG: the pass's are.
    assert "ADetailer checkpoint" not in params and "ADetailer steps" not in params
    assert (params["ADetailer sampler"], params["ADetailer CFG scale"]) == ("Euler a", 7)


def test_the_fix_pass_runs_img2img_s_steps_as_adetailer_s_inpaint_does(
    face_models: Path, photo_png: Path
) -> None:
    """4 steps at the default 0.4: the web UI's img2img (and so ADetailer's inpaint) runs
    int(0.4 x 4) + 1 = 2 on the 4-step schedule; diffusers' count would run 1."""
    engine = Engine(face_models, device="cpu")
    request = RenderRequest(
        "", mode="faces", init_image=str(photo_png), steps=4, options={FIX_FACES: True}
    )
    reports: list[StepProgress] = []
    [result] = engine.render(request, progress=reports.append)
    ran = FaceOptions.from_options(request.options).fix_steps(request.steps)
    assert ran == 2 == result.steps_run
    assert [(report.step, report.total_steps) for report in reports] == [(1, ran), (2, ran)]


def test_a_fix_pass_over_another_model_s_picture_records_what_painted_the_face(
    face_models: Path, photo: Image.Image, tmp_path: Path
) -> None:
    """A picture whose model is not installed here (the default stands in, as the Fix faces
    button does, without the picture's clip skip and VAE): its text keeps the picture's
    settings, ADetailer's own keys say the model (name and hash), VAE, sampler, steps, CFG
    and clip skip the fix pass used instead, and the seed 🔄 drew for it."""
    text = format_infotext(
        "portrait of an astronaut",
        "",
        {
            "Steps": 4,
            "Sampler": "DPM++ 2M",
            "Schedule type": "Karras",
            "CFG scale": 5,
            "Seed": 1234,
            "Model hash": "a074b8864e",
            "Model": "realisticVision_v51",
            "VAE": "anime.safetensors",
            "Clip skip": 2,
        },
    )
    path = tmp_path / "elsewhere.png"
    path.write_bytes(png_with_infotext(photo, text))
    engine = Engine(face_models, device="cpu")
    request = RenderRequest(
        "", mode="faces", init_image=str(path), seed=99, steps=2, options={FIX_FACES: True}
    )
    [result] = engine.render(request)
    params = parse_infotext(result.infotext)[2]
    assert (params["Model"], params["Sampler"], params["Steps"], params["Seed"]) == (
        "realisticVision_v51",
        "DPM++ 2M",
        4,
        1234,
    )
    assert result.seed == params["ADetailer seed"] == 99
    here = engine.registry.short_hash(engine.registry.resolve(None))
    separate = {key: value for key, value in params.items() if key in SEPARATE_KEYS}
    assert separate == {
        "ADetailer use separate checkpoint": "True",
        "ADetailer checkpoint": f"{TINY} [{here}]",
        "ADetailer use separate sampler": "True",
        "ADetailer sampler": "Euler a",
        "ADetailer use separate steps": "True",
        "ADetailer steps": 2,
        "ADetailer use separate CFG scale": "True",
        "ADetailer CFG scale": 7,
        "ADetailer use separate VAE": "True",
        "ADetailer VAE": "None",  # the web UI's word for the model's own
        "ADetailer use separate CLIP skip": "True",
        "ADetailer CLIP skip": 1,
    }
    # Said when Automatic too: ADetailer reads none as the picture's schedule (Karras).
    assert params["ADetailer scheduler"] == "Automatic"


@pytest.mark.parametrize(("flow", "cfg"), [(None, 7.0), (FLUX_DEV, 3.5), (SD3, 7.0)])
def test_a_fix_pass_reads_a_picture_s_guidance_as_its_model_takes_it(
    flow: FlowFamily | None, cfg: float
) -> None:
    """Forge's text with true CFG 7 beside distilled guidance 3.5: an SD or SD 3 model's fix
    pass at CFG 7, or a Flux one's at 3.5, used what the text says: no ADetailer key of its
    own."""
    params: dict[str, InfotextValue] = {
        "Steps": 2,
        "Sampler": "Euler a",
        "CFG scale": 7,
        "Distilled CFG Scale": 3.5,
        "Seed": 5,
        "Model": TINY,
    }
    model = SimpleNamespace(entry=SimpleNamespace(name=TINY), short_hash="0123456789", flow=flow)
    request = RenderRequest("", steps=2, cfg_scale=cfg, sampler="Euler a")
    used = separate_settings(params, cast(LoadedModel, model), request, vae=None, seed=5)
    assert used == {}


def test_a_fix_pass_s_own_vae_is_written_by_its_file_name_as_adetailer_writes_it() -> None:
    """ADetailer's VAE values are the web UI's VAE file names (``warm.safetensors``), as the
    fix pass's text has them (``vae_params``, the picture's ``VAE``); a stem would not be
    found by the web UI's paste."""
    params: dict[str, InfotextValue] = {"Steps": 2, "Sampler": "Euler a", "Seed": 5}
    params |= {"CFG scale": 7, "Model": TINY}
    model = SimpleNamespace(entry=SimpleNamespace(name=TINY), short_hash="0123456789", flow=None)
    override = SimpleNamespace(path=Path("models/VAE/warm.safetensors"), sha256="0" * 64)
    vae = vae_params(cast(VaeOverride, override))["VAE"]
    request = RenderRequest("", steps=2, sampler="Euler a", options={"vae": "warm"})
    used = separate_settings(params, cast(LoadedModel, model), request, vae=vae, seed=5)
    assert used == {"ADetailer use separate VAE": True, "ADetailer VAE": "warm.safetensors"}
    # The picture's own VAE, by its file name too: nothing of its own to write.
    same = separate_settings(
        params | {"VAE": "warm.safetensors"}, cast(LoadedModel, model), request, vae=vae, seed=5
    )
    assert same == {}


def test_a_faces_job_must_ask_for_something_and_find_a_face(
    face_models: Path, photo_png: Path, tmp_path: Path
) -> None:
    engine = Engine(face_models, device="cpu")
    with pytest.raises(RenderInputError, match="must ask to fix or restore faces"):
        engine.render(RenderRequest("", mode="faces", init_image=str(photo_png)))
    # No face: refused (so the job is refunded), not charged for the same picture again.
    blank = tmp_path / "blank.png"
    Image.new("RGB", (128, 128), "grey").save(blank)
    for options in ({FIX_FACES: True}, {FACE_RESTORE: True}):
        with pytest.raises(
            RenderInputError, match=r"no face found in this picture: the detector \(haar"
        ):
            engine.render(RenderRequest("", mode="faces", init_image=str(blank), options=options))


def test_a_picture_s_seed_the_journal_cannot_keep_is_recorded_as_its_low_bits(
    face_models: Path, photo: Image.Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another UI's 64-bit seed: the pass records its low 32 bits (past ``MAX_SEED`` it could
    not be stored), which draw the same CPU initial noise, not the text's."""
    params = {"Steps": 4, "Sampler": "Euler", "Seed": 2**64 - 1}
    text = format_infotext("portrait of an astronaut", "", params)
    path = tmp_path / "64-bit.png"
    path.write_bytes(png_with_infotext(photo, text))
    engine = Engine(face_models, device="cpu")
    # The seed is chosen before the restorer runs; its 6 s on the CPU prove nothing here.
    monkeypatch.setattr(faces_pass, "restored_faces", lambda images, *_: (images, {}))
    request = RenderRequest("", mode="faces", init_image=str(path), options={FACE_RESTORE: True})
    [result] = engine.render(request)
    assert result.seed == 2**32 - 1


def test_fix_faces_alone_repaints_inside_the_face_box_only(
    face_models: Path, photo: Image.Image, photo_png: Path
) -> None:
    engine = Engine(face_models, device="cpu")
    request = RenderRequest(
        "", mode="faces", init_image=str(photo_png), steps=2, options={FIX_FACES: True}
    )
    [result] = engine.render(request)
    after = np.asarray(Image.open(io.BytesIO(result.png)).convert("RGB"))
    [face] = face_detector(face_models).detect(photo)
    changed = np.abs(np.asarray(photo).astype(int) - after.astype(int)).sum(axis=-1) > 0
    assert changed[face.top : face.bottom, face.left : face.right].mean() > 0.5
    # The mask is the box grown 4 pixels, then blurred 4: nothing beyond that changes.
    margin = face.grown(4 + 3 * 4, photo.size)
    changed[margin.top : margin.bottom, margin.left : margin.right] = False
    assert not changed.any()
    assert "Face restoration" not in parse_infotext(result.infotext)[2]


def test_a_render_asked_to_fix_faces_runs_the_pass_after_it(face_models: Path) -> None:
    engine = Engine(face_models, device="cpu")
    plain = RenderRequest("a portrait", seed=3, steps=2, width=64, height=64)
    [made] = engine.render(plain)
    [fixed] = engine.render(dataclasses.replace(plain, options={FIX_FACES: True}))
    params = parse_infotext(fixed.infotext)[2]
    assert params["ADetailer model"] == HAAR_DETECTOR
    assert params["ADetailer confidence"] == 0.3
    # A random tiny model draws no face: the pass finds none and leaves the picture alone.
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(fixed.png))), np.asarray(Image.open(io.BytesIO(made.png)))
    )


def test_a_flow_model_is_refused_rather_than_its_faces_left_alone(tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "tiny-sd3", family="sd3")
    engine = Engine(tmp_path, device="cpu")
    request = RenderRequest("a portrait", steps=1, width=64, height=64, options={FIX_FACES: True})
    with pytest.raises(RenderInputError, match=r"tiny-sd3 \(SD 3\) cannot fix or restore faces"):
        engine.render(request)
