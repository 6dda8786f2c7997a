"""Vary (Region) through the fake Discord with the real tiny model: the mask editor page in a
real headless Chromium (Debian's, driven by Playwright), refused links, and regions in words
(a tiny random CLIPSeg)."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import shutil
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import discord
import pytest
from PIL import ExifTags, Image
from PIL.PngImagePlugin import PngInfo
from playwright.async_api import async_playwright

from bot.app import EaselBot, build
from bot.image_segments import MAX_PNG_OTHER_CHUNKS
from bot.jobs.queue import JobQueue
from bot.policy.visibility import THREAD_CHECK_FAILED
from bot.user_errors import Reason
from bot.web.links import LinkRefused
from bot.web.server import RegionWebServer
from cogs import region
from cogs.contexts import NOT_ENABLED_HERE
from db import refusals
from db.database import connect
from tests.e2e.browser import (
    assert_injected_script_is_blocked,
    assert_strict_csp,
    watch_csp,
)
from tests.e2e.conftest import StartEasel, easel_settings
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    has_picture,
    images_today,
    imagine,
    job_id_of,
    kept_refusals,
    limit_daily_images,
    link_of,
    modal_fields,
    refusals_counted,
    reply_to,
    with_web_server,
)
from tests.fake_discord import FakeDiscord, InteractionHandle, StoredMessage
from tests.fake_discord.fixtures import running_bot
from tests.fake_discord.payloads import PERMISSION_READ_MESSAGE_HISTORY
from tests.fake_discord.rules import walk_components
from tests.fake_discord.state import CONNECTION_DROPPED
from tests.support.chunky_files import chunky_png, pillow_opens_on_the_loop
from tests.support.exif_pictures import exif_after_pixels

StartRegionEasel = Callable[..., AbstractAsyncContextManager[EaselBot]]
PICTURE = {"size": "128x128"}
# Where the test paints on the 128x128 picture, shown at its own size: a band across row 24
# with the mouse, a dot with a finger.
STROKE_ROW, STROKE_FROM, STROKE_TO, BRUSH = 24, 16, 112, 10
TAP = (96, 96)
VIEW_CHANNEL = 1 << 10


@pytest.fixture
def start_region_easel(
    fake_discord: FakeDiscord, tmp_path: Path, region_models_dir: Path
) -> StartRegionEasel:
    """Easel with the mask editor on a free loopback port (``web=False``: without it)."""

    @asynccontextmanager
    async def start(web: bool = True) -> AsyncIterator[EaselBot]:
        settings = easel_settings(fake_discord, tmp_path / "data", region_models_dir)
        if web:
            settings = with_web_server(settings)
        bot = build(settings)
        async with running_bot(fake_discord, bot):
            yield bot

    return start


async def region_offer(fake: FakeDiscord, result: StoredMessage, user: int) -> StoredMessage:
    click = await fake.click(result, label="Vary (Region)", user=user)
    return await click.wait_for_original(lambda m: not m.is_loading)


def mask_form(painted: bool, text: str = "", *, turned: bool = False) -> aiohttp.FormData:
    """The page's form; ``text``: a compressed text chunk in the mask PNG too; ``turned``:
    stored 32x64 and turned to 64x32 by an EXIF orientation after its pixels."""
    buffer = io.BytesIO()
    mask = Image.new("L", (32, 64) if turned else (64, 64), 0)
    if painted:
        mask.paste(255, (8, 8, 32, 32))
    chunks = PngInfo()
    if text:
        chunks.add_text("parameters", text, zip=True)
    orientation = Image.Exif()
    orientation[ExifTags.Base.Orientation] = 6  # a quarter clockwise
    mask.save(buffer, format="PNG", pnginfo=chunks, exif=orientation.tobytes() if turned else b"")
    data = exif_after_pixels(buffer.getvalue()) if turned else buffer.getvalue()
    form = aiohttp.FormData()
    form.add_field("mask", data, filename="mask.png", content_type="image/png")
    form.add_field("prompt", "")
    return form


def painted_mask() -> bytes:
    """A 64x64 mask painted all over, as the page sends it."""
    buffer = io.BytesIO()
    Image.new("L", (64, 64), 255).save(buffer, format="PNG")
    return buffer.getvalue()


async def jobs_of(bot: EaselBot, user: int, guild: int) -> int:
    return (await bot.services.history.page(user, 0, guild_id=guild)).total


async def test_the_web_pages_open_only_after_the_queue_has_replayed_its_jobs(
    start_region_easel: StartRegionEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mask editor's submit (a direct message's link works before the guilds are known)
    made during the replay was queued a second time, failing the start, or ahead of the
    member's older restored jobs."""
    steps: list[str] = []
    replay, listen = JobQueue.start, RegionWebServer.start

    async def replayed(queue: JobQueue, *args: Any, **kwargs: Any) -> None:
        await replay(queue, *args, **kwargs)
        steps.append("replayed")

    async def listening(web: RegionWebServer) -> None:
        steps.append("listening")
        await listen(web)

    monkeypatch.setattr(JobQueue, "start", replayed)
    monkeypatch.setattr(RegionWebServer, "start", listening)
    async with start_region_easel():
        assert steps == ["replayed", "listening"]


async def test_painted_region_is_inpainted_for_the_clicker(
    fake_discord: FakeDiscord, start_region_easel: StartRegionEasel
) -> None:
    clicker = 424242424242424242
    fake_discord.add_member(clicker, "painter", roles=(fake_discord.member_role_id,))
    async with start_region_easel() as bot:
        result = await imagine(fake_discord, "a lighthouse at dusk", **PICTURE)
        link = link_of(await region_offer(fake_discord, result, clicker))
        assert link.startswith(bot.settings.public_url + "/region/")

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=shutil.which("chromium"), args=["--no-sandbox"]
            )
            page = await browser.new_page(has_touch=True)
            violations = await watch_csp(page)
            shown = await page.goto(link)
            assert shown is not None
            assert_strict_csp(await shown.header_value("content-security-policy"))
            await page.wait_for_function("() => document.getElementById('mask').width === 128")
            await page.locator("#size").fill(str(BRUSH))
            box = await page.locator("#mask").bounding_box()
            assert box is not None and round(box["width"]) == 128
            await page.mouse.move(box["x"] + STROKE_FROM, box["y"] + STROKE_ROW)
            await page.mouse.down()
            await page.mouse.move(box["x"] + STROKE_TO, box["y"] + STROKE_ROW, steps=8)
            await page.mouse.up()
            await page.touchscreen.tap(box["x"] + TAP[0], box["y"] + TAP[1])  # a finger's dot
            await page.fill("#prompt", "a lighthouse under a starry sky")
            await page.click("#submit")
            await page.wait_for_function(
                "() => document.getElementById('status').textContent.startsWith('Queued')"
            )
            answer = await page.inner_text("#status")
            # The page worked without breaking its policy, which stops an injected script.
            assert violations == []
            await assert_injected_script_is_blocked(page)
            await browser.close()

        match = re.search(r"job ([0-9a-f]{16})", answer)
        assert match is not None, answer
        job_id = match.group(1)
        posted = await fake_discord.wait_for_channel_message(
            lambda m: has_picture(m) and f"job `{job_id}`" in m.content, timeout=RENDER_TIMEOUT_S
        )
        assert f"<@{clicker}>" in posted.content  # made for, and charged to, the clicker
        assert "starry sky" in posted.content and job_id_of(posted) == job_id

        request = await bot.queue.request_of(job_id)
        assert request is not None and request.mode == "inpaint" and request.mask_image
        with Image.open(request.mask_image) as mask:
            grey = mask.convert("L")
            assert grey.size == (128, 128)
            assert grey.getpixel((64, STROKE_ROW)) == 255  # painted
            assert grey.getpixel((STROKE_FROM + 2, STROKE_ROW)) == 255
            assert grey.getpixel((64, STROKE_ROW + BRUSH)) == 0  # beside the stroke
            assert grey.getpixel(TAP) == 255
            assert grey.getpixel((20, 100)) == 0

        # Single use: the same link again is refused, and queues nothing.
        before = await jobs_of(bot, clicker, fake_discord.guild_id)
        async with aiohttp.ClientSession() as http, http.get(link) as again:
            assert again.status == 403 and "already used" in await again.text()
        assert await jobs_of(bot, clicker, fake_discord.guild_id) == before


async def test_forged_and_expired_links_are_refused(
    fake_discord: FakeDiscord,
    start_region_easel: StartRegionEasel,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with start_region_easel() as bot:
        result = await imagine(fake_discord, "a quiet harbour")
        offer = await region_offer(fake_discord, result, fake_discord.user_id)
        link = link_of(offer)
        # The other way to say where, offered beside the link: words, in a modal.
        words = await fake_discord.click(offer, label="Describe it in words")
        assert (await words.wait_for_modal())["title"] == "Vary (Region)"
        payload, signature = link.rsplit(".", 1)
        forged_signature = payload + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
        other_job = payload[:-4] + ("AAAA" if payload[-4:] != "AAAA" else "BBBB")
        before = await jobs_of(bot, fake_discord.user_id, fake_discord.guild_id)
        form = aiohttp.FormData()
        form.add_field("mask", b"not even a png", filename="mask.png")
        form.add_field("prompt", "")

        async with aiohttp.ClientSession() as http:
            for forged in (forged_signature, f"{other_job}.{signature}", link + "x"):
                async with http.get(forged) as shown:
                    assert shown.status == 403 and "not one Easel made" in await shown.text()
                async with http.post(forged, data=form) as posted:
                    assert posted.status == 403
            web = bot.region_offer.web
            assert web is not None
            real_clock = web.signer.clock
            web.signer.clock = lambda: real_clock() + 16 * 60
            async with http.get(link) as shown:
                assert shown.status == 403 and "expired" in await shown.text()
            async with http.post(link, data=form) as posted:
                assert posted.status == 403 and "expired" in await posted.text()
            web.signer.clock = real_clock
            with pillow_opens_on_the_loop(monkeypatch) as on_the_loop:
                async with http.post(link, data=mask_form(painted=False)) as posted:
                    assert posted.status == 400 and "mask is empty" in await posted.text()
            assert on_the_loop == []  # the mask is read on a thread
            conn = await connect(bot.settings.database_path)
            try:  # kept for the server's dashboard, as a refusal in Discord would be
                [refused] = await refusals.latest(conn, fake_discord.guild_id, 10)
            finally:
                await conn.close()
            assert (refused.user_id, refused.reason) == (fake_discord.user_id, "input")
            assert refused.sentence is not None and "mask is empty" in refused.sentence
            # A small PNG whose text chunk inflates past Pillow's cap: one sentence, not a 500.
            bomb = mask_form(painted=True, text="a" * (2 * 2**20))
            async with http.post(link, data=bomb) as posted:
                assert posted.status == 400 and "not a readable image" in await posted.text()
            # A mask of too many chunks: refused from their headers before Pillow walks them.
            chunky = aiohttp.FormData({"prompt": ""})
            chunky.add_field("mask", chunky_png(2 * MAX_PNG_OTHER_CHUNKS), filename="mask.png")
            async with http.post(link, data=chunky) as posted:
                answer = await posted.text()
                assert posted.status == 400 and f"{MAX_PNG_OTHER_CHUNKS:,} chunks" in answer
            # A mask whose orientation comes after its pixels: its sides are those written.
            async with http.post(link, data=mask_form(painted=True, turned=True)) as posted:
                answer = await posted.text()
                assert posted.status == 400 and "mask is 64x32 but" in answer, answer
            async with http.get(link) as shown:  # the genuine link still opens: nothing used it
                assert shown.status == 200 and "<canvas id=mask " in await shown.text()

            # Discord's connection breaks while the member is looked up: refused, not a 500,
            # with "try again" (503), and not kept as the member's refusal (checked below): the
            # failure is Discord's.
            member_route = "/guilds/{guild}/members/{user_id}"
            fake_discord.fail("GET", member_route, times=2, status=CONNECTION_DROPPED)
            discords_before = refusals_counted(Reason.DISCORD)
            with caplog.at_level(logging.WARNING, logger="cogs.visibility"):
                async with http.post(link, data=mask_form(painted=True)) as posted:
                    assert posted.status == 503 and "did not answer" in await posted.text()
            # Counted under its own reason, and logged once with what was asked (ids only).
            assert refusals_counted(Reason.DISCORD) - discords_before == 1
            asked = f"whether member {fake_discord.user_id} is in server {fake_discord.guild_id}"
            told = [r.getMessage() for r in caplog.records if r.name == "cogs.visibility"]
            assert [asked in message for message in told] == [True], told

            # Two submits of one link at once: the second to claim it is refused, a stale link.
            job_id = web.signer.check(link.rsplit("/", 1)[1]).job_id
            raced = web.signer.check(
                web.signer.issue(
                    job_id,
                    0,
                    fake_discord.user_id,
                    fake_discord.guild_id,
                    fake_discord.channel_id,
                    private=False,
                )
            )
            web.signer.use(raced)  # by the submit that won
            with pytest.raises(LinkRefused, match="already used"):
                await bot.region_offer.submit(
                    raced, painted_mask(), "", lambda: web.signer.use(raced)
                )

            # Another's job needs its channel's history, as their click there would: a member
            # who lost it meanwhile is refused (the maker, for their own job, is not).
            reader = 434343434343434343
            fake_discord.add_member(reader, "reader", roles=(fake_discord.member_role_id,))
            their_link = link_of(await region_offer(fake_discord, result, reader))
            fake_discord.set_overwrite(
                fake_discord.channel_id, reader, deny=PERMISSION_READ_MESSAGE_HISTORY
            )
            await reply_to(fake_discord, "help", user=fake_discord.owner_id)  # delivers the change
            async with http.post(their_link, data=mask_form(painted=True)) as posted:
                assert posted.status == 403 and "no longer see the channel" in await posted.text()
            assert await jobs_of(bot, reader, fake_discord.guild_id) == 0

            # A link offered in a private thread the maker is not in, while Discord fails to
            # say who is: refused, and told it was Discord, not their access (try again: 503).
            secret = fake_discord.add_thread("secret", private=True, owner=fake_discord.bot_user_id)
            await reply_to(fake_discord, "help", user=fake_discord.owner_id)  # delivers it
            in_thread = web.url_for(
                web.signer.issue(
                    job_id, 0, fake_discord.user_id, fake_discord.guild_id, secret, private=False
                )
            )
            fake_discord.fail("GET", "/channels/{channel}/thread-members/{user_id}", status=503)
            async with http.post(in_thread, data=mask_form(painted=True)) as posted:
                assert posted.status == 503 and THREAD_CHECK_FAILED in await posted.text()
            assert refusals_counted(Reason.DISCORD) - discords_before == 2

            # The member can no longer see the channel: refused, as a click there would be.
            fake_discord.set_overwrite(
                fake_discord.channel_id, fake_discord.user_id, deny=VIEW_CHANNEL
            )
            await reply_to(fake_discord, "help", user=fake_discord.owner_id)  # delivers the change
            async with http.post(link, data=mask_form(painted=True)) as posted:
                assert posted.status == 403 and "no longer see the channel" in await posted.text()

            # A link offered from a copy of the buttons in a channel the maker still reads: the
            # job's own channel, now out of their sight, is checked too, as the click was.
            elsewhere = fake_discord.add_text_channel("elsewhere")
            await reply_to(fake_discord, "help", user=fake_discord.owner_id)  # delivers it
            copied_link = web.url_for(
                web.signer.issue(
                    job_id, 0, fake_discord.user_id, fake_discord.guild_id, elsewhere, private=False
                )
            )
            async with http.post(copied_link, data=mask_form(painted=True)) as posted:
                assert posted.status == 403 and "no longer see the channel" in await posted.text()

            # The picture deleted since: gone from the history, the member's stale input.
            made = await bot.services.history.job(job_id)
            assert made is not None
            made.image_paths[0].unlink()
            async with http.post(copied_link, data=mask_form(painted=True)) as posted:
                assert posted.status == 403 and "no longer in the history" in await posted.text()
        assert await jobs_of(bot, fake_discord.user_id, fake_discord.guild_id) == before
        # The server's dashboard keeps each submit's refusal under its reason; Discord's
        # failures (no answer, a private thread's members not read) are none of the member's.
        kept = await kept_refusals(bot, fake_discord.guild_id)
        expected = [
            ("input", "mask is empty"),
            ("input", "not a readable image"),
            ("input", "chunks"),
            ("input", "mask is 64x32 but"),
            ("input", "already used"),
            ("permission", "no longer see the channel"),
            ("permission", "no longer see the channel"),
            ("permission", "no longer see the channel"),
            ("input", "no longer in the history"),
        ]
        assert [reason for reason, _ in kept] == [reason for reason, _ in expected], kept
        assert all(words in said for (_, said), (_, words) in zip(kept, expected, strict=True))


async def test_a_link_made_before_its_channel_closed_is_refused_in_plain_web_words(
    fake_discord: FakeDiscord, start_region_easel: StartRegionEasel
) -> None:
    fake = fake_discord
    art = fake.add_text_channel("art")
    async with start_region_easel() as bot:
        result = await imagine(fake, "a quiet harbour")
        link = link_of(await region_offer(fake, result, fake.user_id))
        await reply_to(
            fake, "easel-admin channel", {"action": "add", "channel": art}, user=fake.owner_id
        )
        async with aiohttp.ClientSession() as http:
            for shown in (http.get(link), http.get(link + "/picture")):
                async with shown as answer:
                    page = await answer.text()
                    assert answer.status == 403 and "no longer enabled" in page
                    assert "<#" not in page and "image/png" not in answer.content_type
            async with http.post(link, data=mask_form(painted=True)) as posted:
                answer_text = await posted.text()
                assert posted.status == 403 and "no longer enabled" in answer_text
                assert "<#" not in answer_text
        assert bot.queue.queued_count() == 0
        # The submit's refusal is kept for the server's dashboard, as a command's would be,
        # under the channel rule's reason (the pages' views are not: they submit nothing).
        conn = await connect(bot.settings.database_path)
        try:
            [refused] = await refusals.latest(conn, fake.guild_id, 10)
        finally:
            await conn.close()
        assert (refused.user_id, refused.reason) == (fake.user_id, "channel")
        assert refused.sentence == answer_text


async def test_a_link_made_before_its_server_was_left_out_opens_and_submits_nothing(
    fake_discord: FakeDiscord, tmp_path: Path, region_models_dir: Path
) -> None:
    """A link given before the operator left its server out of EASEL_ALLOWED_SERVERS (a
    restart between): its page, its picture and its submit are refused in the words a
    command there gets, before anything is queued or charged, and nothing is recorded for
    the server's dashboard (a server left out keeps none)."""
    fake = fake_discord
    other = fake.add_guild("Server B")
    settings = with_web_server(easel_settings(fake, tmp_path / "data", region_models_dir))
    async with running_bot(fake, build(settings)):
        result = await imagine(fake, "a quiet harbour")
        link = link_of(await region_offer(fake, result, fake.user_id))
    left_out = settings.model_copy(update={"allowed_servers": frozenset({other.guild_id})})
    async with running_bot(fake, build(left_out)) as bot:
        async with aiohttp.ClientSession() as http:
            for shown in (http.get(link), http.get(link + "/picture")):
                async with shown as answer:
                    assert answer.status == 403 and NOT_ENABLED_HERE in await answer.text()
            async with http.post(link, data=mask_form(painted=True)) as posted:
                assert (posted.status, await posted.text()) == (403, NOT_ENABLED_HERE)
        assert bot.queue.queued_count() == 0
        assert await jobs_of(bot, fake.user_id, fake.guild_id) == 1  # the picture's own
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 1
        conn = await connect(bot.settings.database_path)
        try:
            assert await refusals.latest(conn, fake.guild_id, 10) == []
        finally:
            await conn.close()


async def test_region_in_words_is_segmented_and_inpainted(
    fake_discord: FakeDiscord, start_region_easel: StartRegionEasel
) -> None:
    async with start_region_easel(web=False) as bot:
        result = await imagine(fake_discord, "a meadow under clouds")
        click = await fake_discord.click(result, label="Vary (Region)")
        modal = await click.wait_for_modal()
        inputs = [c["custom_id"] for c in walk_components(modal["components"]) if c["type"] == 4]
        region_field, prompt_field = inputs
        submitted = await fake_discord.submit_modal(
            click, {region_field: "the sky", prompt_field: "a meadow under a red sky"}
        )
        posted = await submitted.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert "a meadow under a red sky" in posted.content
        request = await bot.queue.request_of(job_id_of(posted))
        assert request is not None and request.mode == "inpaint" and request.mask_image
        with Image.open(request.mask_image) as mask:
            assert mask.size == (64, 64) and mask.convert("L").getextrema()[1] == 255


async def test_regions_in_words_wait_on_clipsegs_own_thread_one_place_each(
    fake_discord: FakeDiscord,
    start_region_easel: StartRegionEasel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CLIPSeg ran on asyncio's shared pool (which every acknowledgement needs), a thread held
    by each waiting form, before the member's quota was asked: a few forms at once, even from a
    member with no quota left, could keep other members' commands from being acknowledged. It
    runs on its own thread once the job is admitted; a member waits there in one place, and a
    form past the line is refused at once, while others' commands are still acknowledged."""
    fake = fake_discord
    other, limited = 515151515151515151, 525252525252525252
    for member in (other, limited):
        fake.add_member(member, str(member), roles=(fake.member_role_id,))
    monkeypatch.setattr(region, "MAX_WAITING_REGIONS", 1)
    found: list[str] = []
    started, stuck = threading.Event(), threading.Event()
    segment = region.segment

    def stuck_segment(models_dir: Path, picture: Path, words: str) -> Image.Image:
        found.append(words)
        started.set()
        stuck.wait(RENDER_TIMEOUT_S)
        return segment(models_dir, picture, words)

    monkeypatch.setattr(region, "segment", stuck_segment)

    async def submit_words(result: StoredMessage, member: int, words: str) -> InteractionHandle:
        form = await fake.click(result, label="Vary (Region)", user=member)
        words_id = modal_fields(await form.wait_for_modal())["What to repaint (e.g. the sky)"][0]
        return await fake.submit_modal(form, {words_id: words}, user=member)

    async def answer(submitted: InteractionHandle) -> StoredMessage:
        return await submitted.wait_for_original(lambda m: not m.is_loading)

    # Two shared threads, not a 2-core box's six: fewer forms fill them.
    shared = ThreadPoolExecutor(2, thread_name_prefix="shared")
    asyncio.get_running_loop().set_default_executor(shared)
    try:
        async with start_region_easel(web=False):
            result = await imagine(fake, "a meadow under clouds")
            await limit_daily_images(fake, 0, member=limited)
            over_quota = await answer(await submit_words(result, limited, "the clouds"))
            assert over_quota.is_ephemeral and over_quota.content.startswith("⛔")
            assert found == []  # refused before CLIPSeg spent anything

            first = await submit_words(result, fake.user_id, "the sky")
            assert await asyncio.to_thread(started.wait, RENDER_TIMEOUT_S)
            again = await answer(await submit_words(result, fake.user_id, "the grass"))
            assert again.is_ephemeral and "still being found" in again.content, again.content
            full = await answer(await submit_words(result, other, "the trees"))
            assert full.is_ephemeral and "being found already" in full.content, full.content
            theirs = await fake.invoke_command("imagine", {"prompt": "a barn"}, user=other)
            await theirs.wait_for_ack()
            assert found == ["the sky"] and not first.ack_failed
            stuck.set()
            await first.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    finally:
        stuck.set()
        shared.shutdown(wait=False)


async def test_a_links_page_and_picture_ask_after_its_member_each_time(
    fake_discord: FakeDiscord,
    start_region_easel: StartRegionEasel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The page and its picture ask of the link's member what its submit asks, each time they
    are served (audit AUD1, finding 5: both were served for the link's 15 minutes whatever
    became of its member): Discord not answering (try again), the channel out of their sight,
    the member kicked; none shows the picture. (Discord's answers are kept for no time here:
    ``test_a_reloaded_page_asks_discord_once``.)"""
    monkeypatch.setattr(region, "KEPT_FOR_PAGES_S", 0.0)
    fake = fake_discord
    reader = 6102
    fake.add_member(reader, "reader", roles=(fake.member_role_id,))
    club = fake.add_text_channel("club", visible_to=[reader])
    async with start_region_easel():
        made = await fake.invoke_command(
            "imagine", {"prompt": "the club's secret", **QUICK}, user=fake.owner_id, channel=club
        )
        result = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        link = link_of(await region_offer(fake, result, reader))
        async with aiohttp.ClientSession() as http:

            async def refused(status: int, words: str) -> None:
                for shown in (http.get(link), http.get(link + "/picture")):
                    async with shown as answer:
                        assert answer.content_type == "text/html"  # no picture
                        assert (answer.status, words in await answer.text()) == (status, True)

            async with http.get(link + "/picture") as shown:  # while they may: the picture
                assert shown.status == 200 and shown.content_type == "image/png"
            # Discord's connection breaks while the member is looked up (the page and the
            # picture each ask): try again.
            member_route = "/guilds/{guild}/members/{user_id}"
            fake.fail("GET", member_route, times=4, status=CONNECTION_DROPPED)
            await refused(503, "did not answer")
            fake.set_overwrite(club, reader, deny=VIEW_CHANNEL)
            await reply_to(fake, "help", user=fake.owner_id)  # delivers the change
            await refused(403, "no longer see the channel")
            await fake.kick_member(reader)
            await refused(403, "no longer a member")


async def test_a_reloaded_page_asks_discord_once(
    fake_discord: FakeDiscord, start_region_easel: StartRegionEasel
) -> None:
    """A link's page and picture loaded 40 times in a moment ask Discord for the member once
    (review R_AUD1: once a load), and for its thread, archived since the click (out of
    discord.py's cache), once; the picture is shown each time."""
    fake = fake_discord
    thread = fake.add_thread("quiet")
    member_route, channel_route = "/guilds/{guild}/members/{user_id}", "/channels/{channel}"
    async with start_region_easel():
        made = await fake.invoke_command(
            "imagine", {"prompt": "a harbour", **QUICK}, channel=thread
        )
        result = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        link = link_of(await region_offer(fake, result, fake.user_id))
        await fake.archive_thread(thread)
        members, channels = (
            len(fake.calls_to("GET", member_route)),
            len(fake.calls_to("GET", channel_route)),
        )
        async with aiohttp.ClientSession() as http:
            for _ in range(40):
                async with http.get(link + "/picture") as answer:
                    assert (answer.status, answer.content_type) == (200, "image/png")
        assert len(fake.calls_to("GET", member_route)) == members + 1
        assert len(fake.calls_to("GET", channel_route)) == channels + 1


async def test_no_age_restricted_picture_is_on_the_mask_editors_page(
    fake_discord: FakeDiscord, start_region_easel: StartRegionEasel
) -> None:
    """A web page is age-gated by nobody (docs/security.md, the dashboard's rule): Vary
    (Region) of a picture made in an age-restricted channel opens the words form, no link; a
    link whose channel was made age-restricted since shows nothing and queues nothing."""
    fake = fake_discord
    adults = fake.add_text_channel("adults", nsfw=True)
    async with start_region_easel() as bot:
        made = await fake.invoke_command(
            "imagine", {"prompt": "a night scene", **QUICK}, channel=adults
        )
        result = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        click = await fake.click(result, label="Vary (Region)")
        assert (await click.wait_for_modal())["title"] == "Vary (Region)"

        link = link_of(await region_offer(fake, await imagine(fake, "a harbour"), fake.user_id))
        fake.set_nsfw(fake.channel_id, True)
        await reply_to(fake, "help", user=fake.owner_id)  # delivers the change
        async with aiohttp.ClientSession() as http:
            for shown in (http.get(link), http.get(link + "/picture")):
                async with shown as answer:
                    assert answer.content_type == "text/html"  # no picture
                    assert answer.status == 403 and "age-gated by nobody" in await answer.text()
            async with http.post(link, data=mask_form(painted=True)) as posted:
                assert posted.status == 403 and "age-gated by nobody" in await posted.text()
        assert bot.queue.queued_count() == 0


async def test_without_clipseg_vary_region_names_the_rule_and_never_a_server_path(
    fake_discord: FakeDiscord,
    tmp_path: Path,
    tiny_models_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No CLIPSeg installed (review R_AUD1): a picture kept off the mask editor (made in an
    age-restricted channel) is refused saying so and that words are not installed here, and
    an ordinary one (no page at all) says to ask an admin; the path to install CLIPSeg at is
    the operator's log line, never the member's answer."""
    fake = fake_discord
    adults = fake.add_text_channel("adults", nsfw=True)
    clipseg_path = str(tiny_models_dir / "clipseg")
    for web in (True, False):
        settings = easel_settings(fake, tmp_path / f"data-{web}", tiny_models_dir)
        bot = build(with_web_server(settings) if web else settings)
        async with running_bot(fake, bot):
            made = await fake.invoke_command(
                "imagine", {"prompt": "a night scene", **QUICK}, channel=adults if web else None
            )
            result = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
            with caplog.at_level(logging.WARNING, logger="cogs.region"):
                answer = await region_offer(fake, result, fake.user_id)
        assert answer.is_ephemeral and clipseg_path not in answer.content, answer.content
        assert "not installed on this bot; ask an admin" in answer.content
        assert ("age-gated by nobody" in answer.content) is web
        assert any(clipseg_path in r.getMessage() for r in caplog.records)
        caplog.clear()


async def test_without_clipseg_five_clicks_log_one_warning(
    fake_discord: FakeDiscord, start_easel: StartEasel, caplog: pytest.LogCaptureFixture
) -> None:
    """No CLIPSeg is the operator's choice, told once (audit AUD15 finding 7): a warning at
    each member's click of Vary (Region) was a stream burying other warnings. Each member is
    still told why."""
    async with start_easel():
        made = await fake_discord.invoke_command("imagine", {"prompt": "a night scene", **QUICK})
        result = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        with caplog.at_level(logging.WARNING, logger="cogs.region"):
            for _ in range(5):
                answer = await region_offer(fake_discord, result, fake_discord.user_id)
                assert "not installed on this bot; ask an admin" in answer.content
    warned = [r for r in caplog.records if r.name == "cogs.region"]
    assert [r.getMessage().split(":")[0] for r in warned] == ["Vary (Region) in words was refused"]


async def test_vary_region_of_a_job_from_a_thread_archived_since_offers_the_page(
    fake_discord: FakeDiscord, start_region_easel: StartRegionEasel
) -> None:
    """Discord archives a quiet thread and discord.py's cache drops it: Vary (Region) clicked
    on a result there read the job's channel from the cache only, counted the picture as
    age-restricted, and offered the words form alone (review L1). Its channel, as the click
    carries it, is read now: the page's link is offered, and the page shows the picture.
    Clicked on a copy elsewhere (/show), the thread is asked of Discord once for the click,
    its check and the offer together."""
    fake = fake_discord
    thread = fake.add_thread("quiet")
    channel_route = "/channels/{channel}"
    async with start_region_easel():
        made = await fake.invoke_command(
            "imagine", {"prompt": "a harbour", **QUICK}, channel=thread
        )
        result = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        await fake.archive_thread(thread)
        link = link_of(await region_offer(fake, result, fake.user_id))
        async with aiohttp.ClientSession() as http, http.get(link + "/picture") as answer:
            assert (answer.status, answer.content_type) == (200, "image/png")

        shown = await fake.invoke_command("show", {"job_id": job_id_of(result)})
        copy = await shown.wait_for_original(has_picture)
        asked = len(fake.calls_to("GET", channel_route))
        assert link_of(await region_offer(fake, copy, fake.user_id)) != link
        assert len(fake.calls_to("GET", channel_route)) == asked + 1


async def test_a_links_page_says_easel_lost_a_private_thread_not_the_member(
    fake_discord: FakeDiscord,
    start_region_easel: StartRegionEasel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Easel taken out of a private thread its member is still in: Discord refuses Easel the
    thread's members (403). The page and its picture are refused (nothing is known), saying
    Easel lost the thread, not "you can no longer see the channel" (review L1)."""
    fake = fake_discord
    thread = fake.add_thread("secret", private=True, members=[fake.bot_user_id])
    async with start_region_easel() as bot:
        made = await fake.invoke_command(
            "imagine", {"prompt": "a harbour", **QUICK}, channel=thread
        )
        result = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        link = link_of(await region_offer(fake, result, fake.user_id))
        fake.set_thread_member(thread, fake.bot_user_id, member=False)
        await reply_to(fake, "help")  # delivers the change
        # The member's "yes" from the click is kept 30 s: the page is loaded after that.
        monkeypatch.setattr(bot.services.thread_members, "is_member", lambda *_: False)
        async with aiohttp.ClientSession() as http:
            for shown in (http.get(link), http.get(link + "/picture")):
                async with shown as answer:
                    assert answer.content_type == "text/html"  # no picture
                    text = await answer.text()
                    assert answer.status == 403 and region._EASEL_LOST_SIGHT in text, text
                    assert region._OUT_OF_SIGHT not in text


async def test_a_link_from_a_thread_of_an_allowed_channel_opens_and_submits(
    fake_discord: FakeDiscord, start_region_easel: StartRegionEasel
) -> None:
    """A thread is enabled with its channel: the page of a result posted in a thread of the
    server's one allowed channel was refused as "no longer enabled", and so was its submit."""
    fake = fake_discord
    thread = fake.add_thread("ideas")
    async with start_region_easel() as bot:
        await reply_to(
            fake,
            "easel-admin channel",
            {"action": "add", "channel": fake.channel_id},
            user=fake.owner_id,
        )
        made = await fake.invoke_command(
            "imagine", {"prompt": "a harbour", **QUICK}, channel=thread
        )
        result = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        link = link_of(await region_offer(fake, result, fake.user_id))
        async with aiohttp.ClientSession() as http:
            async with http.get(link + "/picture") as shown:
                assert (shown.status, shown.content_type) == (200, "image/png")
            async with http.post(link, data=mask_form(painted=True)) as posted:
                answer = await posted.text()
                assert posted.status == 200, answer
        job_id = re.search(r"job ([0-9a-f]{16})", answer)
        assert job_id is not None, answer
        repainted = await fake.wait_for_channel_message(
            lambda m: has_picture(m) and f"job `{job_id.group(1)}`" in m.content,
            channel=thread,
            timeout=RENDER_TIMEOUT_S,
        )
        request = await bot.queue.request_of(job_id_of(repainted))
        assert request is not None and request.mode == "inpaint"


async def test_a_link_from_a_thread_whose_channel_easel_may_not_view_journals_age_restricted(
    fake_discord: FakeDiscord, start_region_easel: StartRegionEasel
) -> None:
    """Discord's channel obfuscation: a channel Easel may not view shows Easel no
    age-restriction flag (as if off, here). A link from a copy shown in a thread of such a
    channel submitted a job journaled as made outside one, whose pictures could then go to
    direct messages; a command there counts it as age-restricted (``parent_unseen``)."""
    fake = fake_discord
    adults = fake.add_text_channel("adults", nsfw=True)
    thread = fake.add_thread("late", parent=adults)
    async with start_region_easel() as bot:
        result = await imagine(fake, "a quiet harbour")
        shown = await fake.invoke_command("show", {"job_id": job_id_of(result)}, channel=thread)
        copy = await shown.wait_for_original(has_picture)
        link = link_of(await region_offer(fake, copy, fake.user_id))
        fake.set_overwrite(adults, fake.bot_user_id, deny=VIEW_CHANNEL, member=True)
        await reply_to(fake, "help", user=fake.owner_id)  # delivers the change
        hidden = bot.get_channel(adults)
        assert isinstance(hidden, discord.TextChannel)
        hidden.nsfw = False  # the flag as obfuscation shows it
        async with (
            aiohttp.ClientSession() as http,
            http.post(link, data=mask_form(painted=True)) as posted,
        ):
            answer = await posted.text()
            assert posted.status == 200, answer
        job_id = re.search(r"job ([0-9a-f]{16})", answer)
        assert job_id is not None, answer
        job = await bot.services.history.job(job_id.group(1))
        assert job is not None and job.channel_id == thread
        assert job.age_restricted


async def test_a_page_asks_discord_once_for_an_archived_thread_without_a_journaled_channel(
    fake_discord: FakeDiscord, start_region_easel: StartRegionEasel
) -> None:
    """A link clicked on a copy in another thread (its job journaled elsewhere: the thread's
    channel not known from it), that thread archived since: each page load asked Discord
    what the thread is twice, once for its channel's rules and once for the member's sight."""
    fake = fake_discord
    thread = fake.add_thread("quiet")
    channel_route = "/channels/{channel}"
    async with start_region_easel():
        result = await imagine(fake, "a quiet harbour")
        shown = await fake.invoke_command("show", {"job_id": job_id_of(result)}, channel=thread)
        copy = await shown.wait_for_original(has_picture)
        link = link_of(await region_offer(fake, copy, fake.user_id))
        await fake.archive_thread(thread)
        asked = len(fake.calls_to("GET", channel_route))
        async with aiohttp.ClientSession() as http, http.get(link + "/picture") as answer:
            assert (answer.status, answer.content_type) == (200, "image/png")
        assert len(fake.calls_to("GET", channel_route)) == asked + 1
