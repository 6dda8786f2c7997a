"""An exit for code that would end the process (``os._exit``) run inside a test's process."""

from __future__ import annotations

from typing import NoReturn


class Exited(Exception):
    """What ``exit_process`` raises: the status the process would have ended with."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def exit_process(status: int) -> NoReturn:
    """Where ``os._exit`` would end the process: the test's goes on."""
    raise Exited(status)
