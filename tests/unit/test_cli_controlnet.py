"""``easel tiny-model DIR --controlnet`` and ``easel render --control-image``: the contract's
ControlNet flags, run in-process through ``main``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from safetensors import safe_open

from bot.cli.main import main
from inference.infotext import infotext_from_png, parse_infotext
from tests.support.control_infotext import parse_control_infotext
from tests.unit.test_cli import isolated, one_error_line

__all__ = ["isolated"]  # the autouse fixture: no stray settings, runs in tmp_path


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("models")
    assert main(["tiny-model", str(directory / "tiny"), "--controlnet"]) == 0
    return directory


@pytest.fixture
def edges(models_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A picture with clear edges; EASEL_MODELS_DIR set to the tiny models."""
    monkeypatch.setenv("EASEL_MODELS_DIR", str(models_dir))
    picture = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(picture).rectangle((16, 8, 48, 56), fill="white")
    picture.save(tmp_path / "edges.png")
    return str(tmp_path / "edges.png")


def render(capsys: pytest.CaptureFixture[str], out: str, *extra: str) -> Path:
    argv = ["render", "a cat", "--seed", "4", "--steps", "2", "--size", "64x64", *extra]
    assert main([*argv, "--out", out]) == 0
    [printed] = capsys.readouterr().out.split()
    return Path(printed)


def test_tiny_model_controlnet_is_one_web_ui_file(models_dir: Path) -> None:
    path = models_dir / "ControlNet" / "tiny-controlnet.safetensors"
    with safe_open(str(path), framework="pt") as weights:
        names: list[str] = weights.keys()
    assert "control_model.input_hint_block.0.weight" in names
    assert (models_dir / "ControlNet" / "tiny-controlnet.config" / "config.json").is_file()


def test_render_with_a_control_image(edges: str, capsys: pytest.CaptureFixture[str]) -> None:
    plain = np.asarray(Image.open(render(capsys, "plain")), dtype=np.int16)
    steered_png = render(capsys, "steered", "--control-image", edges, "--control-type", "canny")
    steered = np.asarray(Image.open(steered_png), dtype=np.int16)
    assert np.abs(steered - plain).mean() > 2
    infotext = infotext_from_png(steered_png.read_bytes())
    assert infotext is not None
    fields = parse_control_infotext(str(parse_infotext(infotext)[2]["ControlNet 0"]))
    assert fields["Module"] == "canny" and fields["Model"].startswith("tiny-controlnet [")
    unweighted = render(
        capsys,
        "unweighted",
        *("--control-image", edges, "--control-type", "none", "--control-model"),
        *("tiny-controlnet", "--control-weight", "0"),
    )
    assert np.array_equal(np.asarray(Image.open(unweighted), dtype=np.int16), plain)


def test_an_unknown_control_type_is_named(edges: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["render", "a cat", "--control-image", edges, "--control-type", "sketch"]
    with pytest.raises(SystemExit) as exit_info:  # argparse's own refusal
        main([*argv, "--out", "out"])
    assert exit_info.value.code == 2
    assert "argument --control-type: invalid choice: 'sketch'" in one_error_line(capsys)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--control-type", "canny", "--control-model", "nope"],
            "--control-model 'nope' is not installed; installed: tiny-controlnet",
        ),
        (["--control-type", "canny", "--control-weight", "5"], "control weight must be between"),
        # In the operator's words (a member is told to ask an admin): where it goes.
        (["--control-type", "depth"], "put a transformers depth-estimation model folder"),
        ([], "--control-image needs --control-type (canny, tile"),
    ],
)
def test_bad_control_flags_exit_2_with_one_line(
    edges: str, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    argv = ["render", "a cat", "--control-image", edges, *extra, "--out", "out"]
    assert main(argv) == 2
    assert message in one_error_line(capsys)
    assert not Path("out").exists()


def test_a_control_image_that_is_no_picture_is_named(
    edges: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "notes.png").write_text("not a picture")
    argv = ["render", "a cat", "--control-image", "notes.png", "--control-type", "canny"]
    assert main([*argv, "--out", "out"]) == 2
    assert "control image is not a readable image" in one_error_line(capsys)
