"""Credentials out of anything printed or logged: URLs may carry a password or a token."""

from __future__ import annotations

import re

__all__ = ["redact_url"]

# scheme://userinfo@ (up to the last @ of the authority, as a password may hold one): only
# the userinfo is hidden; host, port and path stay.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s]*)@")


def redact_url(text: str) -> str:
    """``text`` with the credentials of every URL in it hidden: ``nats://user:pass@host``
    becomes ``nats://user:***@host``, and a token (``nats://token@host``) ``nats://***@host``.
    Works on a bare URL, a comma-separated list, or a message that quotes one."""

    def hide(match: re.Match[str]) -> str:
        user, colon, _ = match["userinfo"].partition(":")
        return f"{match['scheme']}{user + ':***' if colon else '***'}@"

    return _USERINFO.sub(hide, text)
