"""``easel run`` and ``easel worker`` write no core file when they crash (it would hold the bot
token, members' prompts and pictures) unless the operator sets EASEL_KEEP_CORE_DUMPS. Proved in
a process of its own: a lowered hard limit cannot be raised again."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_settings import SETTING_NAMES

# Runs ``easel worker`` (no EASEL_QUEUE_URL: it stops at once, after its settings are read) as
# the ``easel`` entry point does, once kept and once not, saying the core limits after each.
WORKER_TWICE = """
import os, resource
from bot.cli.entry import main
os.environ["EASEL_KEEP_CORE_DUMPS"] = "true"
print(main(["worker"]), *resource.getrlimit(resource.RLIMIT_CORE))
del os.environ["EASEL_KEEP_CORE_DUMPS"]
print(main(["worker"]), *resource.getrlimit(resource.RLIMIT_CORE))
"""
SOME_CORE = 1 << 20


def _allow_some_core() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (SOME_CORE, SOME_CORE))


def test_a_serving_command_turns_core_dumps_off_unless_kept(tmp_path: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
    if os.geteuid() != 0 and hard != resource.RLIM_INFINITY and hard < SOME_CORE:
        pytest.skip(f"core files are limited to {hard} bytes here already: nothing to lower")
    environment = {name: value for name, value in os.environ.items() if name not in SETTING_NAMES}
    environment.pop("EASEL_KEEP_CORE_DUMPS", None)
    environment["PYTHONPATH"] = str(Path(__file__).parents[2])
    done = subprocess.run(
        [sys.executable, "-c", WORKER_TWICE],
        cwd=tmp_path,
        env=environment,
        preexec_fn=_allow_some_core,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    kept, turned_off = done.stdout.splitlines()
    assert kept == f"2 {SOME_CORE} {SOME_CORE}"
    assert turned_off == "2 0 0"
