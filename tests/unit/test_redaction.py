"""Credentials in URLs are hidden wherever a URL is printed or logged."""

from __future__ import annotations

import pytest

from bot.redaction import redact_url


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("nats://easel:s3cret@broker:4222", "nats://easel:***@broker:4222"),
        ("nats://s3cret-token@broker", "nats://***@broker"),
        ("tls://easel:p@ss:w0rd@broker:4222/x", "tls://easel:***@broker:4222/x"),
        ("nats://a:s3cret@h1,nats://s3cret@h2", "nats://a:***@h1,nats://***@h2"),
        ("cannot reach nats://u:s3cret@h:1 (refused)", "cannot reach nats://u:***@h:1 (refused)"),
        ("https://u:s3cret@example.com/api?next=a@b", "https://u:***@example.com/api?next=a@b"),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("mail me at someone@example.com", "mail me at someone@example.com"),
    ],
)
def test_credentials_are_hidden_and_the_rest_kept(text: str, shown: str) -> None:
    assert redact_url(text) == shown
