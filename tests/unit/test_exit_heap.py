"""``easel``'s entry point leaves its heap to the process's end: the garbage its command left
is collected (finalizers run), what is still alive is frozen, so the interpreter's exit does not
collect over every object torch and diffusers made (seconds of a stop on a loaded machine)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# ``easel explain`` through the entry point, its command swapped for one that leaves a cycle
# behind (garbage) and keeps another; the collector is off, so only the entry point's own
# collection can finalize the garbage.
COMMAND_LEAVING_A_CYCLE = """
import gc
import bot.cli.main as cli
from bot.cli.entry import main

class Cycle:
    def __init__(self): self.me = self
    def __del__(self): print("finalized", flush=True)

kept = []

def explain(args, settings):
    Cycle()
    kept.append(Cycle())
    return 0

gc.disable()
cli.COMMANDS["explain"] = explain
status = main(["explain", "a cat"])
print(status, gc.get_freeze_count() > 0, flush=True)
"""


def test_the_entry_point_collects_its_garbage_then_freezes_what_is_left(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", COMMAND_LEAVING_A_CYCLE],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.splitlines() == ["finalized", "0 True"], done.stderr
