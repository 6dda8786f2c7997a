"""``easel tiny-model --family sdxl-refiner`` and ``easel render --refiner --refiner-switch``;
and a server's model list governing the refiner too."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli.main import main
from bot.policy.moderation import NsfwPolicy, check_request
from bot.user_errors import UserError
from inference.infotext import infotext_from_png, parse_infotext
from tests.unit.test_cli import isolated, one_error_line

__all__ = ["isolated"]


def test_render_with_a_tiny_refiner_from_the_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    models = tmp_path / "models"
    assert main(["tiny-model", str(models / "xl"), "--family", "sdxl"]) == 0
    assert main(["tiny-model", str(models / "xl-refiner"), "--family", "sdxl-refiner"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("EASEL_MODELS_DIR", str(models))
    quick = ["--seed", "1", "--steps", "4", "--size", "64x64", "--model", "xl"]
    refined = ["render", "a cat", *quick, "--refiner", "xl-refiner", "--refiner-switch", "0.5"]
    assert main([*refined, "--out", "out"]) == 0
    [printed] = capsys.readouterr().out.split()
    infotext = infotext_from_png(Path(printed).read_bytes())
    assert infotext is not None
    params = parse_infotext(infotext)[2]
    assert str(params["Refiner"]).startswith("xl-refiner [")
    assert params["Refiner switch at"] == 0.5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--refiner", "r", "--refiner-switch", "1.5"], "refiner switch must be between 0.01"),
        (["--refiner-switch", "0.5"], "refiner switch needs a refiner model"),
    ],
)
def test_bad_refiner_arguments_are_one_line(
    options: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["render", "a cat", *options, "--out", "o"]) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_a_server_s_model_list_governs_the_refiner() -> None:
    def check(refiner: str | None) -> None:
        check_request(
            model="xl",
            channel_id=1,
            channel_is_age_restricted=False,
            allowed_channels=set(),
            allowed_models={"xl"},
            nsfw_policy=NsfwPolicy.ALLOW,
            refiner=refiner,
        )

    check(None)
    with pytest.raises(UserError, match="`secret-refiner` is not installed or not allowed here"):
        check("secret-refiner")
