"""``easel COMMAND`` (through its entry point, ``bot.cli.entry``) whose import of MODULE waits,
before it begins, until a file exists: a test signals it there, in the seconds a real start
spends importing (torch for ``easel worker``, the command line itself for either serving
command: before the event loop handles signals), then creates the file to let it go on.
Prints "importing MODULE" once it waits.

    python -m tests.distributed.held_import_main GO_FILE MODULE COMMAND
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

from bot.cli.entry import main

# How often the wait looks for the file.
POLL_S = 0.01


class HeldImport(MetaPathFinder):
    def __init__(self, module: str, go: Path) -> None:
        self._module = module
        self._go = go

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname == self._module:
            sys.meta_path.remove(self)
            print(f"importing {fullname}", flush=True)
            while not self._go.exists():
                time.sleep(POLL_S)
        return None  # found by the finders after this one


if __name__ == "__main__":
    go, module, command = sys.argv[1:]
    assert module not in sys.modules, "imported before the command's start: nothing to hold"
    sys.meta_path.insert(0, HeldImport(module, Path(go)))
    sys.exit(main([command]))
