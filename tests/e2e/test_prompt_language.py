"""The web UI's prompt language through the real path: weights, wildcards, editing, --ar."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from bot.app import EaselBot
from bot.settings import Settings
from inference.infotext import infotext_from_png, parse_infotext
from tests.e2e.helpers import has_picture
from tests.fake_discord import FakeDiscord


@pytest.fixture
def animal_wildcards(easel_settings_for_test: Settings) -> None:
    wildcards = Path(easel_settings_for_test.wildcards_dir)
    wildcards.mkdir(parents=True)
    (wildcards / "animal.txt").write_text("cat\ndog\nfox\n")


async def test_weights_wildcards_editing_and_aspect_flag_render(
    fake_discord: FakeDiscord,
    start_easel: Callable[[], AbstractAsyncContextManager[EaselBot]],
    animal_wildcards: None,
) -> None:
    template = "a (red:1.2) [__animal__:bird:2] on {a hill|the sea} --ar 2:1 --seed 77"
    async with start_easel():
        handle = await fake_discord.invoke_command("imagine", {"prompt": template, "steps": 4})
        first = await handle.wait_for_original(has_picture, timeout=90)
        again = await fake_discord.invoke_command("imagine", {"prompt": template, "steps": 4})
        second = await again.wait_for_original(has_picture, timeout=90)

    infotext = infotext_from_png(first.attachments[0].data)
    assert infotext is not None
    prompt, _negative, params = parse_infotext(infotext)
    assert params["Seed"] == 77
    assert params["Size"] == "88x64"  # 2:1 on the tiny model's 64 px native square
    assert "__animal__" not in prompt and "{" not in prompt  # the expanded prompt...
    assert prompt.startswith("a (red:1.2) [") and ":bird:2]" in prompt
    assert params["Template"] == template.removesuffix(" --ar 2:1 --seed 77")  # ...and its template
    # Same seed, same template: the same expansion and the same pixels.
    assert second.attachments[0].data == first.attachments[0].data
