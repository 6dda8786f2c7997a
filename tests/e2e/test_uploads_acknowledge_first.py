"""Every command that reads a picture answers Discord before it downloads and decodes it: a
large upload takes seconds to decode (an 8.8 MiB JPEG nearly 4 s), past Discord's 3 s, and a
link's fetch up to 30 s. A refusal that comes after is told privately, and a public
"thinking…" does not stay behind in the channel."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import discord
import pytest

import cogs.results.story
import cogs.use_settings
import cogs.visibility
from bot.settings import Settings
from cogs.common import ANSWERED_PRIVATELY
from inference.tiny import (
    write_tiny_captioner,
    write_tiny_controlnet,
    write_tiny_ip_adapter,
    write_tiny_model,
)
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    has_picture,
    limit_daily_images,
    modal_fields,
    reply_to,
)
from tests.e2e.test_controlnet import edges_png
from tests.e2e.test_edits import mask_png, source_png
from tests.fake_discord import FakeDiscord
from tests.fake_discord.records import InteractionHandle

CALLBACK_ROUTE = "/interactions/{interaction}/{token}/callback"
RESPONSE_ROUTE = "/webhooks/{app}/{token}/messages/{message}"
REFUSED = 403  # an error discord.py does not try again (it tries a 5xx five times)
NOT_A_PICTURE = b"these bytes are no picture"
UNREADABLE = "is not a readable image"
SLOWER_THAN_DISCORD_WAITS_S = 3.5  # Discord's 3 s, and a margin

Started = Callable[[], Awaitable[InteractionHandle]]


@pytest.fixture(scope="module")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its ControlNet and IP-Adapter: /imagine takes a control picture
    and a style reference."""
    directory = tmp_path_factory.mktemp("models")
    model = write_tiny_model(directory / "tiny", family="sd15", seed=0)
    write_tiny_controlnet(model)
    write_tiny_ip_adapter(model)
    return directory


@pytest.fixture(scope="module")
def captioner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_captioner(tmp_path_factory.mktemp("captioner") / "captioner")


@pytest.fixture
def easel_settings_for_test(
    fake_discord: FakeDiscord, tmp_path: Path, tiny_models_dir: Path, captioner_dir: Path
) -> Settings:
    """Easel with /describe set up: it reads a picture too."""
    settings = easel_settings(fake_discord, tmp_path / "data", tiny_models_dir)
    return settings.model_copy(update={"captioner_dir": captioner_dir})


async def test_every_upload_is_read_after_discord_was_answered(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_discord

    def answered() -> int:
        return len(fake.calls_to("POST", CALLBACK_ROUTE))

    answered_when_read: list[int] = []

    async def unreadable_download(self: discord.Attachment, **options: Any) -> bytes:
        answered_when_read.append(answered())
        return NOT_A_PICTURE

    async def unreadable_fetch(*args: object, **options: object) -> bytes:
        answered_when_read.append(answered())
        return NOT_A_PICTURE

    monkeypatch.setattr(discord.Attachment, "read", unreadable_download)
    monkeypatch.setattr(cogs.visibility, "fetch_picture", unreadable_fetch)
    check_posted = cogs.use_settings.check_posted_picture
    answered_when_checked: list[int] = []

    async def counted_check(*args: Any) -> Any:  # a channel fetch and stored checks: seconds
        answered_when_checked.append(answered())
        return await check_posted(*args)

    monkeypatch.setattr(cogs.use_settings, "check_posted_picture", counted_check)
    picture = ("fox.png", source_png())
    posted = await fake.post_user_message("look", attachments=[picture])

    async def check(start: Started, *, public: bool) -> None:
        before = answered()
        handle = await start()
        if public:
            told = await handle.wait_for_followup(lambda m: UNREADABLE in m.content)
            assert handle.original is not None and handle.original.deleted  # no "thinking…"
        else:
            told = await handle.wait_for_original(lambda m: UNREADABLE in m.content)
        assert told.is_ephemeral
        assert answered_when_read[-1] == before + 1, handle.describe()

    def command(name: str, options: dict[str, Any], **uploads: tuple[str, bytes]) -> Started:
        return lambda: fake.invoke_command(name, options, attachments=uploads)

    def menu(name: str) -> Started:
        return lambda: fake.invoke_message_command(name, posted)

    edges = ("edges.png", edges_png())
    async with start_easel() as bot:
        await check(command("vary", {}, image=picture), public=True)
        await check(command("vary", {"message": posted.jump_url}), public=True)
        await check(menu("Vary"), public=True)
        await check(
            command("inpaint", {"prompt": "a hat"}, image=picture, mask=("m.png", mask_png())),
            public=True,
        )
        await check(command("upscale", {}, image=picture), public=True)
        await check(menu("Upscale"), public=True)
        control = {"prompt": "a ring", "control_type": "canny"}
        await check(command("imagine", control, control=edges), public=True)
        await check(command("imagine", {"prompt": "a cat"}, sref=picture), public=True)
        linked = {"prompt": f"a cat --sref {posted.attachments[0].url}"}
        await check(command("imagine", linked), public=True)
        await check(command("use-settings", {}, image=picture), public=True)
        await check(menu("Use settings"), public=True)
        assert answered_when_checked == [answered_when_read[-1]]
        opened = await fake.invoke_message_command("Use as control", posted)
        fields = modal_fields(await opened.wait_for_modal())
        values = {
            fields["Prompt (inline flags such as --ar work)"][0]: "a ring",
            fields["Control type"][0]: "canny",
        }
        await check(lambda: fake.submit_modal(opened, values), public=True)
        await check(command("info", {}, image=picture), public=False)
        await check(menu("Info"), public=False)
        await check(command("describe", {}, image=picture), public=True)
        assert bot.queue.queued_count() == 0
    assert len(answered_when_read) == 15
    assert fake.take_violations() == []


async def test_vary_renders_an_upload_slower_to_decode_than_discord_waits(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    decode = cogs.results.story.decoded_upload

    def slow_decode(*args: Any, **options: Any) -> Any:
        time.sleep(SLOWER_THAN_DISCORD_WAITS_S)  # on the decoding thread, as a large JPEG is
        return decode(*args, **options)

    monkeypatch.setattr(cogs.results.story, "decoded_upload", slow_decode)
    async with start_easel():
        handle = await fake_discord.invoke_command(
            "vary", {"strength": "0.5"}, attachments={"image": ("fox.png", source_png())}
        )
        await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    assert handle.error_codes == []


async def test_what_is_refused_at_once_and_a_thinking_discord_would_not_delete(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_discord

    async def unreadable_download(self: discord.Attachment, **options: Any) -> bytes:
        return NOT_A_PICTURE

    monkeypatch.setattr(discord.Attachment, "read", unreadable_download)
    upload = {"image": ("fox.png", source_png())}
    async with start_easel():
        # Discord keeps the public "thinking…": it says nothing of the answer, told privately.
        fake.fail("DELETE", RESPONSE_ROUTE, status=REFUSED)
        handle = await fake.invoke_command("vary", {}, attachments=upload)
        told = await handle.wait_for_followup(lambda m: UNREADABLE in m.content)
        assert told.is_ephemeral and handle.original is not None
        assert handle.original.content == ANSWERED_PRIVATELY, handle.describe()

        # Options and a quota with no room are refused before any "thinking…".
        typo = await fake.invoke_command("vary", {"strength": "lots"}, attachments=upload)
        strength = await typo.wait_for_original(lambda m: "vary strength must be" in m.content)
        upscaler = await fake.invoke_command("upscale", {"upscaler": "nope"}, attachments=upload)
        not_installed = await upscaler.wait_for_original(lambda m: "nope" in m.content)
        # One installed but left out by the server's list is refused the same way, at once:
        # the kind of answer tells no member which files are installed (review B2).
        await reply_to(
            fake,
            "easel-admin addon",
            {"kind": "upscaler", "action": "add", "name": "Lanczos"},
            user=fake.owner_id,
        )
        listed_out = await fake.invoke_command(
            "upscale", {"upscaler": "tiny-esrgan-2x"}, attachments=upload
        )
        left_out = await listed_out.wait_for_original(lambda m: "tiny-esrgan-2x" in m.content)
        await limit_daily_images(fake, 0)
        over = await fake.invoke_command("vary", {}, attachments=upload)
        quota = await over.wait_for_original(lambda m: "⛔" in m.content)
        answers = [typo, upscaler, listed_out, over]
        assert [answer.response_type for answer in answers] == [4, 4, 4, 4]
        assert all(m.is_ephemeral for m in (strength, not_installed, left_out, quota))


async def test_a_repeat_notice_leaves_the_first_jobs_response(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """Its place in the queue could not be shown: the public "thinking…" is the job's, and
    deleting it would withdraw the job as a moderator's deletion does."""
    async with start_easel() as bot:
        fake_discord.fail("PATCH", RESPONSE_ROUTE, status=REFUSED)
        handle = await fake_discord.invoke_command(
            "imagine", {"prompt": "a cat --repeat 2", **QUICK}
        )
        notice = await handle.wait_for_followup(lambda m: "more job(s)" in m.content)
        assert notice.is_ephemeral
        await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert bot.queue.queued_count() == 0
