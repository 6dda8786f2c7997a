"""The web pages without a mouse, with a screen reader, on a phone and in any colour vision
(audit AUD28), through the fake Discord and a real headless Chromium (Debian's, driven by
Playwright): the mask editor painted with the keyboard alone, every control showing its
focus, strokes seen on any picture, the keyboard's brush following a mouse's; the dashboard
announcing only what changed, keeping its rows, pictures, revealed spoilers and the keyboard's
focus from poll to poll and as new pictures arrive, and fitting a phone's width."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from PIL import Image
from playwright.async_api import Page, async_playwright

from bot.settings import Settings
from tests.e2e.conftest import StartEasel
from tests.e2e.helpers import (
    imagine,
    link_of,
    reply_to,
    with_web_server,
)
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.fake_discord.rules import walk_components

# The editor's controls in their Tab order, the picture's mask among them.
EDITOR_TAB_STOPS = ["brush", "eraser", "size", "clear", "mask", "prompt", "submit"]
# How the page looks a control up as focused or not: its ring and outline.
FOCUS_LOOK = """(id) => {
  const style = getComputedStyle(document.getElementById(id));
  return [style.outlineStyle, style.outlineWidth, style.outlineColor, style.boxShadow].join(" ");
}"""


@pytest.fixture
def easel_settings_for_test(easel_settings_for_test: Settings) -> Settings:
    """Easel with its web pages."""
    return with_web_server(easel_settings_for_test)


async def tab_to(page: Page, element_id: str) -> None:
    await page.keyboard.press("Tab")
    assert await page.evaluate("() => document.activeElement.id") == element_id


async def region_offer(fake: FakeDiscord) -> StoredMessage:
    """Vary (Region) pressed under a 128x128 picture: its answer, with the editor's link."""
    result = await imagine(fake, "a lighthouse at dusk", size="128x128")
    click = await fake.click(result, label="Vary (Region)")
    return await click.wait_for_original(lambda m: not m.is_loading)


@asynccontextmanager
async def editor_page(link: str) -> AsyncIterator[Page]:
    """The mask editor at ``link`` in Chromium, its 128-pixel picture loaded."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--no-sandbox"]
        )
        page = await browser.new_page()
        await page.goto(link)
        await page.wait_for_function("() => document.getElementById('mask').width === 128")
        yield page
        await browser.close()


async def test_a_region_is_painted_and_submitted_with_the_keyboard_alone(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel() as bot:
        offer = await region_offer(fake_discord)
        # Without CLIPSeg, words are not offered (they would only be refused): the page is,
        # which a keyboard paints too.
        buttons = [c for c in walk_components(offer.components) if c.get("type") == 2]
        assert [button.get("label") for button in buttons] == ["Paint the region"]
        assert "paint it on the page, with a mouse, a finger or the keyboard" in offer.content
        link = link_of(offer)

        async with editor_page(link) as page:
            assert "arrow keys" in await page.inner_text("#keys")
            unfocused = {i: await page.evaluate(FOCUS_LOOK, i) for i in EDITOR_TAB_STOPS}
            focused = {}
            for element_id in EDITOR_TAB_STOPS[:5]:  # up to the picture's mask
                await tab_to(page, element_id)
                focused[element_id] = await page.evaluate(FOCUS_LOOK, element_id)
            # The brush starts in the middle (64, 64), 40 pixels wide (the picture is shown
            # at its own size, 8 pixels a key): painted 64 -> 96 along row 64, then moved up
            # and left without painting.
            assert await page.is_visible("#cursor")
            await page.keyboard.press("Space")
            for _ in range(4):
                await page.keyboard.press("ArrowRight")
            await page.keyboard.press("Space")
            assert "Not painting" in await page.inner_text("#pen")
            for key, times in (("ArrowUp", 5), ("Shift+ArrowLeft", 1)):
                for _ in range(times):
                    await page.keyboard.press(key)
            cursor, mask = page.locator("#cursor"), page.locator("#mask")
            ring, canvas = await cursor.bounding_box(), await mask.bounding_box()
            assert ring is not None and canvas is not None
            # It shows where the brush is.
            centre_x = ring["x"] + ring["width"] / 2 - canvas["x"]
            centre_y = ring["y"] + ring["height"] / 2 - canvas["y"]
            assert (centre_x, centre_y) == pytest.approx((56, 24), abs=1)
            # The stroke shows as dark and light stripes: seen on any picture, in any colour
            # vision (a red alone was nearly the grass's or the skin's shade to some).
            lightness = await page.evaluate(
                """() => {
                  const canvas = document.getElementById("mask");
                  const data = canvas.getContext("2d").getImageData(0, 0, 128, 128).data;
                  const seen = [];
                  for (let i = 0; i < data.length; i += 4) {
                    if (data[i + 3] === 255) { seen.push(data[i] + data[i + 1] + data[i + 2]); }
                  }
                  return [Math.min(...seen), Math.max(...seen)];
                }"""
            )
            assert lightness[0] < 100 and lightness[1] > 400, lightness
            for element_id in EDITOR_TAB_STOPS[5:]:
                await tab_to(page, element_id)
                focused[element_id] = await page.evaluate(FOCUS_LOOK, element_id)
            # Every control shows it has the keyboard's focus (the pressed Brush looked the
            # same with it and without).
            same = [i for i in EDITOR_TAB_STOPS if focused[i] == unfocused[i]]
            assert same == [], (same, focused, unfocused)
            await page.keyboard.press("Enter")  # Submit
            await page.wait_for_function(
                "() => document.getElementById('status').textContent.startsWith('Queued')"
            )
            answer = await page.inner_text("#status")

        match = re.search(r"job ([0-9a-f]{16})", answer)
        assert match is not None, answer
        request = await bot.queue.request_of(match.group(1))
        assert request is not None and request.mode == "inpaint" and request.mask_image
        with Image.open(request.mask_image) as stored:
            grey = stored.convert("L")
        # Every painted pixel is in the mask, the black stripes too; nothing where it moved.
        for painted in ((64, 64), (80, 64), (96, 64), (80, 64 + 15), (80, 64 - 15)):
            assert grey.getpixel(painted) == 255, painted
        for kept in ((80, 64 + 26), (96, 30), (56, 24), (20, 110)):
            assert grey.getpixel(kept) == 0, kept


async def test_the_keyboard_brush_follows_a_mouse_stroke_and_a_held_space_paints_once(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel():
        link = link_of(await region_offer(fake_discord))
        async with editor_page(link) as page:
            canvas = await page.locator("#mask").bounding_box()
            assert canvas is not None
            # A mouse stroke (shown at its own size: page pixels are the picture's) from
            # (20, 20) to (100, 90): the keyboard's brush goes on from where it ended.
            await page.mouse.move(canvas["x"] + 20, canvas["y"] + 20)
            await page.mouse.down()
            await page.mouse.move(canvas["x"] + 100, canvas["y"] + 90, steps=5)
            await page.mouse.up()
            assert await page.evaluate("() => document.activeElement.id") == "mask"
            assert await page.is_visible("#cursor")
            ring = await page.locator("#cursor").bounding_box()
            assert ring is not None
            centre = (
                ring["x"] + ring["width"] / 2 - canvas["x"],
                ring["y"] + ring["height"] / 2 - canvas["y"],
            )
            assert centre == pytest.approx((100, 90), abs=1)
            # Space held down (the key repeating: three more keydowns) turns painting on once;
            # it flipped on and off at each repeat.
            for _ in range(4):
                await page.keyboard.down("Space")
            await page.keyboard.up("Space")
            pen = await page.inner_text("#pen")
            assert pen.startswith("Painting"), pen


async def test_the_dashboard_announces_and_replaces_only_what_changed(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    owner = fake.owner_id
    async with start_easel():
        await reply_to(fake, "easel-admin nsfw", {"policy": "spoiler"}, user=owner)
        await imagine(fake, "a lighthouse at dusk")
        await reply_to(fake, "easel-admin dashboard")  # refused: a row of refusals
        link = link_of(await reply_to(fake, "easel-admin dashboard", user=owner))

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=shutil.which("chromium"), args=["--no-sandbox"]
            )
            page = await browser.new_page(viewport={"width": 1200, "height": 900})
            await page.goto(link)
            await page.wait_for_function(
                "() => [...document.querySelectorAll('#gallery img')]"
                ".some((img) => img.naturalWidth > 0)"
            )
            await page.evaluate(
                """() => {
                  window.said = [];
                  new MutationObserver(() => window.said.push(
                    document.getElementById("status").textContent
                  )).observe(document.getElementById("status"),
                             { childList: true, characterData: true, subtree: true });
                  window.kept = [document.querySelector("#refusals tbody tr"),
                                 document.querySelector("#refusals tbody td"),
                                 document.querySelector("#gallery figure")];
                }"""
            )
            # Its keyboard's one way to the spoilered picture: a button after Sign out.
            await page.focus("#sign-out")
            await page.keyboard.press("Tab")
            reveal = page.locator("#gallery .reveal")
            assert await reveal.evaluate("(button) => button === document.activeElement")
            assert await reveal.get_attribute("aria-pressed") == "false"
            assert await page.get_attribute("#gallery img", "class") == "spoiler"
            await page.keyboard.press("Enter")
            assert await reveal.get_attribute("aria-pressed") == "true"
            for _ in range(2):  # two polls more
                updated = await page.inner_text("#updated")
                await page.wait_for_function(
                    "(before) => document.getElementById('updated').textContent !== before",
                    arg=updated,
                    timeout=30_000,
                )
            # Nothing changed: nothing said again, every row and picture the same node, and
            # the spoiler the admin revealed still shown.
            assert await page.evaluate("() => window.said") == []
            assert await page.evaluate(
                """() => window.kept.every((node) => node.isConnected) && window.kept[2] ===
                     document.querySelector("#gallery figure")"""
            )
            assert await page.get_attribute("#gallery img", "class") == ""
            assert await page.evaluate(
                "() => document.activeElement === document.querySelector('#gallery .reveal')"
            )
            # A new picture arrives: it goes into the gallery around the kept one, whose
            # button keeps the keyboard's focus (taken out and put back, it lost it).
            await imagine(fake, "a harbour at dawn")
            await page.wait_for_function(
                "() => document.querySelectorAll('#gallery figure').length === 2",
                timeout=60_000,
            )
            assert await page.evaluate(
                """() => window.kept[2].isConnected &&
                     document.activeElement === window.kept[2].querySelector(".reveal")"""
            ), await page.evaluate("() => document.activeElement.tagName")
            # A phone's width holds every table: ids and prompts wrap.
            for width in (320, 375):
                await page.set_viewport_size({"width": width, "height": 640})
                overflow = await page.evaluate(
                    "() => document.documentElement.scrollWidth - window.innerWidth"
                )
                assert overflow <= 0, (width, overflow)
            await browser.close()
