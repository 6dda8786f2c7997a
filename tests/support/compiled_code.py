"""A benchmark's smoke test run inside the suite's process must not drop the compiled code of
the tests around it."""

from __future__ import annotations

import pytest
import torch


def compiled_code_kept(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """For this test only, ``torch.compiler.reset`` records that it was asked instead of
    dropping every compiled function of the process: a benchmark calls it between variants
    to free what one compiled (its smoke runs on the CPU compile nothing), while the other
    tests of this worker (``--dist loadfile``) keep theirs. Returns the calls, one entry each."""
    asked: list[None] = []
    monkeypatch.setattr(torch.compiler, "reset", lambda: asked.append(None))
    return asked
