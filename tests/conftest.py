"""Fixtures shared by the whole suite: tiny models, a database, and a guard against ERROR
logs."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiosqlite
import pytest
from hypothesis import settings

from db.database import connect
from tests.fake_discord.fixtures import fake_discord
from tests.support.discord_retries import short_webhook_server_error_waits
from tests.support.tokenizers import share_clip_tokenizers

# torch's OpenMP threads spin while they wait for work, by default: beside another busy thread
# or process (the event loop, a worker or bot process, another test run on a 2-core machine) a
# tiny 4-step render took 17-33 s instead of 0.1 s. Waiting asleep changes no result. Read when
# torch is imported (none of the imports above import it); subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Property tests check behaviour, not speed (benchmarks/ measure that): hypothesis' default
# 200 ms per example fails fast examples that a loaded 2-core machine pauses (a full garbage
# collection late in the suite took half a second). Two seconds still catch an example that
# runs away; a test may set its own.
settings.register_profile("easel", deadline=2000)
# CI gates a landing: each property test runs the same examples on the same code (a random
# find there would fail a landing for a bug the change did not make). Runs elsewhere keep
# exploring: they found the banned-word bypasses.
settings.register_profile("ci", parent=settings.get_profile("easel"), derandomize=True)
settings.load_profile(os.environ.get("EASEL_HYPOTHESIS_PROFILE", "easel"))

__all__ = ["conn", "error_logs", "fake_discord", "tiny_models_dir"]

_undo_shared_tokenizers: list[Callable[[], None]] = []


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Model loads share their CLIP tokenizers (tests/support/tokenizers.py) from the first
    test that runs with transformers imported: a run that never imports it does not pay for
    importing it."""
    if not _undo_shared_tokenizers and "transformers" in sys.modules:
        _undo_shared_tokenizers.append(share_clip_tokenizers())


def pytest_sessionfinish(session: pytest.Session) -> None:
    while _undo_shared_tokenizers:
        _undo_shared_tokenizers.pop()()


@pytest.fixture(scope="session", autouse=True)
def short_server_error_waits() -> Iterator[None]:
    """discord.py's 25 s of waits on a webhook call the fake fails with a 5xx, cut to 0.25 s
    (tests/support/discord_retries.py): the tries are kept, and 429 waits and an interaction's
    first response's waits are real."""
    with short_webhook_server_error_waits():
        yield


@pytest.fixture(scope="session", autouse=True)
def short_write_watch() -> Iterator[None]:
    """A weights file written in the last 2 s is watched 0.5 s for a copy still writing it
    before it loads (``inference.file_versions.being_written``), and tests load the models
    they have just written: watched 0.05 s here, the check run all the same. Subprocesses
    (worker tests) watch their 0.5 s."""
    from inference import file_versions

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(file_versions, "WRITE_WATCH_S", 0.05)
        yield


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding one tiny random-weight SD1.5 model named ``tiny``, its tiny
    ControlNet ``ControlNet/tiny-controlnet`` and a tiny 2x ESRGAN upscaler,
    ``upscalers/tiny-esrgan-2x``."""
    from inference.tiny import write_tiny_controlnet, write_tiny_model, write_tiny_upscaler

    directory = tmp_path_factory.mktemp("models")
    write_tiny_controlnet(write_tiny_model(directory / "tiny", family="sd15", seed=0))
    write_tiny_upscaler(directory / "upscalers", scale=2)
    return directory


@pytest.fixture
async def conn(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    """A fresh Easel database (migrated) in the test's own folder."""
    connection = await connect(tmp_path / "easel.sqlite3")
    yield connection
    await connection.close()


class ErrorLogs(logging.Handler):
    """Collects ERROR records; the test fails at teardown unless each was expected."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self._expected: list[re.Pattern[str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def expect(self, pattern: str) -> None:
        self._expected.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        messages = [record.getMessage() for record in self.records]
        return [m for m in messages if not any(p.search(m) for p in self._expected)]


@pytest.fixture
def error_logs() -> Iterator[ErrorLogs]:
    handler = ErrorLogs()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
    if unexpected := handler.unexpected():
        pytest.fail("ERROR logged:\n  " + "\n  ".join(unexpected), pytrace=False)
