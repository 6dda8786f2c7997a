"""/imagine parses the inline flags of its prompt once, on a worker thread: the preset's
name, the request and the style reference read that one parse (it used to be three, two of
them on the event loop before the defer)."""

from __future__ import annotations

import asyncio

import pytest

import bot.requests as requests_module
from inference.infotext import infotext_from_png, parse_infotext
from inference.prompts import InlineFlags
from tests.e2e.helpers import StartEasel, imagine, reply_to
from tests.fake_discord import FakeDiscord


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def test_imagine_parses_its_flags_once_off_the_event_loop(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    parses: list[tuple[str, bool]] = []
    parse = requests_module.parse_inline_flags

    def counted(prompt: str) -> tuple[str, InlineFlags]:
        parses.append((prompt, _on_event_loop()))
        return parse(prompt)

    monkeypatch.setattr(requests_module, "parse_inline_flags", counted)
    async with start_easel():
        saved = await reply_to(fake_discord, "presets save", {"name": "quick", "cfg": 4.0})
        assert "Saved your preset **quick**" in saved.content
        flagged = {
            "a fox --seed 5 --no blur": {"Seed": 5},
            "a fox --seed 6 --preset quick": {"Seed": 6, "CFG scale": 4.0},
        }
        for prompt, expected in flagged.items():
            parses.clear()
            result = await imagine(fake_discord, prompt)
            infotext = infotext_from_png(result.attachments[0].data)
            assert infotext is not None
            params = parse_infotext(infotext)[2]
            assert {key: params[key] for key in expected} == expected
            assert parses == [(prompt, False)]
