"""``easel worker`` whose import of torch waits, before it begins, until a file exists: a test
signals it there, in the seconds a real start spends importing torch (before the event loop
handles signals), then creates the file to let it go on. Prints "importing torch" once it
waits.

    python -m tests.distributed.held_import_main GO_FILE
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

from bot.cli.main import main

# How often the wait looks for the file.
POLL_S = 0.01


class HeldImport(MetaPathFinder):
    def __init__(self, go: Path) -> None:
        self._go = go

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname == "torch":
            sys.meta_path.remove(self)
            print("importing torch", flush=True)
            while not self._go.exists():
                time.sleep(POLL_S)
        return None  # found by the finders after this one


if __name__ == "__main__":
    assert "torch" not in sys.modules, "imported before the worker's start: nothing to hold"
    sys.meta_path.insert(0, HeldImport(Path(sys.argv[1])))
    sys.exit(main(["worker"]))
