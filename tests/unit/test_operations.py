"""The operating settings, the log formats' redaction, and `easel health` against a real
metrics server."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import aiohttp
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot import metrics
from bot.cli.health import check_health
from bot.cli.main import main
from bot.logging_setup import JobIdFilter, install_logging, job_event
from bot.settings import Settings, SettingsError, load_settings

TOKEN = "MTIz.bot-token.secret"
WEBHOOK = "https://discord.com/api/v10/webhooks/123/aW50ZXJhY3Rpb24tdG9rZW4/messages/@original"
CALLBACK = "https://discord.com/api/v10/interactions/456/aW50ZXJhY3Rpb24tdG9rZW4/callback"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:80", ("::1", 80)),
    ],
)
def test_metrics_addr_is_host_and_port(value: str, expected: tuple[str, int]) -> None:
    settings = Settings(_env_file=None, EASEL_METRICS_ADDR=value)  # type: ignore[call-arg]
    assert settings.metrics_endpoint == expected


def test_no_metrics_addr_means_no_server() -> None:
    assert Settings(_env_file=None).metrics_endpoint is None  # type: ignore[call-arg]


@pytest.mark.parametrize("value", ["9100", "localhost", ":9100", "host:99999", "host:http"])
def test_a_bad_metrics_addr_is_named_with_what_is_accepted(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EASEL_METRICS_ADDR", value)
    with pytest.raises(SettingsError, match=r"EASEL_METRICS_ADDR=.*host:port.*0-65535"):
        load_settings(env_file=None)


def test_log_format_is_text_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EASEL_LOG_FORMAT", "JSON")
    assert load_settings(env_file=None).log_format == "json"
    monkeypatch.setenv("EASEL_LOG_FORMAT", "xml")
    with pytest.raises(SettingsError, match="EASEL_LOG_FORMAT"):
        load_settings(env_file=None)


def log_through(log_format: Literal["text", "json"], emit: Callable[[logging.Logger], None]) -> str:
    """What the installed handler writes while ``emit(logger)`` logs."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = install_logging(log_format, secrets=(TOKEN,), stream=stream)
    try:
        emit(logging.getLogger("easel.test"))
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        logging.captureWarnings(False)
    return stream.getvalue()


def leak_secrets(logger: logging.Logger) -> None:
    logger.info("token %s, webhook %s", TOKEN, WEBHOOK)
    logger.warning("callback %s via nats://easel:hunter2@broker:4222", CALLBACK)
    try:
        raise RuntimeError(f"failed with {TOKEN} at {WEBHOOK}")
    except RuntimeError:
        logger.exception(
            "job 0123456789abcdef failed", extra=job_event("0123456789abcdef", "failed")
        )


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_reaches_a_log_line(log_format: Literal["text", "json"]) -> None:
    written = log_through(log_format, leak_secrets)
    for secret in (TOKEN, "aW50ZXJhY3Rpb24tdG9rZW4", "hunter2"):
        assert secret not in written
    # What is left still says what happened.
    assert "/webhooks/123/***/messages/@original" in written
    assert "/interactions/456/***/callback" in written
    assert "nats://easel:***@broker:4222" in written
    assert "RuntimeError" in written


def test_a_json_line_per_record_with_the_job_fields() -> None:
    written = log_through("json", leak_secrets)
    lines = [json.loads(line) for line in written.splitlines()]
    assert [line["level"] for line in lines] == ["info", "warning", "error"]
    failed = lines[2]
    assert failed["job_id"] == "0123456789abcdef" and failed["event"] == "failed"
    assert failed["logger"] == "easel.test" and "Traceback" in failed["exception"]
    assert "job_id" not in lines[0]


def test_a_line_whose_arguments_do_not_format_is_left_to_logging_to_report() -> None:
    """The job-id filter runs outside a handler's guard: a call whose arguments do not fit its
    text (a library's, say) must not raise into the code that logged (FIN26_1)."""
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "job %s %s", ("0123456789abcdef",), None
    )
    assert JobIdFilter().filter(record) is True
    assert not hasattr(record, "job_id")


def test_a_line_naming_one_job_carries_its_id() -> None:
    """A line about one job, in its text only (``job <id> …``, anywhere), is found by its
    ``job_id``; a line naming several (``jobs [...]``) or none has none; a line's own
    ``job_id`` stands (audit AUD15 finding 3)."""

    def emit(logger: logging.Logger) -> None:
        logger.error("job %s failed on %s: internal error", "0123456789abcdef", "cpu")
        logger.info("/show of job %s: its checks ran long", "fedcba9876543210")
        logger.warning("jobs %s not started", ["0123456789abcdef", "fedcba9876543210"])
        logger.info("job 0123 is no id")
        logger.info("job %s queued", "aaaaaaaaaaaaaaaa", extra=job_event("bbbbbbbbbbbbbbbb", "x"))

    lines = [json.loads(line) for line in log_through("json", emit).splitlines()]
    assert [line.get("job_id") for line in lines] == [
        "0123456789abcdef",
        "fedcba9876543210",
        None,
        None,
        "bbbbbbbbbbbbbbbb",
    ]


def test_a_python_warning_is_a_redacted_json_line() -> None:
    def warn(_: logging.Logger) -> None:
        warnings.warn(f"a library saw {TOKEN}", UserWarning, stacklevel=1)

    [line] = [json.loads(line) for line in log_through("json", warn).splitlines()]
    assert line["logger"] == "py.warnings" and line["level"] == "warning"
    assert "UserWarning: a library saw ***" in line["message"] and TOKEN not in line["message"]


async def test_easel_health_follows_the_health_route() -> None:
    healthy = False
    server = await metrics.serve("127.0.0.1", 0, lambda: healthy)
    try:
        ok, detail = await _check(server.port)
        assert not ok and "503" in detail
        healthy = True
        ok, detail = await _check(server.port)
        assert ok and detail.endswith(": ok")
    finally:
        await server.close()
    ok, _ = await _check(server.port)  # nothing listens any more
    assert not ok


async def _check(port: int) -> tuple[bool, str]:
    """``easel health``'s check, as the container runs it against a server on every address."""
    return await asyncio.to_thread(check_health, "0.0.0.0", port, 2.0)


def fake_torch(available: bool) -> SimpleNamespace:
    """What the GPU memory collector reads of torch.cuda: two devices holding some memory."""
    return SimpleNamespace(
        cuda=SimpleNamespace(
            is_available=lambda: available,
            is_initialized=lambda: available,
            device_count=lambda: 2,
            memory_allocated=lambda index: 1000 * (index + 1),
            memory_reserved=lambda index: 4000 * (index + 1),
        )
    )


def test_gpu_memory_is_read_from_torch_at_scrape_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", fake_torch(available=True))
    text = generate_latest(metrics.METRICS_REGISTRY).decode()
    assert 'easel_gpu_memory_bytes{device="cuda:1",kind="allocated"} 2000.0' in text
    assert 'easel_gpu_memory_bytes{device="cuda:0",kind="reserved"} 4000.0' in text
    monkeypatch.setitem(sys.modules, "torch", fake_torch(available=False))
    assert "easel_gpu_memory_bytes{" not in generate_latest(metrics.METRICS_REGISTRY).decode()


async def test_every_metric_served_is_named_easel_the_process_facts_included() -> None:
    """The contract: metric names start with ``easel_``. prometheus-client's default registry
    would add ``process_*``, ``python_gc_*`` and ``python_info`` beside Easel's own."""
    server = await metrics.serve("127.0.0.1", 0, lambda: True)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{server.port}/metrics") as response,
        ):
            text = await response.text()
    finally:
        await server.close()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"easel_queue_depth", "easel_refusals"} <= names
    assert [name for name in names if not name.startswith("easel_")] == []
    if sys.platform == "linux":  # prometheus-client reads the process's facts from /proc
        assert {"easel_process_cpu_seconds", "easel_process_resident_memory_bytes"} <= names


async def test_the_health_command_exits_0_when_up_and_2_without_a_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("EASEL_METRICS_ADDR", raising=False)
    assert await asyncio.to_thread(main, ["health"]) == 2
    assert "EASEL_METRICS_ADDR is empty" in capsys.readouterr().err
    server = await metrics.serve("127.0.0.1", 0, lambda: True)
    try:
        monkeypatch.setenv("EASEL_METRICS_ADDR", f"0.0.0.0:{server.port}")
        assert await asyncio.to_thread(main, ["health"]) == 0
    finally:
        await server.close()
    assert await asyncio.to_thread(main, ["health"]) == 1


async def test_a_taken_port_is_one_clear_error() -> None:
    first = await metrics.serve("127.0.0.1", 0, lambda: True)
    try:
        with pytest.raises(metrics.MetricsServerError, match=f"127.0.0.1:{first.port}: cannot"):
            await metrics.serve("127.0.0.1", first.port, lambda: True)
    finally:
        await first.close()
