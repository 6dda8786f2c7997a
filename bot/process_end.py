"""How ``easel run`` and ``easel worker`` end when their stop cannot end the usual way: a
device thread still busy past the stop's budget (stuck inside a step, or loading), or a second
stop signal."""

from __future__ import annotations

import logging
import os
import resource
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import NoReturn

# The exit status after a stop whose clock ran out with a device thread still inside a step
# (a hung kernel or driver) or a job's render: the process ends without it, what it journals
# closed and the job handed back. 0 after every other stop, one that left a thread only
# loading included (``status_after_stop``); systemd marks a unit that stopped so "failed".
STUCK_DEVICE_EXIT_STATUS = 3
# The exit status of a run its settings end (DISCORD_TOKEN refused while running), as the
# command line's after a ``SettingsError``.
SETTINGS_EXIT_STATUS = 2
# The signals that stop ``easel run`` and ``easel worker``.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

log = logging.getLogger(__name__)


def status_after_stop(
    status: int,
    in_work: Sequence[str],
    loading: Sequence[str],
    *,
    failed: bool = False,
    settings_refused: bool = False,
) -> int:
    """The exit status of a stop that leaves device threads busy, not waited for: ``status``
    when it says something already (a lost device's: its supervisor restarts the process for
    it); else ``SETTINGS_EXIT_STATUS`` when a setting ended the run (``settings_refused``: its
    fix is the operator's, whatever the threads); else ``STUCK_DEVICE_EXIT_STATUS`` when one
    is inside a step or a job (``in_work``); else 1 when the process ends ``failed`` (an
    error, as Python's exit after one); else 0.
    A thread only loading (``loading``: "cuda:0 was still loading model x", no job on it) is
    no fault: nothing of a job is lost with it, and a restart during a warm start is routine.
    Each is logged, so a load that hangs for good (a stalled network disk) is named at every
    stop."""
    for each in loading:
        log.info("stopped while %s: not waited for (no job was running there)", each)
    if status:
        return status
    if settings_refused:
        return SETTINGS_EXIT_STATUS
    if in_work:
        return STUCK_DEVICE_EXIT_STATUS
    return 1 if failed else 0


def turn_off_core_dumps(keep: bool) -> None:
    """No core file from a crash of ``easel run`` or ``easel worker`` unless the operator asks
    (``keep``, EASEL_KEEP_CORE_DUMPS): one would hold the bot token, members' prompts and
    pictures, written wherever the system puts cores. Soft and hard limit both, so nothing
    the process starts (a compiler, a thread's library) raises it again. The kernel applies
    the limit to a core file only: a core handed to a program (``core_pattern`` ``|...``) is
    that program's to keep or not (systemd-coredump keeps none under a page; a distribution's
    crash reporter may: docs/security.md)."""
    if not keep:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


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
    log.warning(
        "%s again while stopping: ending now, without the rest of the stop; running jobs are "
        "queued again at the next start",
        signum.name,
    )
    _flush_output()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    exit_now(128 + signum)  # the shell's status for it, were the signal blocked here


class EarlyStop:
    """A stop signal heard before the event loop handles them (the command line's imports,
    from ``bot.cli.entry`` on; ``easel worker``'s seconds of importing torch; ``easel run``'s
    of discord): noted (``signum``) for the loop to stop at once, where the signal would
    end the process (status 143, or a KeyboardInterrupt's traceback). A second one ends it at
    once (``end_at_once``), as a second one while stopping does."""

    def __init__(self) -> None:
        self.signum: signal.Signals | None = None
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._heard)

    def _heard(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum is not None:
            end_at_once(signal.Signals(signum))
        self.signum = signal.Signals(signum)


def _flush_output() -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
