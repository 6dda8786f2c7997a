"""``easel render`` fills what nobody gave from the model's family, as the bot does: a Flux
schnell model renders its 4 steps at CFG 1 with Euler, not 20 steps at CFG 7; a flag given
still wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli.main import main
from inference.infotext import infotext_from_png, parse_infotext
from inference.tiny import write_tiny_model
from tests.unit.test_cli import isolated

__all__ = ["isolated"]


@pytest.fixture
def schnell_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "models" / "my-flux-schnell", family="flux-schnell")
    monkeypatch.setenv("EASEL_MODELS_DIR", str(tmp_path / "models"))


def rendered(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[object, ...]:
    assert main(["render", "a cat", "--seed", "1", *arguments, "--out", "out"]) == 0
    [printed] = capsys.readouterr().out.split()
    infotext = infotext_from_png(Path(printed).read_bytes())
    assert infotext is not None
    params = parse_infotext(infotext)[2]
    return params["Model"], params["Steps"], params["CFG scale"], params["Sampler"]


@pytest.mark.usefixtures("schnell_models")
def test_render_takes_the_model_s_family_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert rendered(capsys, "--model", "my-flux-schnell") == ("my-flux-schnell", 4, 1.0, "Euler")
    # No --model: the default model's family (the only one installed here) counts too.
    # Schnell runs no CFG: its text says 1 whatever --cfg gives (a flag still wins: --steps).
    assert rendered(capsys, "--steps", "2", "--cfg", "3") == ("my-flux-schnell", 2, 1.0, "Euler")
