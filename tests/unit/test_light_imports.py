"""The settings and the command line load without discord, torch or the cogs: ``easel explain``,
``easel doctor`` and every bad-argument exit pay for neither (import-linter cannot see an import
inside a function, so this runs them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _loaded_of(imports: str, watched: set[str]) -> str:
    """Which of the ``watched`` top-level modules ``import IMPORTS`` loads in a fresh
    interpreter, sorted."""
    code = f"import sys, {imports}; print(sorted({watched!r} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.strip()


def test_the_settings_and_the_command_line_import_no_discord_torch_or_cogs() -> None:
    assert _loaded_of("bot.settings, bot.cli.main", {"discord", "torch", "cogs"}) == "[]"


def test_the_bot_imports_no_torch_before_it_logs_in() -> None:
    # The engine, the captioner and the segmenter import torch on their own threads, when first
    # used: a restarting bot answers Discord seconds sooner (and process tests start faster).
    assert _loaded_of("bot.app", {"torch", "transformers", "diffusers"}) == "[]"


def _modules_loaded_by(argv: list[str], env: dict[str, str], before: str = "") -> str:
    """Runs ``easel ARGV`` in a fresh interpreter; its exit status and which of discord and the
    cogs it loaded."""
    code = (
        f"import sys; {before}from bot.cli.main import main; code = main({argv!r}); "
        "print(code, sorted({'discord', 'cogs'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, **env},
    )
    return result.stdout.strip().splitlines()[-1]


def test_easel_worker_builds_its_engines_without_discord(tmp_path: Path) -> None:
    # The broker is left out (run_worker returns at once): its engine factory is built first.
    stub_broker = (
        "import bot.jobs.broker.worker as broker; "
        "broker.run_worker = lambda config, engines, early_stop: 0; "
    )
    env = {"EASEL_QUEUE_URL": "nats://127.0.0.1:4222", "EASEL_DATA_DIR": str(tmp_path)}
    assert _modules_loaded_by(["worker"], env, before=stub_broker) == "0 []"


def test_easel_worker_keeps_its_jobs_input_pictures_in_the_data_folder(tmp_path: Path) -> None:
    # Its exit status says whether the worker's config names EASEL_DATA_DIR/job-inputs.
    root = str(tmp_path / "job-inputs")
    stub_broker = (
        "import bot.jobs.broker.worker as broker; "
        "broker.run_worker = lambda config, engines, early_stop: "
        f"int(str(config.job_files_root) != {root!r}); "
    )
    env = {"EASEL_QUEUE_URL": "nats://127.0.0.1:4222", "EASEL_DATA_DIR": str(tmp_path)}
    assert _modules_loaded_by(["worker"], env, before=stub_broker) == "0 []"


def test_easel_render_builds_its_engine_without_discord(tmp_path: Path) -> None:
    # The engine is built and asked to render from an empty models folder: a usage error. (The
    # command's own check, which would refuse that before building it, is left out.)
    (tmp_path / "models").mkdir()
    env = {"EASEL_MODELS_DIR": str(tmp_path / "models"), "EASEL_DATA_DIR": str(tmp_path)}
    argv = ["render", "a cat", "--steps", "2", "--size", "64x64", "--out", str(tmp_path / "out")]
    unchecked = "import bot.cli.main as cli; cli._check_models = lambda *args: None; "
    assert _modules_loaded_by(argv, env, before=unchecked) == "2 []"
