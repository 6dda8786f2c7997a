"""``easel doctor`` beside a running Easel: it reads that process's /healthz (EASEL_METRICS_ADDR,
as ``easel health`` does), served here by the real metrics server."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from bot import metrics
from bot.cli.main import main
from tests.unit.test_settings import SETTING_NAMES

DEVICE_LOST = "device cuda:0 lost: CUDA error: an illegal memory access was encountered"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env, data written here


async def _doctor_lines(port: int, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Doctor's lines about the running Easel, with EASEL_METRICS_ADDR naming ``port``."""
    Path(".env").write_text(f"EASEL_METRICS_ADDR=0.0.0.0:{port}\n")  # noqa: ASYNC240 (tiny)
    await asyncio.to_thread(main, ["doctor"])
    return [line for line in capsys.readouterr().out.splitlines() if "running Easel" in line]


async def test_doctor_says_what_the_running_easel_s_health_route_says(
    capsys: pytest.CaptureFixture[str],
) -> None:
    trouble: str | None = DEVICE_LOST
    server = await metrics.serve("127.0.0.1", 0, lambda: True, lambda: trouble)
    url = f"http://127.0.0.1:{server.port}/healthz"
    try:
        assert await _doctor_lines(server.port, capsys) == [
            f"[ERR] running Easel: {url}: 503 {DEVICE_LOST}"
        ]
        trouble = None
        assert await _doctor_lines(server.port, capsys) == [f"[ok ] running Easel: {url}: ok"]
    finally:
        await server.close()


async def test_doctor_notes_without_failing_that_no_easel_answers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as unused:  # a port nothing listens on once closed
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    [line] = await _doctor_lines(port, capsys)
    assert line.startswith("[ok ] running Easel: not running, or not answering: ")
    assert f"127.0.0.1:{port}/healthz" in line


async def test_doctor_asks_no_health_route_when_easel_metrics_addr_is_empty(
    capsys: pytest.CaptureFixture[str],
) -> None:
    await asyncio.to_thread(main, ["doctor"])
    assert "running Easel" not in capsys.readouterr().out
