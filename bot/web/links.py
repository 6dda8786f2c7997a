"""Signed, expiring, single-use links to the mask editor page, and the signing the admin
dashboard's links and sessions use too (pure: no discord, no torch).

A link carries who may use it, where, and on which picture; the HMAC (SHA-256) over those
fields and the link's purpose (a token made for one page is refused by the others) is keyed
by ``EASEL_WEB_SECRET`` or, when unset, a random secret kept in ``EASEL_DATA_DIR/web-secret``.
Anyone holding the URL can open the page, so the link is short-lived, works once, and the
submit checks again that the member may still act.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from bot.user_errors import Reason, UserError, as_sentence

log = logging.getLogger(__name__)

# As long as the interaction the link was given in: Discord's tokens also live 15 minutes.
LINK_LIFETIME_S = 15 * 60
# A used link's record is kept this long past its expiry: a host clock stepped back by less
# (a time zone's offset, 14 h at most) cannot make a spent link usable again.
USED_KEPT_PAST_EXPIRY_S = 24 * 60 * 60
_SECRET_BYTES = 32


_REGION = "region"
_REGION_AGAIN = "click Vary (Region) again"


class SingleUse(Protocol):
    """A link that expires and works once (its nonce is remembered until it expires)."""

    @property
    def expires_at(self) -> int: ...

    @property
    def nonce(self) -> str: ...


class LinkRefused(UserError):
    """The link is forged, expired or used, or what it allows is no longer allowed; the
    message says which, to the member, as a sentence (``as_sentence``) like any refusal, and
    ``reason`` why, as the server's dashboard keeps it: ``Reason.PERMISSION`` unless given (a
    forged link, a session gone), ``Reason.INPUT`` for a link expired or used already."""

    def __init__(self, message: str, reason: Reason = Reason.PERMISSION) -> None:
        super().__init__(as_sentence(message), reason)


class DiscordDidNotAnswer(LinkRefused):
    """Discord failed while the page's member was looked up: refused, but the failure is
    Discord's (or Easel's), not the member's, so it is counted under ``Reason.DISCORD``, no
    refusal of theirs is kept, and the page answers 503 (try again), not 403."""

    def __init__(self, message: str) -> None:
        super().__init__(message, Reason.DISCORD)


@dataclass(frozen=True)
class RegionLink:
    """What a mask-editor link allows: member ``user_id`` repaints picture ``idx`` of job
    ``job_id``, in the server and channel where they clicked, until ``expires_at``."""

    job_id: str
    idx: int
    user_id: int
    guild_id: int | None
    channel_id: int | None
    private: bool
    expires_at: int
    nonce: str


def load_secret(configured: str, data_dir: Path, name: str = "web-secret") -> bytes:
    """The configured secret, else the one stored in ``data_dir / name`` (made on first use,
    0600; a stored one shorter than 32 bytes, as a crash of an older Easel could leave, is made
    anew)."""
    if configured:
        return configured.encode()
    path = data_dir / name
    try:
        stored: bytes | None = path.read_bytes()
    except FileNotFoundError:
        stored = None
    if stored is not None and len(stored) >= _SECRET_BYTES:
        return stored
    if stored is not None:
        log.warning(
            "%s holds %d bytes, under %d: a new key is made", path, len(stored), _SECRET_BYTES
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    # Written whole under a temporary name (mkstemp: 0600), then put in place in one step: a
    # crash leaves no empty key file, and nobody reads one half written.
    descriptor, temporary_name = tempfile.mkstemp(dir=data_dir, prefix=f".{name}.")
    temporary = Path(temporary_name)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(secrets.token_bytes(_SECRET_BYTES))
            file.flush()
            os.fsync(file.fileno())
        if stored is None:
            _put_first_key(temporary, path)
        else:
            temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    return path.read_bytes()


def _put_first_key(temporary: Path, path: Path) -> None:
    """Put a first key in place unless another process did first (then theirs is kept): a
    hard link fails if ``path`` exists. A filesystem without hard links (some network and
    FUSE mounts) gets a rename after a last look, which a racing process could still beat."""
    try:
        path.hardlink_to(temporary)
    except FileExistsError:
        pass
    except OSError:
        if not path.exists():
            temporary.replace(path)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """The bytes ``text`` spells in ``_b64``'s one spelling; ValueError for any other (a
    character outside the URL-safe alphabet, padding, unused low bits set): a token has one
    spelling only, nothing appended or altered opens the same page."""
    data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    if _b64(data) != text:
        raise ValueError("not in the canonical spelling")
    return data


class LinkSigner:
    """Makes and checks link tokens; ``used_dir`` records the nonces of links already used."""

    def __init__(
        self, secret: bytes, used_dir: Path, clock: Callable[[], float] = time.time
    ) -> None:
        self._secret = secret
        self._used_dir = used_dir
        self.clock = clock

    def _signature(self, purpose: str, payload: bytes) -> bytes:
        # The purpose is signed too: a token made for one page is refused by every other.
        message = purpose.encode() + b"\n" + payload
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def seal(self, purpose: str, fields: Mapping[str, object]) -> str:
        """A token carrying ``fields`` (JSON), signed for ``purpose``."""
        payload = json.dumps(fields, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._signature(purpose, payload))}"

    def unseal(self, purpose: str, token: str) -> dict[str, Any]:
        """The fields of a token sealed for ``purpose``; LinkRefused when forged."""
        encoded, _, signature = token.partition(".")
        try:
            payload, given = _unb64(encoded), _unb64(signature)
        except (binascii.Error, ValueError):
            raise LinkRefused("This link is not one Easel made.") from None
        if not hmac.compare_digest(given, self._signature(purpose, payload)):
            raise LinkRefused("This link is not one Easel made.")
        fields: dict[str, Any] = json.loads(payload)
        return fields

    def refuse_spent(self, link: SingleUse, again: str) -> None:
        """LinkRefused when the link has expired or was used; ``again`` says what to do."""
        if self.clock() >= link.expires_at:
            raise LinkRefused(
                f"This link has expired (links last 15 minutes); {again}.", Reason.INPUT
            )
        if self.was_used(link):
            raise LinkRefused(f"This link was already used; {again}.", Reason.INPUT)

    def was_used(self, link: SingleUse) -> bool:
        return self._used_path(link).exists()

    def issue(
        self,
        job_id: str,
        idx: int,
        user_id: int,
        guild_id: int | None,
        channel_id: int | None,
        *,
        private: bool,
    ) -> str:
        link = RegionLink(
            job_id,
            idx,
            user_id,
            guild_id,
            channel_id,
            private,
            int(self.clock()) + LINK_LIFETIME_S,
            secrets.token_hex(16),
        )
        return self.seal(_REGION, asdict(link))

    def check(self, token: str) -> RegionLink:
        """The link a token carries; LinkRefused when forged, expired or already used."""
        link = RegionLink(**self.unseal(_REGION, token))
        self.refuse_spent(link, _REGION_AGAIN)
        return link

    def use(self, link: SingleUse, again: str = _REGION_AGAIN) -> None:
        """Mark the link used; LinkRefused when another request used it first."""
        self._used_dir.mkdir(parents=True, exist_ok=True)
        self._prune_used()
        try:
            self._used_path(link).touch(exist_ok=False)
        except FileExistsError:
            raise LinkRefused(f"This link was already used; {again}.", Reason.INPUT) from None

    def _used_path(self, link: SingleUse) -> Path:
        # Named with the expiry, so pruning needs no file times (and follows this clock).
        return self._used_dir / f"{link.expires_at}-{link.nonce}"

    def _prune_used(self) -> None:
        """Forget used links that expired USED_KEPT_PAST_EXPIRY_S ago."""
        now = self.clock()
        for path in self._used_dir.iterdir():
            expires_at, _, _ = path.name.partition("-")
            if not expires_at.isdigit() or int(expires_at) + USED_KEPT_PAST_EXPIRY_S <= now:
                path.unlink(missing_ok=True)
