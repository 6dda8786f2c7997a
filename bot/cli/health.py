"""``easel health``: asks this machine's metrics server whether the bot or worker is up; cheap
enough for a container health check every few seconds (no torch, no database, no broker)."""

from __future__ import annotations

import urllib.error
import urllib.request

__all__ = ["ask_health", "check_health"]

# A server bound to every address answers on loopback.
_ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def ask_health(host: str, port: int, timeout_s: float = 5.0) -> tuple[int | None, str]:
    """``/healthz``'s status on ``host:port`` (None: nothing answered), and a line that says
    what it said."""
    host = _ANY_ADDRESS.get(host, host)
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, f"{url}: {response.read().decode().strip()}"
    except urllib.error.HTTPError as error:
        return error.code, f"{url}: {error.code} {error.read().decode().strip()}"
    except OSError as error:  # refused, timed out, unreachable
        return None, f"{url}: {getattr(error, 'reason', error)}"


def check_health(host: str, port: int, timeout_s: float = 5.0) -> tuple[bool, str]:
    """Whether ``/healthz`` on ``host:port`` answers 200, and a line that says what it said."""
    status, said = ask_health(host, port, timeout_s)
    return status == 200, said
