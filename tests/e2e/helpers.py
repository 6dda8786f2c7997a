"""Shared steps for Easel's end-to-end tests."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from PIL import Image

from bot.app import EaselBot
from tests.fake_discord import FakeDiscord, StoredMessage

StartEasel = Callable[[], AbstractAsyncContextManager[EaselBot]]
RENDER_TIMEOUT_S = 90
QUICK = {"steps": 2, "size": "64x64"}


def has_picture(message: StoredMessage) -> bool:
    """A result picture is attached (not just the progress message's preview)."""
    return any(attachment.filename != "preview.jpg" for attachment in message.attachments)


def size_of(message: StoredMessage) -> tuple[int, int]:
    """The size of the message's first picture."""
    with Image.open(io.BytesIO(message.attachments[0].data)) as image:
        return image.size


def job_id_of(message: StoredMessage) -> str:
    match = re.search(r"job `([0-9a-f]{16})`", message.content)
    assert match is not None, message.content
    return match.group(1)


async def imagine(
    fake: FakeDiscord, prompt: str, user: int | None = None, **options: Any
) -> StoredMessage:
    """Run /imagine and wait for its result message."""
    handle = await fake.invoke_command("imagine", {"prompt": prompt, **QUICK, **options}, user=user)
    return await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)


async def reply_to(
    fake: FakeDiscord, command: str, options: Mapping[str, Any] | None = None, **kwargs: Any
) -> StoredMessage:
    handle = await fake.invoke_command(command, options, **kwargs)
    return await handle.wait_for_original(lambda m: not m.is_loading)
