"""A long prompt on Flux and SD3 through ``easel render`` with ``EASEL_LOG_FORMAT=json``: the
part of it beyond CLIP's 77 tokens, which diffusers' pipelines log, reaches no stderr line
(diffusers' and transformers' own handlers wrote there past Easel's formatter), and every
line that does is one JSON object: a library's error goes through Easel's handler, redacted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from inference.tiny import write_tiny_model

ROOT = Path(__file__).parents[2]
# Over CLIP's 77 tokens and the tiny T5's 32: each pipeline quotes what it cuts off.
LONG_PROMPT = " ".join(f"secretword{i}" for i in range(60))
TOKEN = "bot-token-in-a-library-error"


def test_a_long_prompt_reaches_no_stderr_line_and_each_line_is_json(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_tiny_model(models / "flux", family="flux")
    write_tiny_model(models / "sd3", family="sd3")
    render = ["render", LONG_PROMPT, "--seed", "1", "--steps", "1", "--size", "64x64"]
    script = (
        "import logging\n"
        "from bot.cli.main import main\n"
        f"print([main([*{render!r}, '--model', model, '--out', {str(tmp_path)!r}]) "
        "for model in ('flux', 'sd3')])\n"
        f"logging.getLogger('diffusers.pipelines').error('failed with %s', {TOKEN!r})\n"
    )
    env = {
        **os.environ,
        "EASEL_MODELS_DIR": str(models),
        "EASEL_DATA_DIR": str(tmp_path / "data"),
        "EASEL_LOG_FORMAT": "json",
        "DISCORD_TOKEN": TOKEN,
        "PYTHONPATH": str(ROOT),
    }
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.stdout.splitlines()[-1:] == ["[0, 0]"], run.stderr
    assert "secretword" not in run.stderr, run.stderr
    lines = [json.loads(line) for line in run.stderr.splitlines()]
    assert [(line["logger"], line["message"]) for line in lines] == [
        ("diffusers.pipelines", "failed with ***")
    ]
