"""Every command that reads a picture answers Discord before it downloads and decodes it: a
large upload takes seconds to decode (an 8.8 MiB JPEG nearly 4 s), past Discord's 3 s, and a
link's fetch up to 30 s. A refusal that comes after is told privately, and a public
"thinking…" does not stay behind in the channel."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import discord
import pytest

import cogs.results.story
import cogs.use_settings
import cogs.visibility
from bot.engines import engine_factory_for
from bot.settings import Settings
from bot.user_errors import Reason
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
from tests.e2e.test_delivery_replay import posts_recorded
from tests.e2e.test_edits import mask_png, source_png
from tests.e2e.test_prompt_safety import GatedEngine
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
    async with start_easel() as bot:
        quota_refusals: asyncio.Queue[str] = asyncio.Queue()
        record = bot.services.refusals.record

        async def recorded_too(*refusal: Any) -> None:
            await record(*refusal)
            if refusal[-2] is Reason.QUOTA:
                quota_refusals.put_nowait(refusal[-1])

        monkeypatch.setattr(bot.services.refusals, "record", recorded_too)
        # Discord keeps the public "thinking…": it says nothing of the answer, told privately.
        fake.fail("DELETE", RESPONSE_ROUTE, status=REFUSED)
        handle = await fake.invoke_command("vary", {}, attachments=upload)
        told = await handle.wait_for_followup(lambda m: UNREADABLE in m.content)
        assert told.is_ephemeral and handle.original is not None
        assert handle.original.content == ANSWERED_PRIVATELY, handle.describe()

        # Options and a quota with no room are refused before any "thinking…".
        typo = await fake.invoke_command("vary", {"strength": "lots"}, attachments=upload)
        strength = await typo.wait_for_original(lambda m: "Vary strength must be" in m.content)
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
        # Its settings may make a free --relax job: a limit of 0 refuses that one too.
        settings = await fake.invoke_command("use-settings", {}, attachments=upload)
        settings_quota = await settings.wait_for_original(lambda m: "⛔" in m.content)
        answers = [typo, upscaler, listed_out, over, settings]
        assert [answer.response_type for answer in answers] == [4, 4, 4, 4, 4]
        assert all(
            m.is_ephemeral for m in (strength, not_installed, left_out, quota, settings_quota)
        )
        # One quota refusal, one sentence: as told, on every path (the dashboard shows it).
        imagine_quota = await reply_to(fake, "imagine", {"prompt": "a cat", **QUICK})
        told = [quota.content, settings_quota.content, imagine_quota.content]
        recorded = [await asyncio.wait_for(quota_refusals.get(), 30) for _ in told]
        assert recorded == told


async def test_a_repeat_notice_leaves_the_first_jobs_response(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its place in the queue could not be shown: the public "thinking…" is the job's, and
    deleting it would withdraw the job as a moderator's deletion does. Nor is it edited by
    the notice: the job's result may be there already (its job ended before its place was
    shown), and "answered privately" replaced its caption when Discord did not say whether it
    was. The job's place is sent again, and the notice follows it (review R3 #1); that
    place is recorded as the job's post, whose deletion withdraws it (review B2 #2)."""
    fake = fake_discord
    gate = threading.Event()  # the first job renders only once the notice is sent
    real = engine_factory_for(easel_settings_for_test)
    async with start_easel(lambda device: GatedEngine(real(device), gate)) as bot:
        recorded = posts_recorded(bot, monkeypatch)
        try:
            fake.fail("PATCH", RESPONSE_ROUTE, status=REFUSED)
            handle = await fake.invoke_command("imagine", {"prompt": "a cat --repeat 2", **QUICK})
            notice = await handle.wait_for_followup(
                lambda m: "more job" in m.content, timeout=RENDER_TIMEOUT_S
            )
            assert notice.is_ephemeral
            place = handle.original
            assert place is not None and not place.is_loading, handle.describe()
            assert place.content.startswith(("⏳ Queued", "🎨 Rendering")), handle.describe()
            # Its place was sent again at once: Discord was asked once whether it was there.
            assert len(fake.calls_to("GET", RESPONSE_ROUTE)) == 1
            assert recorded.get_nowait() == place.id  # before the notice
        finally:
            gate.set()
        await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)

        result_posted = asyncio.Event()
        show_queued = bot.results.show_queued

        async def after_the_result(*args: Any, **options: Any) -> None:
            await show_queued(*args, **options)
            await result_posted.wait()

        monkeypatch.setattr(bot.results, "show_queued", after_the_result)
        handle = await fake.invoke_command("imagine", {"prompt": "a dog --repeat 2", **QUICK})
        result = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        caption = result.content
        looked_up = len(fake.calls_to("GET", RESPONSE_ROUTE))
        fake.fail("GET", RESPONSE_ROUTE, status=REFUSED)  # still "thinking…"? not said
        result_posted.set()
        notice = await handle.wait_for_followup(
            lambda m: "more job" in m.content, timeout=RENDER_TIMEOUT_S
        )
        assert notice.is_ephemeral
        assert handle.original is not None and handle.original.content == caption
        assert has_picture(handle.original), handle.describe()
        # Asked again once Discord failed to say.
        assert len(fake.calls_to("GET", RESPONSE_ROUTE)) == looked_up + 2
        assert bot.queue.queued_count() == 0
