"""``easel``'s entry point (and ``python -m bot``'s), kept light: ``easel run`` and
``easel worker`` hear a stop signal (``EarlyStop``) from their first statement on. The command
line's imports take 0.4 s on a quiet machine and seconds on a loaded one, and a SIGTERM in them
would end the process by the signal (status 143; SIGINT, a KeyboardInterrupt's traceback)
instead of the clean stop that says so and exits 0."""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence

from bot.process_end import EarlyStop

# The long-running commands, which stop cleanly on SIGINT or SIGTERM.
SERVING_COMMANDS = ("run", "worker")


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    # Read before the parser, which needs the command line's imports: easel takes no option
    # before its command.
    serving = bool(arguments) and arguments[0] in SERVING_COMMANDS
    early_stop = EarlyStop() if serving else None
    from bot.cli.main import main as command_line

    status = command_line(arguments, early_stop=early_stop, own_process=True)
    _leave_the_heap_to_the_exit()
    return status


def _leave_the_heap_to_the_exit() -> None:
    """The process ends next: its garbage is collected once now (finalizers run), what is
    still alive is frozen and goes with the process. Else the interpreter's exit collects over
    every object torch, diffusers and transformers made and takes them apart one by one: 1.5
    to 2.5 s of a stop on a loaded machine (0.5 s with this), before systemd or a test sees the
    process end."""
    gc.collect()
    gc.freeze()
