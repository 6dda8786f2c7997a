"""The mask editor's links: signed, expiring, single use; the secret kept private on disk."""

from __future__ import annotations

import base64
import json
import stat
import string
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.web.links import (
    LINK_LIFETIME_S,
    USED_KEPT_PAST_EXPIRY_S,
    LinkRefused,
    LinkSigner,
    load_secret,
)

NOW = 1_800_000_000.0


def signer(tmp_path: Path, secret: bytes = b"s" * 32) -> LinkSigner:
    return LinkSigner(secret, tmp_path / "used", clock=lambda: NOW)


def issue(links: LinkSigner) -> str:
    return links.issue("0123456789abcdef", 0, 7, 11, 13, private=False)


def test_a_link_carries_what_it_allows(tmp_path: Path) -> None:
    link = signer(tmp_path).check(issue(signer(tmp_path)))
    assert (link.job_id, link.idx, link.user_id, link.guild_id, link.channel_id) == (
        "0123456789abcdef",
        0,
        7,
        11,
        13,
    )
    assert link.expires_at == NOW + LINK_LIFETIME_S and not link.private


def test_a_changed_payload_or_another_secret_is_refused(tmp_path: Path) -> None:
    token = issue(signer(tmp_path))
    payload, signature = token.split(".")
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    fields["user_id"] = 8  # someone else's link, same signature
    changed = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()
    with pytest.raises(LinkRefused, match="not one Easel made"):
        signer(tmp_path).check(f"{changed}.{signature}")
    with pytest.raises(LinkRefused, match="not one Easel made"):
        signer(tmp_path, secret=b"t" * 32).check(token)


@given(st.text(max_size=200))
def test_garbage_is_refused_never_crashes(token: str) -> None:
    with pytest.raises(LinkRefused):
        LinkSigner(b"s" * 32, Path("/nonexistent"), clock=lambda: NOW).check(token)


_ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


def _low_bit_set(last: str) -> str:
    """The same bytes to a lenient decoder: 32 bytes in 43 characters leave 2 bits unused."""
    return _ALPHABET[_ALPHABET.index(last) | 1]


@pytest.mark.parametrize(
    "respelt",
    [
        lambda token: token + "!!",  # skipped by a lenient decoder
        lambda token: token + "=",
        lambda token: token.replace(".", "=.", 1),
        lambda token: token[:-1] + _low_bit_set(token[-1]),  # the signature's unused bits
    ],
)
def test_a_token_has_one_spelling(tmp_path: Path, respelt: Callable[[str], str]) -> None:
    token = issue(signer(tmp_path))
    with pytest.raises(LinkRefused, match="not one Easel made"):
        signer(tmp_path).check(respelt(token))


def test_a_link_expires_after_its_lifetime(tmp_path: Path) -> None:
    links = signer(tmp_path)
    token = issue(links)
    links.clock = lambda: NOW + LINK_LIFETIME_S - 1
    links.check(token)
    links.clock = lambda: NOW + LINK_LIFETIME_S
    with pytest.raises(LinkRefused, match="expired"):
        links.check(token)


def test_a_link_works_once(tmp_path: Path) -> None:
    links = signer(tmp_path)
    token = issue(links)
    link = links.check(token)
    links.use(link)
    with pytest.raises(LinkRefused, match="already used"):
        links.use(link)  # a second submit racing the first
    with pytest.raises(LinkRefused, match="already used"):
        signer(tmp_path).check(token)  # remembered on disk, across a restart
    signer(tmp_path).check(issue(links))  # a new link for the same picture works


def test_the_generated_secret_is_kept_and_private(tmp_path: Path) -> None:
    first = load_secret("", tmp_path)
    assert len(first) == 32 and load_secret("", tmp_path) == first
    assert stat.S_IMODE((tmp_path / "web-secret").stat().st_mode) == 0o600
    assert load_secret("configured", tmp_path) == b"configured"


def test_a_crash_while_making_the_key_leaves_no_key_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(_: int) -> bytes:
        raise KeyboardInterrupt  # killed between making the file and writing the key

    with monkeypatch.context() as patched:
        patched.setattr("bot.web.links.secrets.token_bytes", crash)
        with pytest.raises(KeyboardInterrupt):
            load_secret("", tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither an empty key nor a temporary file
    key = load_secret("", tmp_path)
    assert len(key) == 32 and load_secret("", tmp_path) == key


def test_a_data_folder_without_hard_links_still_gets_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_hard_links(self: Path, target: Path) -> None:
        raise PermissionError(1, "Operation not permitted")  # what CIFS and FUSE mounts say

    monkeypatch.setattr(Path, "hardlink_to", no_hard_links)
    key = load_secret("", tmp_path)
    assert len(key) == 32 and load_secret("", tmp_path) == key
    assert stat.S_IMODE((tmp_path / "web-secret").stat().st_mode) == 0o600
    assert [path.name for path in tmp_path.iterdir()] == ["web-secret"]


@pytest.mark.parametrize("left", [b"", b"short"])
def test_a_stored_key_too_short_is_made_anew(tmp_path: Path, left: bytes) -> None:
    (tmp_path / "broker-secret").write_bytes(left)  # what an older Easel's crash could leave
    key = load_secret("", tmp_path, "broker-secret")
    assert len(key) == 32 and (tmp_path / "broker-secret").read_bytes() == key
    assert stat.S_IMODE((tmp_path / "broker-secret").stat().st_mode) == 0o600
    assert load_secret("", tmp_path, "broker-secret") == key
    assert [path.name for path in tmp_path.iterdir()] == ["broker-secret"]


def test_used_links_are_forgotten_a_day_past_their_expiry(tmp_path: Path) -> None:
    links = signer(tmp_path)
    links.use(links.check(issue(links)))
    used = tmp_path / "used"
    links.clock = lambda: NOW + LINK_LIFETIME_S + USED_KEPT_PAST_EXPIRY_S - 1
    links.use(links.check(issue(links)))
    assert len(list(used.iterdir())) == 2
    links.clock = lambda: NOW + LINK_LIFETIME_S + USED_KEPT_PAST_EXPIRY_S
    links.use(links.check(issue(links)))
    assert len(list(used.iterdir())) == 2  # the first is forgotten


def test_a_spent_link_stays_spent_when_the_clock_steps_back(tmp_path: Path) -> None:
    """A host clock stepped back an hour after the link expired and another link's use
    pruned the used ones: the link is in its lifetime again, and still spent (AUD35 F5)."""
    links = signer(tmp_path)
    token = issue(links)
    links.use(links.check(token))
    links.clock = lambda: NOW + LINK_LIFETIME_S + 1
    links.use(links.check(issue(links)))
    links.clock = lambda: NOW + LINK_LIFETIME_S + 1 - 3600
    with pytest.raises(LinkRefused, match="already used"):
        links.check(token)


def test_a_token_sealed_for_one_purpose_is_refused_for_another(tmp_path: Path) -> None:
    links = signer(tmp_path)
    token = links.seal("dashboard-login", {"user_id": 7})
    assert links.unseal("dashboard-login", token) == {"user_id": 7}
    with pytest.raises(LinkRefused, match="not one Easel made"):
        links.unseal("dashboard-session", token)
    with pytest.raises(LinkRefused, match="not one Easel made"):
        links.check(token)  # nor is it a mask editor link
