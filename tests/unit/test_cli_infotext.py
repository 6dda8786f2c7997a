"""``easel render --infotext FILE|TEXT``: renders from a picture's settings, other options
override them, what cannot be honoured is a warning, bad input one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from bot.cli.main import main
from inference.infotext import infotext_from_png, parse_infotext
from tests.unit.test_cli import isolated, one_error_line

__all__ = ["isolated"]  # the autouse fixture: no stray settings, run in tmp_path


def test_render_from_an_easel_png_and_its_text(
    tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EASEL_MODELS_DIR", str(tiny_models_dir))
    first_args = ["a (red:1.2) cat", "--negative", "dog", "--seed", "3", "--steps", "3"]
    assert main(["render", *first_args, "--sampler", "DPM++ 2M Karras", "--out", "a"]) == 0
    [first] = capsys.readouterr().out.split()
    original = Path(first).read_bytes()

    assert main(["render", "--infotext", first, "--out", "b"]) == 0
    captured = capsys.readouterr()
    [again] = captured.out.split()
    assert Path(again).read_bytes() == original
    assert captured.err == ""  # everything honoured

    infotext = infotext_from_png(original)
    assert infotext is not None
    assert main(["render", "--infotext", infotext, "--seed", "5", "--out", "c"]) == 0
    [reseeded] = capsys.readouterr().out.split()
    text = infotext_from_png(Path(reseeded).read_bytes())
    assert text is not None
    prompt, negative, params = parse_infotext(text)
    assert (prompt, negative, params["Seed"], params["Steps"]) == ("a (red:1.2) cat", "dog", 5, 3)
    assert (params["Sampler"], params["Schedule type"]) == ("DPM++ 2M", "Karras")


def test_settings_that_cannot_be_honoured_are_warnings(
    tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EASEL_MODELS_DIR", str(tiny_models_dir))
    Path("settings.txt").write_text(
        "a cat\nSteps: 2, Sampler: Restart, Seed: 9, Size: 64x64, Model: sdxl-base, RNG: CPU"
    )
    assert main(["render", "--infotext", "settings.txt", "--out", "o"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "easel render: warning: sampler 'Restart' is not available here; Euler a is used "
        "instead (the picture will differ)",
        "easel render: warning: model 'sdxl-base' is not installed or not allowed here; 'tiny' "
        "is used instead",
    ]
    assert Path(captured.out.split()[0]) == Path("o") / "9.png"


def test_bad_infotext_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--infotext", "just a prompt", "--out", "o"]) == 2
    assert "--infotext: no generation settings found" in one_error_line(capsys)
    Image.new("RGB", (8, 8)).save("plain.png")
    assert main(["render", "--infotext", "plain.png", "--out", "o"]) == 2
    assert "'plain.png' is a PNG that carries no parameters" in one_error_line(capsys)
    assert not Path("o").exists()
