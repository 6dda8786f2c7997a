"""How Easel's processes log: text for people or JSON lines for collectors
(``EASEL_LOG_FORMAT``), with secrets removed from every line either way.

A job's state changes are logged by the queue as ``job <id> <event>`` with ``extra=
job_event(...)``; in JSON those fields become keys, so a collector can follow a job by id.
Every other line about one job names it as ``job <id>``: ``JobIdFilter`` gives it that
``job_id`` too, so the lines that say why (a traceback, a result not posted) follow the job.
Those lines never carry a prompt; the formatters here keep tokens out of every line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from bot.redaction import redact_url

__all__ = [
    "JOB_FIELDS",
    "JobIdFilter",
    "JsonFormatter",
    "Redactor",
    "TextFormatter",
    "install_logging",
    "job_event",
]

# The ``extra`` keys a job state line may carry; a JSON line copies them when present.
JOB_FIELDS = ("job_id", "event", "kind", "device", "private", "reason", "posted")
# A job named in a line's text: ``job <its 16 hex digits>`` (``jobs [...]`` names several).
_JOB_NAMED = re.compile(r"\bjob ([0-9a-f]{16})\b")
HIDDEN = "***"
# Interaction tokens sit in webhook and callback URLs; whoever holds one can post as the bot
# in that conversation for 15 minutes.
_URL_TOKENS = re.compile(r"(/(?:webhooks|interactions)/\d+/)[^/\s?\"']+")
_TEXT_FORMAT = "[%(asctime)s] [%(levelname)-8s] %(name)s: %(message)s"


def job_event(job_id: str, event: str, **fields: object) -> dict[str, object]:
    """The ``extra`` of a job state line: queued, started, requeued (its start did not happen:
    the broker did not answer), done, failed (with its ``reason``), cancelled, refunded,
    charged (stopped while running) or delivered (with where it was ``posted``), with the
    job's id (and its kind, device or privacy when known)."""
    return {"job_id": job_id, "event": event, **fields}


class JobIdFilter(logging.Filter):
    """Gives a line that names one job (``job <id>``) and carries no ``job_id`` that job's
    id, so that a collector's ``job_id`` finds every line about it, the worker's and the
    cogs' too, not only the state lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if hasattr(record, "job_id"):
            return True
        try:
            text = record.getMessage()
        except Exception:  # a filter runs outside emit's guard: emit reports it
            return True
        if named := _JOB_NAMED.search(text):
            record.job_id = named[1]
        return True


class Redactor:
    """Hides ``secrets``, URL credentials and interaction tokens in a text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = [secret for secret in secrets if secret]

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, HIDDEN)
        return _URL_TOKENS.sub(rf"\1{HIDDEN}", redact_url(text))


class TextFormatter(logging.Formatter):
    """The usual one-line text, traceback included, redacted as a whole."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__(_TEXT_FORMAT)
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the job fields
    the record carries, and the traceback when there is one; every text redacted."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self._redact(record.getMessage()),
        }
        line.update({key: getattr(record, key) for key in JOB_FIELDS if hasattr(record, key)})
        if record.exc_info:
            line["exception"] = self._redact(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = self._redact(self.formatStack(record.stack_info))
        return json.dumps(line, ensure_ascii=False, default=str)


def install_logging(
    log_format: Literal["text", "json"],
    secrets: Iterable[str],
    stream: TextIO | None = None,
    level: int = logging.INFO,
) -> logging.Handler:
    """Send the root logger's records at ``level`` and above to ``stream`` (stderr) in
    ``log_format``, redacted, Python's warnings among them; returns the handler (a test
    removes it again)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(JobIdFilter())
    redact = Redactor(secrets)
    handler.setFormatter(JsonFormatter(redact) if log_format == "json" else TextFormatter(redact))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    # Python's warnings (torch's, the libraries') as records of "py.warnings": redacted, and a
    # JSON line where a collector reads JSON, not bare text on stderr between its lines.
    logging.captureWarnings(True)
    return handler
