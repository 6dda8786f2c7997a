"""The quota's picture-size reads (``bot.jobs.accounting.picture_size``), recorded and held
off the event loop: an edit's reservation must not open its picture where acknowledgements
wait."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bot.images import picture_size
from bot.jobs import accounting


def picture_reads_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The pictures whose size the quota reads from now on; a read on this thread (call it on
    the event loop's) fails the test."""
    loop_thread = threading.get_ident()
    reads: list[Path] = []

    def read_off_the_loop(path: Path) -> tuple[int, int]:
        assert threading.get_ident() != loop_thread, f"{path} read on the event loop"
        reads.append(path)
        return picture_size(path)

    monkeypatch.setattr(accounting, "picture_size", read_off_the_loop)
    return reads
