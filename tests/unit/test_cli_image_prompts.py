"""``easel tiny-model DIR --ipadapter`` and ``easel render --sref``: an image prompt without
Discord, run in-process through ``main``."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from safetensors.torch import save_file
from torch import zeros

import bot.engines
from bot.cli.main import main
from inference.infotext import infotext_from_png, parse_infotext
from tests.unit.test_cli import isolated, one_error_line

__all__ = ["isolated"]  # the autouse fixture: no stray settings, runs in tmp_path


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("models")
    assert main(["tiny-model", str(directory / "tiny"), "--ipadapter"]) == 0
    return directory


@pytest.fixture
def style(models_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A picture to follow; EASEL_MODELS_DIR set to the tiny models."""
    monkeypatch.setenv("EASEL_MODELS_DIR", str(models_dir))
    picture = Image.new("RGB", (64, 64), "navy")
    ImageDraw.Draw(picture).ellipse((8, 8, 56, 56), fill="orange")
    picture.save(tmp_path / "style.png")
    return str(tmp_path / "style.png")


def test_tiny_model_writes_an_adapter_and_its_encoder(models_dir: Path) -> None:
    assert (models_dir / "tiny" / "model_index.json").is_file()
    assert (models_dir / "ipadapter" / "tiny-ipadapter.safetensors").is_file()
    assert (models_dir / "ipadapter" / "image_encoder" / "config.json").is_file()


def test_render_with_sref(style: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["render", "a cat", "--seed", "4", "--steps", "2", "--size", "64x64"]
    assert main([*argv, "--sref", style, "--sref-strength", "0.7", "--out", "out"]) == 0
    [printed] = capsys.readouterr().out.split()
    infotext = infotext_from_png(Path(printed).read_bytes())
    assert infotext is not None
    params = parse_infotext(infotext)[2]
    assert str(params["IP-Adapter"]).startswith("tiny-ipadapter [")
    assert (params["IP-Adapter weight"], params["IP-Adapter mode"]) == (0.7, "full")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sref-strength", "1"], "--sref-strength needs --sref PATH"),
        (["--sref", "notes.png"], "--sref 'notes.png' is not a readable image"),
        (["--sref", "style.png", "--sref-strength", "3"], "strength must be between 0 and 2"),
        (["--sref", "style.png", "--sref-mode", "style"], "style-only image prompts need an SDXL"),
    ],
)
def test_bad_sref_flags_exit_2_with_one_line(
    style: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    extra: list[str],
    message: str,
) -> None:
    (tmp_path / "notes.png").write_text("not a picture")
    argv = ["render", "a cat", "--steps", "2", "--size", "64x64", *extra, "--out", "out"]
    assert main(argv) == 2
    assert message in one_error_line(capsys)


def test_a_wrong_family_adapter_is_refused_before_the_model_loads(
    models_dir: Path,
    style: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The bot's check before queueing (check_image_prompt_fits), in the bot's sentence: an
    SDXL-wide adapter for the tiny SD model is refused from file headers, no engine built."""
    wrong = tmp_path / "models"
    (wrong / "ipadapter").mkdir(parents=True)
    (wrong / "tiny").symlink_to(models_dir / "tiny", target_is_directory=True)
    encoder = models_dir / "ipadapter" / "image_encoder"
    (wrong / "ipadapter" / "image_encoder").symlink_to(encoder, target_is_directory=True)
    tensors = {"image_proj.proj.weight": zeros(4, 4), "ip_adapter.1.to_k_ip.weight": zeros(4, 2048)}
    save_file(tensors, str(wrong / "ipadapter" / "xl-ipadapter.safetensors"))
    monkeypatch.setenv("EASEL_MODELS_DIR", str(wrong))

    def no_engine(*_: object) -> object:
        raise AssertionError("an engine was built: the adapter was found wrong only at render")

    monkeypatch.setattr(bot.engines, "engine_factory_for", no_engine)
    argv = ["render", "a cat", "--steps", "2", "--size", "64x64", "--sref", style, "--out", "out"]
    assert main(argv) == 2
    assert "no installed IP-Adapter fits this checkpoint: put an IP-Adapter for the" in (
        one_error_line(capsys)
    )
