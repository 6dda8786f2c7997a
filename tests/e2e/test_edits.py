"""/vary, /inpaint, /upscale and the Vary / Upscale message menus through the fake Discord,
with the real tiny model; hostile uploads are refused before anything is queued."""

from __future__ import annotations

import dataclasses
import io
import sqlite3
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from bot.infotext_import import MAX_INFOTEXT_CHARS
from bot.jobs.accounting import estimated_cost
from bot.settings import Settings
from inference.infotext import infotext_from_png, parse_infotext, png_with_infotext
from inference.types import RenderRequest
from tests.e2e.helpers import RENDER_TIMEOUT_S, StartEasel, has_picture, size_of
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.support.chunky_files import plain_png
from tests.support.picture_reads import picture_reads_off_the_loop

SOURCE_INFOTEXT = (
    "a red fox\nNegative prompt: blurry\n"
    "Steps: 3, Sampler: Euler, CFG scale: 6, Seed: 77, Size: 64x64, Model: tiny"
)


def source_png(size: tuple[int, int] = (64, 64), infotext: str = SOURCE_INFOTEXT) -> bytes:
    return png_with_infotext(Image.new("RGB", size, "orange"), infotext)


def mask_png(size: tuple[int, int] = (64, 64), painted: bool = True) -> bytes:
    mask = Image.new("L", size, 0)
    if painted:
        mask.paste(255, (16, 16, 48, 48))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


def params_of(message: StoredMessage) -> tuple[str, dict[str, object]]:
    infotext = infotext_from_png(message.attachments[0].data)
    assert infotext is not None
    prompt, _, params = parse_infotext(infotext)
    return prompt, dict(params)


def inputs_of(settings: Settings) -> list[Path]:
    folder = settings.data_dir / "inputs"
    return sorted(folder.iterdir()) if folder.is_dir() else []


async def test_vary_an_upload_reuses_its_parameters(
    fake_discord: FakeDiscord, start_easel: StartEasel, easel_settings_for_test: Settings
) -> None:
    async with start_easel():
        handle = await fake_discord.invoke_command(
            "vary", {"strength": "0.5"}, attachments={"image": ("fox.png", source_png())}
        )
        result = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        prompt, params = params_of(result)
        assert prompt == "a red fox" and params["Seed"] == 77 and params["Steps"] == 3
        assert params["Denoising strength"] == 0.5 and params["Sampler"] == "Euler"
        assert size_of(result) == (64, 64)
        [saved] = inputs_of(easel_settings_for_test)
        # The stored input keeps its pixels and its infotext (the engine reads it), no more.
        assert saved.suffix == ".png" and infotext_from_png(saved.read_bytes()) == SOURCE_INFOTEXT
        labels = {c.get("label") for row in result.components for c in row["components"]}
        assert {"Vary (Subtle)", "Upscale (2x)"} <= labels


async def test_vary_a_linked_message_with_a_new_prompt(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel():
        posted = await fake_discord.post_user_message(
            "look", attachments=[("fox.png", source_png())]
        )
        link = (
            f"https://discord.com/channels/{fake_discord.guild_id}/{posted.channel_id}/{posted.id}"
        )
        handle = await fake_discord.invoke_command(
            "vary", {"message": link, "strength": "strong", "prompt": "a blue fox"}
        )
        result = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        prompt, params = params_of(result)
        assert prompt == "a blue fox" and params["Denoising strength"] == 0.7
        assert params["Seed"] == 77


async def test_message_menus_vary_and_upscale(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel():
        posted = await fake_discord.post_user_message(
            "look", attachments=[("fox.png", source_png())]
        )
        upscaled = await (
            await fake_discord.invoke_message_command("Upscale", posted)
        ).wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert size_of(upscaled) == (128, 128)
        # A fast upscale carries the picture's own settings over, read of the stored copy.
        upscaled_params = params_of(upscaled)[1]
        assert upscaled_params["Postprocess upscale by"] == 2
        assert (upscaled_params["Steps"], upscaled_params["Seed"]) == (3, 77)
        varied = await (
            await fake_discord.invoke_message_command("Vary", posted)
        ).wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert params_of(varied)[1]["Denoising strength"] == 0.7
        # A picture with no prompt: the menu has no prompt option, so it points to /vary's.
        bare = await fake_discord.post_user_message("look", attachments=[("b.png", plain_png())])
        reply = await (await fake_discord.invoke_message_command("Vary", bare)).wait_for_answer()
        assert reply.is_ephemeral and reply.content.endswith(
            "use /vary with this message's link in `message` and a `prompt`."
        ), reply.content


async def test_an_upscale_of_a_picture_with_overlong_parameters_carries_none_over(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Parameters longer than ``/use-settings`` reads are left out of the stored copy: the
    picture is upscaled as one without them (its over-long prompt is not read, not refused)."""
    overlong = SOURCE_INFOTEXT.replace("a red fox", "a red fox" + "," * MAX_INFOTEXT_CHARS)
    async with start_easel():
        posted = await fake_discord.post_user_message(
            "look", attachments=[("fox.png", source_png(infotext=overlong))]
        )
        upscaled = await (
            await fake_discord.invoke_message_command("Upscale", posted)
        ).wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert size_of(upscaled) == (128, 128)
        prompt, params = params_of(upscaled)
        assert prompt == "" and "Seed" not in params and "Steps" not in params, params


async def test_creative_upscale_re_details_in_tiles_with_the_picture_s_prompt(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel():
        handle = await fake_discord.invoke_command(
            "upscale",
            {"scale": 2, "mode": "creative"},
            attachments={"image": ("fox.png", source_png())},
        )
        result = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert size_of(result) == (128, 128)  # past the tiny model's 64 px: tiles
        prompt, params = params_of(result)
        assert prompt == "a red fox"  # the picture's own prompt guided the re-detail
        assert (params["SD upscale overlap"], params["Postprocess upscaler"]) == (
            8,
            "tiny-esrgan-2x",
        )
        assert params["Size"] == "128x128"


async def test_inpaint_repaints_the_masked_area_only(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel():
        handle = await fake_discord.invoke_command(
            "inpaint",
            {"prompt": "a green hat", "denoise": 1.0, "mask_blur": 0, "fill": "latent noise"},
            attachments={
                "image": ("fox.png", source_png()),
                "mask": ("mask.png", mask_png()),
            },
        )
        result = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        prompt, params = params_of(result)
        assert prompt == "a green hat" and params["Mask blur"] == 0
        assert params["Masked content"] == "latent noise"
        with Image.open(io.BytesIO(result.attachments[0].data)) as image:
            rgb = image.convert("RGB")
            assert rgb.getpixel((2, 2)) == (255, 165, 0)  # outside the mask: untouched
            assert rgb.getpixel((32, 32)) != (255, 165, 0)  # inside: repainted


async def test_upscale_command_and_upscale_buttons_are_jobs(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fox = ("fox.png", source_png())
    async with start_easel() as bot:
        handle = await fake_discord.invoke_command(
            "upscale", {"scale": 4}, attachments={"image": fox}
        )
        result = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert size_of(result) == (256, 256)
        # No upscaler named: the installed model upscaler (2x, run twice), not Lanczos.
        assert params_of(result)[1]["Postprocess upscaler"] == "tiny-esrgan-2x"
        choices = await fake_discord.autocomplete(
            "upscale", {"image": fox, "upscaler": ""}, "upscaler"
        )
        assert [choice["value"] for choice in choices] == ["Lanczos", "tiny-esrgan-2x"]
        lanczos = await (
            await fake_discord.invoke_command(
                "upscale", {"upscaler": "lanczos"}, attachments={"image": fox}
            )
        ).wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert params_of(lanczos)[1]["Postprocess upscaler"] == "Lanczos"
        refused = await (
            await fake_discord.invoke_command(
                "upscale", {"upscaler": "4x-UltraSharp"}, attachments={"image": fox}
            )
        ).wait_for_answer()
        assert refused.is_ephemeral
        # Named by admission, which names only those the server allows (here: no list).
        assert (
            "The upscaler `4x-UltraSharp` is not installed or not allowed here. You may use: "
            "Lanczos, tiny-esrgan-2x." in refused.content
        )

        button = await (await fake_discord.click(result, label="Upscale (2x)")).wait_for_original(
            has_picture, timeout=RENDER_TIMEOUT_S
        )
        assert size_of(button) == (512, 512)
        history = await bot.services.history.page(
            fake_discord.user_id, 0, guild_id=fake_discord.guild_id
        )
        assert [line.status for line in history.lines] == ["done", "done", "done"]  # journaled


def sideways_jpeg(size: tuple[int, int]) -> bytes:
    """A JPEG stored ``size`` as a phone's camera reads it, with EXIF orientation 6 (turn
    90 degrees clockwise): shown, and read, with its sides swapped."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.new("RGB", size, "orange").save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` (a decompression bomb's shape)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


async def test_hostile_uploads_are_refused_before_queueing(
    fake_discord: FakeDiscord, start_easel: StartEasel, easel_settings_for_test: Settings
) -> None:
    fox = ("fox.png", source_png())
    cases: list[tuple[str, dict[str, object], dict[str, tuple[str, bytes]], str]] = [
        ("vary", {}, {"image": ("notes.txt", b"just some text")}, "not a readable image"),
        ("vary", {}, {"image": ("bomb.png", png_claiming(5000, 5000))}, "pixels"),
        ("vary", {}, {"image": ("tiny.png", source_png((32, 32)))}, "between 64 and 4096"),
        # Its size first: no prompt given for the one it lacks would make it renderable.
        ("vary", {}, {"image": ("bare.png", plain_png((8, 8)))}, "to vary is 8x8; each side"),
        ("upscale", {"scale": 4}, {"image": ("big.png", source_png((4096, 1024)))}, "largest"),
        ("inpaint", {"prompt": "x"}, {"image": fox, "mask": ("m.png", mask_png((64, 32)))}, "same"),
        (  # a mask of the photo as stored does not line up with the photo as shown
            "inpaint",
            {"prompt": "x"},
            {
                "image": ("phone.jpg", sideways_jpeg((128, 64))),
                "mask": ("m.png", mask_png((128, 64))),
            },
            "The mask is 128x64 but the picture is 64x128",
        ),
        ("vary", {}, {"image": ("huge.png", b"\x89PNG" + bytes(11 * 2**20))}, "MiB"),
        (  # the engine refused it only after the queue, in the channel
            "inpaint",
            {"prompt": "x"},
            {"image": fox, "mask": ("m.png", mask_png(painted=False))},
            "The mask is all black: only its white part (pixels above 127 of 255) is repainted",
        ),
        ("vary", {}, {}, "exactly one"),
    ]
    async with start_easel() as bot:
        for command, options, files, expected in cases:
            handle = await fake_discord.invoke_command(command, options, attachments=files)
            reply = await handle.wait_for_answer()
            assert reply.is_ephemeral and expected in reply.content, (command, reply.content)
            assert "\n" not in reply.content  # one sentence, no traceback
        assert bot.queue.queued_count() == 0
        assert (
            await bot.services.history.page(fake_discord.user_id, 0, guild_id=fake_discord.guild_id)
        ).total == 0
        assert inputs_of(easel_settings_for_test) == []  # refused uploads are not kept


async def test_an_edits_reservation_is_its_pictures_size_read_off_the_loop(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """/vary of an upload, the Vary button under its result and its 🔄 reserve GPU time at
    the picture's size (128x64, not the tiny model's 64x64). The first two bring the size read
    where the picture was decoded: their reservations, made on the event loop (the button's
    before its defer), open no file. The 🔄 has only the stored request, which names the
    picture: read once, off the loop."""
    reads = picture_reads_off_the_loop(monkeypatch)
    async with start_easel():
        handle = await fake_discord.invoke_command(
            "vary", {"strength": "0.5"}, attachments={"image": ("fox.png", source_png((128, 64)))}
        )
        varied = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert size_of(varied) == (128, 64)
        again = await (await fake_discord.click(varied, label="Vary (Subtle)")).wait_for_original(
            has_picture, timeout=RENDER_TIMEOUT_S
        )
        assert size_of(again) == (128, 64)
        assert reads == []
        [reroll] = [c for c in varied.custom_ids if c.startswith("easel:reroll:")]
        rerolled = await (await fake_discord.click(varied, reroll)).wait_for_original(
            has_picture, timeout=RENDER_TIMEOUT_S
        )
        assert size_of(rerolled) == (128, 64)
    with sqlite3.connect(easel_settings_for_test.database_path) as db:
        rows = db.execute(
            "SELECT j.request_json, q.gpu_seconds FROM jobs j JOIN quota_ledger q"
            " ON q.job_id = j.id AND q.kind = 'reserve'"
        ).fetchall()
    assert len(rows) == 3
    for request_json, reserved in rows:
        request = RenderRequest.from_json(request_json)
        at_its_size = dataclasses.replace(request, width=128, height=64)
        assert reserved == estimated_cost(at_its_size).gpu_seconds > 0
    assert reads == inputs_of(easel_settings_for_test)  # the upload /vary kept, by the 🔄
