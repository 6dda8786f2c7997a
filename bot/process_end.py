"""How ``easel run`` and ``easel worker`` end when their stop cannot end the usual way: a
device thread stuck inside a step past the stop's budget, or a second stop signal."""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import NoReturn

# The exit status after a stop whose clock ran out with a device thread still busy (a render
# step in a hung kernel or driver, a model load): the process ends without it, what it
# journals closed and the job handed back. 0 after every other stop; systemd marks a unit that
# stopped so "failed".
STUCK_DEVICE_EXIT_STATUS = 3


def exit_now(status: int) -> NoReturn:
    """End the process at once, threads and interpreter's exit skipped, its output written:
    a device thread stuck in a step would otherwise hold it for good (``concurrent.futures``
    joins its threads at the interpreter's exit)."""
    _flush_output()
    os._exit(status)


def end_at_once(signum: signal.Signals) -> NoReturn:
    """A second SIGINT or SIGTERM while stopping: whoever sent it will not wait for the rest
    of the stop. The process ends by that signal, as after a kill: the journal loses nothing
    (each write is one SQLite transaction), a running job is queued again at the next start
    (a broker's job is redelivered once its ack wait lapses), its attempt counted as a crash's."""
    logging.getLogger(__name__).warning(
        "%s again while stopping: ending now, without the rest of the stop; running jobs are "
        "queued again at the next start",
        signum.name,
    )
    _flush_output()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    exit_now(128 + signum)  # the shell's status for it, were the signal blocked here


def _flush_output() -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
