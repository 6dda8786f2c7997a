"""/help, /explain, /info, the Info menu, and the app-command error handler, through the fake."""

from __future__ import annotations

import io
import json
import re
import struct
import zlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest
from PIL import Image

from bot.app import EaselBot
from cogs.help_pages import HELP_PAGES
from inference.infotext import png_with_infotext
from inference.prompts.composition import MAX_SUBPROMPTS
from tests.conftest import ErrorLogs
from tests.fake_discord import FakeDiscord

StartEasel = Callable[[], AbstractAsyncContextManager[EaselBot]]
INFOTEXT = (
    "a red cat\nNegative prompt: blurry\n"
    "Steps: 7, Sampler: Euler a, CFG scale: 6.5, Seed: 99, Size: 64x64, Model: tiny"
)


def png(infotext: str | None = INFOTEXT) -> bytes:
    image = Image.new("RGB", (16, 16), "red")
    if infotext is not None:
        return png_with_infotext(image, infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width`` x ``height`` (a decompression bomb's shape)."""
    data = bytearray(png(None))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


async def test_help_and_explain(fake_discord: FakeDiscord, start_easel: StartEasel) -> None:
    async with start_easel():
        help_reply = await (await fake_discord.invoke_command("help")).wait_for_original()
        assert help_reply.is_ephemeral and "/imagine" in help_reply.content
        flags = await (
            await fake_discord.invoke_command("help", {"topic": "flags"})
        ).wait_for_original()
        assert flags.is_ephemeral and flags.content == HELP_PAGES["flags"]

        handle = await fake_discord.invoke_command(
            "explain", {"prompt": "a (red:1.5) cat <lora:ink:0.8>", "steps": 10}
        )
        await handle.wait_for_ack()
        assert handle.response_type == 5  # acknowledged before the prompt is read
        reply = await handle.wait_for_answer()
        assert reply.is_ephemeral and reply.content.startswith("```json\n")
        explained = json.loads(reply.content.removeprefix("```json\n").removesuffix("\n```"))
        assert explained["extra_networks"] == [{"kind": "lora", "name": "ink", "weight": 0.8}]
        assert ["red", 1.5] in explained["subprompts"][0]["schedule"][0]["chunks"]


async def test_long_explanation_is_truncated_with_the_full_json_attached(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    prompt = " AND ".join(f"[word{i}|other{i}]" for i in range(MAX_SUBPROMPTS))
    async with start_easel():
        handle = await fake_discord.invoke_command("explain", {"prompt": prompt, "steps": 12})
        reply = await handle.wait_for_answer()
        assert len(reply.content) <= 2000 and "truncated" in reply.content
        [attached] = reply.attachments
        assert len(json.loads(attached.data)["subprompts"]) == MAX_SUBPROMPTS


async def test_info_reads_parameters_and_refuses_hostile_files(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel():
        handle = await fake_discord.invoke_command(
            "info", attachments={"image": ("cat.png", png())}
        )
        reply = await handle.wait_for_answer()
        assert reply.is_ephemeral
        assert "**Prompt:** a red cat" in reply.content and "**Seed:** 99" in reply.content
        assert "**Negative:** blurry" in reply.content

        plain = await fake_discord.invoke_command(
            "info", attachments={"image": ("plain.png", png(None))}
        )
        assert "carries no generation parameters" in (await plain.wait_for_answer()).content

        text_file = await fake_discord.invoke_command(
            "info", attachments={"image": ("notes.png", b"just some text, not a picture")}
        )
        refusal = (await text_file.wait_for_answer()).content
        assert "not a readable image" in refusal and "PNG, JPEG or WebP" in refusal

        # A tiny file whose header claims 5000x5000 pixels: refused before any decoding.
        bomb = png_claiming(5000, 5000)
        assert len(bomb) < 1000
        bomb_handle = await fake_discord.invoke_command(
            "info", attachments={"image": ("bomb.png", bomb)}
        )
        assert "5000x5000 pixels" in (await bomb_handle.wait_for_answer()).content

        # A value nested 3,000 deep: the JSON decoder would recurse past Python's limit.
        deep = png("a cat\nSteps: 2, Seed: 1, Hashes: " + "[" * 3000 + "]" * 3000)
        deep_handle = await fake_discord.invoke_command(
            "info", attachments={"image": ("deep.png", deep)}
        )
        deep_reply = (await deep_handle.wait_for_answer()).content
        assert "value at 'Hashes' nests lists or objects more than 20 deep" in deep_reply


async def test_info_message_menu(fake_discord: FakeDiscord, start_easel: StartEasel) -> None:
    async with start_easel():
        posted = await fake_discord.post_user_message("look", attachments=[("art.png", png())])
        handle = await fake_discord.invoke_message_command("Info", posted)
        reply = await handle.wait_for_answer()
        assert "**Steps:** 7" in reply.content and reply.is_ephemeral

        no_picture = await fake_discord.post_user_message("no picture here")
        handle = await fake_discord.invoke_message_command("Info", no_picture)
        assert "has no image" in (await handle.wait_for_answer()).content


async def test_internal_error_gives_a_reference_and_logs_the_traceback(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    error_logs: ErrorLogs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object, **kwargs: object) -> dict[str, object]:
        raise RuntimeError("tokenizer exploded")

    monkeypatch.setattr("bot.policy.prompt_safety.explain", broken)
    error_logs.expect(r"internal error [0-9a-f]{8} in /explain")
    async with start_easel():
        reply = await (
            await fake_discord.invoke_command("explain", {"prompt": "a cat"})
        ).wait_for_original()
    assert reply.is_ephemeral
    match = re.search(r"reference `([0-9a-f]{8})`", reply.content)
    assert match is not None, reply.content
    [record] = error_logs.records
    # Which server and channel asked, by id, for the admin who brings the reference.
    assert record.getMessage() == (
        f"internal error {match.group(1)} in /explain for user {fake_discord.user_id} "
        f"in server {fake_discord.guild_id} channel {fake_discord.channel_id}"
    )
    assert record.exc_info is not None and "tokenizer exploded" in str(record.exc_info[1])
