"""The contract's bad arguments (one line naming the argument and what it accepts, exit 2, no
traceback, nothing written, before any model loads) where they were late, doubled or in a
member's words: models and ControlNets not installed, ``easel tiny-model``'s DIR and family,
a setting an ``easel doctor`` run finds malformed or naming no installed model."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.cli.doctor import diagnose
from bot.cli.main import COMMANDS, main
from bot.settings import Settings, load_settings
from tests.unit.test_cli import isolated, one_error_line

__all__ = ["isolated"]  # the autouse fixture: no stray settings, runs in tmp_path

# The tests run in their own folders: the interpreters they start find Easel here.
IMPORTABLE = {
    "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH")])
    )
}


def easel(argv: list[str], **env: str) -> tuple[int, list[str], bool]:
    """``easel ARGV`` in a fresh interpreter: its exit status, its stderr's lines and whether
    it imported torch."""
    code = (
        "import json, sys; from bot.cli.main import main; code = main(sys.argv[1:]); "
        "print(json.dumps([code, 'torch' in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **IMPORTABLE, **env},
    )
    status, torch_loaded = json.loads(result.stdout.strip().splitlines()[-1])
    return status, result.stderr.strip().splitlines(), torch_loaded


@pytest.fixture
def one_model(tiny_models_dir: Path, tmp_path: Path) -> Path:
    """A models folder holding the tiny model only: no ControlNet."""
    models = tmp_path / "one-model"
    models.mkdir()
    (models / "tiny").symlink_to(tiny_models_dir / "tiny", target_is_directory=True)
    Image.new("RGB", (64, 64)).save(tmp_path / "edges.png")
    return models


@pytest.mark.parametrize(
    ("argv", "setting", "error"),
    [
        (["--model", "nope"], "", "--model 'nope' is not installed; installed: tiny"),
        ([], "nope", "EASEL_DEFAULT_MODEL='nope' is not installed; installed: tiny"),
        (["--refiner", "nope"], "", "--refiner 'nope' is not installed; installed: tiny"),
        (
            ["--control-image", "edges.png", "--control-type", "canny", "--control-model", "n"],
            "",
            "--control-model 'n' is not installed; installed: none (put a ControlNet in ",
        ),
        (
            ["--control-image", "edges.png", "--control-type", "canny"],
            "",
            "--control-image needs a ControlNet, and none is installed: put a ControlNet in ",
        ),
        (["--init-image", "gone.png"], "", "--init-image 'gone.png' is missing or not a file"),
    ],
)
def test_render_names_what_is_not_installed_in_one_line_before_torch_loads(
    one_model: Path, argv: list[str], setting: str, error: str
) -> None:
    env = {"EASEL_MODELS_DIR": str(one_model), "EASEL_DEFAULT_MODEL": setting}
    status, stderr, torch_loaded = easel(["render", "a cat", *argv, "--out", "out"], **env)
    assert (status, torch_loaded) == (2, False), stderr
    [line] = stderr  # no log line of the operator's beside it
    assert line.startswith(f"easel render: error: {error}")
    assert not Path("out").exists()


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["afile"], "DIR 'afile' is a file: name a folder (made when missing)"),
        (
            ["sd3", "--family", "sd3", "--inpainting"],
            "--inpainting: there is no inpainting sd3 model; use --family sd15 or sdxl",
        ),
        (["/proc/nope/x"], "DIR '/proc/nope/x' cannot be made (/proc/nope: No such file"),
    ],
)
def test_tiny_model_refuses_a_dir_or_family_in_one_line_before_torch_loads(
    argv: list[str], error: str
) -> None:
    Path("afile").write_text("")
    status, stderr, torch_loaded = easel(["tiny-model", *argv])
    assert (status, torch_loaded) == (2, False), stderr
    [line] = stderr
    assert line.startswith(f"easel tiny-model: error: {error}")
    assert not Path("sd3").exists()


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (
            ["--variation-seed", "-5"],
            "variation seed must be a whole number between 0 and 9223372036854775807, or -1 for a "
            "random seed, got -5",
        ),
        (["--strength", "0.5"], "--strength needs --init-image: the picture to redraw"),
    ],
)
def test_render_names_the_variation_seed_and_a_strength_with_no_picture(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", "a cat", *argv, "--out", "out"]) == 2
    assert one_error_line(capsys) == f"easel render: error: {error}"
    assert not Path("out").exists()


def test_doctor_fails_a_default_model_not_installed_naming_those_that_are(
    one_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EASEL_MODELS_DIR", str(one_model))
    monkeypatch.setenv("EASEL_DEVICES", "cpu")
    for default, ok, detail in (
        ("nope", False, "EASEL_DEFAULT_MODEL='nope' is not installed; installed: tiny"),
        ("tiny", True, "tiny"),
    ):
        monkeypatch.setenv("EASEL_DEFAULT_MODEL", default)
        [check] = [c for c in diagnose(load_settings(None)) if c.name == "default model"]
        assert (check.ok, check.detail) == (ok, detail)


def test_doctor_lists_every_malformed_setting_among_its_checks_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EASEL_MAX_STEPS", "0")
    monkeypatch.setenv("EASEL_ALLOW_DMS", "maybe")
    monkeypatch.setenv("EASEL_DEVICES", "cpu")
    assert main(["doctor"]) == 1
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert lines[:2] == [
        "[ERR] settings: EASEL_MAX_STEPS='0' is invalid: must be a whole number between 1 and "
        "150 (read as its default below)",
        "[ERR] settings: EASEL_ALLOW_DMS='maybe' is invalid: must be 1 or 0 (or true or false, "
        "yes or no, on or off) (read as its default below)",
    ]
    assert "[ok ] device cpu: usable" in lines  # the checks after them ran
    assert lines[-1].startswith("[ok ] broker: ")


def test_a_reader_gone_ends_the_output_quietly() -> None:
    """``easel explain ... | head -1``: the pipe's reader went before Easel wrote."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    code = "import sys; from bot.cli.main import main; sys.exit(main(['explain', 'a cat']))"
    with os.fdopen(write_end, "wb") as stdout:
        result = subprocess.run(
            [sys.executable, "-c", code],
            stdout=stdout,
            stderr=subprocess.PIPE,
            timeout=120,
            env={**os.environ, **IMPORTABLE},
        )
    assert (result.returncode, result.stderr) == (1, b"")


def test_render_shows_the_warning_of_a_lora_it_leaves_out(one_model: Path) -> None:
    """Its only sign on the console: a one-shot command logs warnings, not errors only."""
    from safetensors.numpy import save_file

    (one_model / "Lora").mkdir()
    # One half of a LoRA pair: it does not load (diffusers raises), the render goes on.
    half = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": np.zeros((4, 9))}
    save_file(
        {key: value.astype(np.float32) for key, value in half.items()},
        str(one_model / "Lora" / "badlora.safetensors"),
    )
    argv = ["render", "a cat <lora:badlora:1>", "--steps", "2", "--size", "64x64", "--seed", "1"]
    status, stderr, _ = easel([*argv, "--out", "out"], EASEL_MODELS_DIR=str(one_model))
    assert status == 0, stderr
    assert any("LoRA badlora not loaded: " in line for line in stderr), stderr
    assert Path("out/1.png").is_file()


@pytest.mark.parametrize(
    ("argv", "setting", "error"),
    [
        (["--model", "nope"], "", "--model 'nope' is not installed; installed: tiny"),
        ([], "nope", "EASEL_DEFAULT_MODEL='nope' is not installed; installed: tiny"),
    ],
)
def test_a_creative_upscale_names_a_model_not_installed_before_torch_loads(
    one_model: Path, argv: list[str], setting: str, error: str
) -> None:
    env = {"EASEL_MODELS_DIR": str(one_model), "EASEL_DEFAULT_MODEL": setting}
    command = ["upscale", "edges.png", "--mode", "creative", *argv, "--out", "out"]
    status, stderr, torch_loaded = easel(command, **env)
    assert (status, torch_loaded) == (2, False), stderr
    assert stderr == [f"easel upscale: error: {error}"]
    assert not Path("out").exists()


def test_a_broken_pipe_of_a_serving_command_is_its_own_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not a stdout reader gone: ``easel run`` and ``easel worker`` fail on it, not exit 1."""

    def broken(args: argparse.Namespace, settings: Settings) -> int:
        raise BrokenPipeError(32, "Broken pipe")  # a peer's socket, a child's pipe

    for command in ("run", "worker"):
        monkeypatch.setitem(COMMANDS, command, broken)
        with pytest.raises(BrokenPipeError):
            main([command])
