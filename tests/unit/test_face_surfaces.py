"""Faces outside the engine: ``easel tiny-model DIR --faces``, what ``easel doctor`` says,
``easel render --faces-*``, the inline ``--faces`` / ``--restore-faces`` flags, and a picture's
face keys read back by /use-settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli.main import main
from bot.infotext_import import request_from_infotext_text
from bot.requests import ImagineOptions, RequestError, build_request
from inference.infotext import infotext_from_png, parse_infotext
from tests.unit.test_cli import isolated, one_error_line
from tests.unit.test_infotext_import import INSTALLED

__all__ = ["isolated"]  # the autouse fixture: no stray settings, runs in tmp_path


def test_tiny_face_restorer_and_the_doctor_s_faces_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("EASEL_MODELS_DIR", str(tmp_path))
    main(["doctor"])
    out = capsys.readouterr().out
    assert "[ok ] faces: detector: OpenCV's Haar cascade" in out
    assert "restorers: none (face restoration needs a GFPGAN" in out

    assert main(["tiny-model", "--faces", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip().endswith("face_restore/tiny-restoreformer.safetensors")
    (tmp_path / "adetailer").mkdir()
    (tmp_path / "adetailer" / "yunet.onnx").write_bytes(b"not a model")
    main(["doctor"])
    out = capsys.readouterr().out
    assert "[ERR] faces: face detector yunet.onnx in models/adetailer/ is not a YuNet" in out
    (tmp_path / "adetailer" / "yunet.onnx").unlink()
    main(["doctor"])
    assert "restorers: tiny-restoreformer" in capsys.readouterr().out


def test_inline_face_flags_become_face_options() -> None:
    request = build_request(ImagineOptions(prompt="a portrait --faces --restore-faces"))
    assert request.prompt == "a portrait"
    assert request.options == {"fix_faces": True, "face_restore": True}
    assert build_request(ImagineOptions(prompt="a portrait")).options == {}
    with pytest.raises(RequestError, match="--faces alone, without a value"):
        build_request(ImagineOptions(prompt="a portrait --faces please"))


def test_render_fixes_faces_with_the_options_given(
    tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EASEL_MODELS_DIR", str(tiny_models_dir))
    quick = ["--steps", "2", "--size", "64x64", "--out", "out"]
    assert main(["render", "a cat --faces", "--faces-strength", "0.5", *quick]) == 0
    [path] = capsys.readouterr().out.split()
    infotext = infotext_from_png(Path(path).read_bytes())
    assert infotext is not None
    params = parse_infotext(infotext)[2]
    assert (params["ADetailer model"], params["ADetailer denoising strength"]) == (
        "haar frontal face",
        0.5,
    )
    assert main(["render", "a cat --faces", "--faces-strength", "3", *quick]) == 2
    assert "fix-faces strength must be a number from 0.05 to 1, got 3.0" in one_error_line(capsys)


def test_a_pictures_face_passes_are_read_back_from_its_infotext() -> None:
    text = (
        "a portrait\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x512, "
        "Model: tiny, RNG: CPU, ADetailer model: haar frontal face, ADetailer confidence: 0.5, "
        "ADetailer dilate erode: 4, ADetailer mask blur: 4, ADetailer denoising strength: 0.35, "
        "ADetailer inpaint only masked: True, ADetailer inpaint padding: 32, "
        "Face restoration: GFPGAN, Face restoration model: GFPGANv1.4"
    )
    imported = request_from_infotext_text(text, INSTALLED)
    assert imported.request.options == {
        "fix_faces": True,
        "fix_faces_confidence": 0.5,
        "fix_faces_strength": 0.35,
        "face_restore": True,
    }
    assert imported.unhonoured == []
