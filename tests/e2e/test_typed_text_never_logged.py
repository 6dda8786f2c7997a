"""Nothing a member typed reaches the log (README, *Operating*: "Easel never logs a prompt nor
any other text a member typed"; audit AUD15 finding 2): each input below carries a marker
through the real path, the log is captured as the process writes it (JSON, at the process's
INFO), and the marker is in no line, its tracebacks included."""

from __future__ import annotations

import io
import logging

from PIL import Image

from bot.logging_setup import install_logging
from bot.settings import Settings
from tests.conftest import ErrorLogs
from tests.e2e.conftest import StartEasel
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, has_picture, modal_fields, reply_to
from tests.fake_discord import FakeDiscord
from tests.support.engines import InstantEngine

MARKER = "zqx"  # in every typed input below, in no name or word of Easel's own


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "teal").save(buffer, format="PNG")
    return buffer.getvalue()


async def test_no_typed_text_reaches_the_log(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    error_logs: ErrorLogs,
) -> None:
    error_logs.expect(r"failed on cpu: internal error \(RuntimeError\)")
    wildcards = easel_settings_for_test.wildcards_dir
    wildcards.mkdir(parents=True, exist_ok=True)
    (wildcards / "colour.txt").write_text("red\nblue\n", encoding="utf-8")
    fake = fake_discord
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = install_logging("json", easel_settings_for_test.log_secrets, stream=stream)
    try:
        async with start_easel(lambda _device: InstantEngine(fail_on="boom")):
            await reply_to(
                fake,
                "easel-admin banned-word",
                {"action": "add", "word": f"{MARKER}banned"},
                user=fake.owner_id,
            )
            refused = [
                ("imagine", {"prompt": f"a __{MARKER}wild__ cat", **QUICK}),
                ("imagine", {"prompt": "a cat", "negative": f"__{MARKER}neg__", **QUICK}),
                ("explain", {"prompt": f"a __{MARKER}explained__"}),
                ("imagine", {"prompt": f"<lora:{MARKER}lora:1> a cat", **QUICK}),
                ("imagine", {"prompt": "a cat", "style": f"{MARKER}style", **QUICK}),
                ("imagine", {"prompt": "a cat", "model": f"{MARKER}model", **QUICK}),
                ("imagine", {"prompt": f"a cat --preset {MARKER}preset", **QUICK}),
                ("imagine", {"prompt": "a cat", "preset": f"{MARKER}option", **QUICK}),
                ("imagine", {"prompt": "a cat", "lora": f"{MARKER}option", **QUICK}),
                ("imagine", {"prompt": "a cat", "sampler": f"{MARKER}sampler", **QUICK}),
                ("imagine", {"prompt": "a cat", "refiner": f"{MARKER}refiner", **QUICK}),
                ("imagine", {"prompt": "a cat", "size": f"{MARKER}size", **QUICK}),
                ("imagine", {"prompt": "a cat", "schedule_type": f"{MARKER}st", **QUICK}),
                ("imagine", {"prompt": f"a {MARKER}banned cat", **QUICK}),
                ("history", {"search": f"{MARKER}search"}),
            ]
            for command, options in refused:
                await reply_to(fake, command, options)
            failing = await fake.invoke_command(
                "imagine", {"prompt": f"a {MARKER}failed boom", **QUICK}
            )
            await failing.wait_for_original(
                lambda m: "reference" in m.content, timeout=RENDER_TIMEOUT_S
            )
            made = await fake.invoke_command("imagine", {"prompt": "a cat", **QUICK})
            result = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
            form = await fake.click(result, label="Remix")
            fields = dict(modal_fields(await form.wait_for_modal()).values())
            [prompt_field, *_] = fields
            fields[prompt_field] = f"a {MARKER}remix boom"
            remixed = await fake.submit_modal(form, fields)
            await remixed.wait_for_original(
                lambda m: "reference" in m.content, timeout=RENDER_TIMEOUT_S
            )
            described = await fake.invoke_command(
                "describe", {}, attachments={"image": (f"{MARKER}upload.png", png())}
            )
            await described.wait_for_original(lambda m: not m.is_loading, timeout=RENDER_TIMEOUT_S)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    leaked = [line for line in stream.getvalue().splitlines() if MARKER in line.casefold()]
    assert leaked == [], "\n".join(leaked)
