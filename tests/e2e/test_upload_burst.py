"""One member's burst of uploads being read leaves another member's command answered at once:
uploads are read on threads of their own, one at a time in each member's line
(``bot.picture_work``), not on asyncio's default pool, where each command's hop before its
acknowledgement waits (``cogs.common.requests_for_member``). Before, a burst of 18 uploads
of 4096x4096 (1-2 s of CPU each) left another member's /imagine unanswered past Discord's
3 s."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import discord
import pytest

import cogs.results.story
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, StartEasel, has_picture
from tests.e2e.test_edits import source_png
from tests.fake_discord import FakeDiscord
from tests.support.polling import until

BYSTANDER = 4242
# asyncio's default pool, made this size here: the burst that fills it is the same on any
# machine (its own size is the CPUs' count plus four).
DEFAULT_POOL_THREADS = 4
BURST = DEFAULT_POOL_THREADS + 1  # one upload more than that pool's threads
WAIT_S = 60.0  # generous: only a command stuck behind the held decodes waits this long


async def test_another_members_command_is_answered_while_one_members_uploads_are_read(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = fake_discord
    # Shut down with the test's loop, as the loop's own would be.
    pool = ThreadPoolExecutor(DEFAULT_POOL_THREADS, thread_name_prefix="default-pool")
    asyncio.get_running_loop().set_default_executor(pool)
    let_go = threading.Event()  # the burst's decodes are held until the bystander is answered
    decoding: list[str] = []  # the threads each held decode started on

    decode = cogs.results.story.decoded_upload

    def held_decode(*args: Any, **options: Any) -> Any:
        decoding.append(threading.current_thread().name)
        assert let_go.wait(WAIT_S), "the held decodes were never let go"
        return decode(*args, **options)

    monkeypatch.setattr(cogs.results.story, "decoded_upload", held_decode)
    downloaded = 0
    download = discord.Attachment.read

    async def counted_download(self: discord.Attachment, **options: Any) -> bytes:
        nonlocal downloaded
        data = await download(self, **options)
        downloaded += 1  # its decode is asked for next, with no wait between
        return data

    monkeypatch.setattr(discord.Attachment, "read", counted_download)
    fake.add_member(BYSTANDER, "bystander", roles=(fake.member_role_id,))
    upload = {"image": ("fox.png", source_png())}
    async with start_easel():
        try:
            burst = [
                await fake.invoke_command("vary", {"strength": "0.5"}, attachments=upload)
                for _ in range(BURST)
            ]
            await until(lambda: downloaded == BURST and bool(decoding))
            bystander = await fake.invoke_command(
                "imagine", {"prompt": "a dog", **QUICK}, user=BYSTANDER
            )
            await bystander.wait_for_ack(timeout=WAIT_S)
            # Answered while the burst's first upload was still being read, the others
            # waiting in the member's line, not on threads.
            assert decoding == ["easel-pictures_0"]
        finally:
            let_go.set()
        for handle in [*burst, bystander]:  # each of the burst goes through, in turn
            await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    assert len(decoding) == BURST
    assert fake.take_violations() == []
