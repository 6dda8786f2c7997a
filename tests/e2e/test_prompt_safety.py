"""The prompt as it will render, through the fake Discord: banned words are found after
wildcards, choices, schedules and tags; a bad prompt is refused to its member before it is
queued, and fails no one else's job; prompt work never stalls the bot."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from bot.engines import engine_factory_for
from bot.settings import Settings
from inference.infotext import png_with_infotext
from inference.prompts import WILDCARD_DRAWS_OPTION
from inference.types import ProgressCallback, RenderedImage, RenderRequest
from inference.worker import RenderEngine
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, StartEasel, has_picture, reply_to
from tests.fake_discord import FakeDiscord

MEMBER_A, MEMBER_B = 6161, 6262
PARAMETERS = "Steps: 2, Sampler: Euler, CFG scale: 6, Seed: 77, Size: 64x64"


def picture_with_prompt(prompt: str) -> bytes:
    return png_with_infotext(Image.new("RGB", (64, 64), "orange"), f"{prompt}\n{PARAMETERS}")


def write_wildcard(settings: Settings, name: str, values: str) -> Path:
    settings.wildcards_dir.mkdir(parents=True, exist_ok=True)
    path = settings.wildcards_dir / f"{name}.txt"
    path.write_text(values + "\n", encoding="utf-8")
    return path


async def test_banned_words_are_found_in_what_renders(
    fake_discord: FakeDiscord, start_easel: StartEasel, easel_settings_for_test: Settings
) -> None:
    write_wildcard(easel_settings_for_test, "animal", "cat")
    async with start_easel() as bot:
        await reply_to(
            fake_discord,
            "easel-admin banned-word",
            {"action": "add", "word": "cat"},
            user=fake_discord.owner_id,
        )
        for prompt in ("a {c|c}at", "a c<x:y>at", "a [c|c]at", "a __animal__", "a c\u200bAT"):
            refused = await reply_to(fake_discord, "imagine", {"prompt": prompt, **QUICK})
            assert refused.is_ephemeral, prompt
            assert "The word 'cat' is banned on this server" in refused.content, prompt
        refused = await reply_to(
            fake_discord, "imagine", {"prompt": "a dog", "negative": "[c|c]at", **QUICK}
        )
        assert "The word 'cat' is banned" in refused.content
        # A picture's stored prompt passes the same check before /vary reuses it.
        handle = await fake_discord.invoke_command(
            "vary", attachments={"image": ("cat.png", picture_with_prompt("a {c|c}at"))}
        )
        refused = await handle.wait_for_answer()
        assert refused.is_ephemeral and "The word 'cat' is banned" in refused.content
        assert bot.queue.queued_count() == 0
        assert not any(has_picture(message) for message in fake_discord.messages.values())


async def test_prompt_errors_and_long_pictures_are_refused_before_queueing(
    fake_discord: FakeDiscord, start_easel: StartEasel, easel_settings_for_test: Settings
) -> None:
    write_wildcard(easel_settings_for_test, "animal", "fox")
    async with start_easel() as bot:
        deep = "{" * 39 + "a|b" + "}" * 39
        refused = await reply_to(fake_discord, "imagine", {"prompt": deep, **QUICK})
        assert refused.is_ephemeral
        assert "nests { } braces 39 deep; at most 10 levels are allowed" in refused.content
        refused = await reply_to(fake_discord, "imagine", {"prompt": "a __nosuch__", **QUICK})
        assert refused.is_ephemeral and "There is no wildcard `__nosuch__`" in refused.content
        # Each open bracket re-weights all text after it: parsing grew with their square.
        unclosed = {"prompt": "[a|b]" + "(a" * 1990, **QUICK}
        refused = await reply_to(fake_discord, "imagine", unclosed)
        assert refused.is_ephemeral and "brackets 1990 deep" in refused.content
        assert "(an unclosed one counts to the end); at most 100" in refused.content
        # Each AND part is one more UNet row per picture at every step.
        parts = {"prompt": " AND ".join(["a fox"] * 17), **QUICK}
        refused = await reply_to(fake_discord, "imagine", parts)
        assert refused.is_ephemeral and "17 parts joined by AND; at most 16" in refused.content
        # A 1.6 kB PNG can carry a prompt of a million characters: the prompt cap holds.
        huge = picture_with_prompt("a red fox, " * 90_000)
        handle = await fake_discord.invoke_command(
            "vary", attachments={"image": ("huge.png", huge)}
        )
        refused = await handle.wait_for_answer()
        assert refused.is_ephemeral
        assert "prompt is 990,000 characters long; at most 4,000" in refused.content
        assert bot.queue.queued_count() == 0
        assert not any(has_picture(message) for message in fake_discord.messages.values())


class GatedEngine:
    """The real engine; every render waits until the test opens the gate. A request whose
    prompt is ``old_prompt`` loses the wildcard draws the bot planned: it renders as a job
    journaled before the bot sent them, drawn from the wildcards folder where it renders."""

    def __init__(
        self, engine: RenderEngine, gate: threading.Event, old_prompt: str | None = None
    ) -> None:
        self.engine = engine
        self.gate = gate
        self.old_prompt = old_prompt

    def render(
        self,
        request: RenderRequest,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[RenderedImage]:
        self.gate.wait(RENDER_TIMEOUT_S)
        return self.engine.render(self._as_journaled(request), progress, cancel)

    def render_batch(
        self,
        requests: Sequence[RenderRequest],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[RenderedImage]]:
        self.gate.wait(RENDER_TIMEOUT_S)
        return self.engine.render_batch(list(map(self._as_journaled, requests)), progress, cancel)

    def _as_journaled(self, request: RenderRequest) -> RenderRequest:
        if request.prompt != self.old_prompt:
            return request
        options = {k: v for k, v in request.options.items() if k != WILDCARD_DRAWS_OPTION}
        return dataclasses.replace(request, options=options)


async def test_a_prompt_that_fails_in_a_batch_fails_only_its_own_job(
    fake_discord: FakeDiscord, start_easel: StartEasel, easel_settings_for_test: Settings
) -> None:
    for member, name in ((MEMBER_A, "ann"), (MEMBER_B, "bob")):
        fake_discord.add_member(member, name, roles=(fake_discord.member_role_id,))
    wildcard = write_wildcard(easel_settings_for_test, "animal", "fox")
    gate = threading.Event()
    real_engines = engine_factory_for(easel_settings_for_test)
    # Member A's job as one journaled before an upgrade: it reads the wildcards folder at render.
    old_prompt = "a __animal__"
    async with start_easel(lambda device: GatedEngine(real_engines(device), gate, old_prompt)):
        # The device is busy, so the two members' compatible jobs wait and batch together.
        busy = await fake_discord.invoke_command("imagine", {"prompt": "a dog", "steps": 3})
        await busy.wait_for_ack()
        handles = {}
        for member, prompt in ((MEMBER_A, old_prompt), (MEMBER_B, "a cat")):
            handles[member] = await fake_discord.invoke_command(
                "imagine", {"prompt": prompt, **QUICK}, user=member
            )
            queued = await handles[member].wait_for_original(lambda m: "Queued" in m.content)
            assert not queued.is_ephemeral
        # Checked at submit, gone at render: member A's prompt now fails inside the batch.
        wildcard.unlink()
        gate.set()
        result = await handles[MEMBER_B].wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert "animal" not in result.content
        failed = await handles[MEMBER_A].wait_for_original(
            lambda m: "❌" in m.content, timeout=RENDER_TIMEOUT_S
        )
        # Escaped as a prompt is (Discord shows `__animal__`, not an underlined "animal").
        assert "unknown wildcard \\_\\_animal\\_\\_" in failed.content
        assert not has_picture(failed)
        await busy.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)


async def test_explain_of_a_heavy_legal_prompt_does_not_stall_the_bot(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    # 3,900 characters of {a|b} choices: about a second of dynamicprompts parsing.
    heavy = "{a|b}{c|d}" * 390
    stalls: list[float] = []

    async def tick() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            stalls.append(time.perf_counter() - before)

    async with start_easel():
        # Easel's code on the loop is measured, not the garbage collector: late in a full run
        # the first tick once took 0.5 s (alone it takes 0.02 s), likely a collection of the
        # suite's whole heap.
        gc.collect()
        gc.disable()
        ticker = asyncio.create_task(tick())
        try:
            reply = await reply_to(fake_discord, "explain", {"prompt": heavy, "steps": 150})
        finally:
            ticker.cancel()
            gc.enable()
        assert reply.is_ephemeral and "```json" in reply.content
        # Parsed on the loop, the second of parsing would be one stall of a second or more and
        # a handful of ticks; off it, the loop ticks on through the parse.
        assert len(stalls) >= 20
        assert max(stalls) < 0.5, f"the event loop stalled {max(stalls):.2f} s"
