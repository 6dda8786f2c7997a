"""The web UI's prompt language through the real path: weights, wildcards, editing, --ar."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from bot.app import EaselBot
from bot.settings import Settings
from inference.infotext import infotext_from_png, parse_infotext
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, has_picture, images_today
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


async def test_half_a_surrogate_pair_renders_and_values_the_engine_refuses_are_refused_free(
    fake_discord: FakeDiscord, start_easel: Callable[[], AbstractAsyncContextManager[EaselBot]]
) -> None:
    async with start_easel() as bot:
        # Sent as the JSON escape "\ud800": orjson refused the event and the bot's connection
        # ended (without it, "Something went wrong"); it is read as U+FFFD.
        # With Discord's animated emoji <a:name:id>: ignored with a warning, as any unknown tag.
        emoji = "<a:party_parrot:123456789012345678>"
        handle = await fake_discord.invoke_command(
            "imagine", {"prompt": f"a \ud800 cat {emoji}", **QUICK}
        )
        rendered = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        charged = await images_today(bot.services, fake_discord.user_id, fake_discord.guild_id)
        # A weight past -100..100 made a black picture, charged; the engine refused
        # --restore-faces with no restorer installed only after the queue, in the channel,
        # naming the operator's folders.
        for options, refusal in [
            ({"prompt": "(a:1000) cat"}, "a weight must be a number between -100 and 100"),
            ({"prompt": "a cat --restore-faces"}, "needs a face restorer, and none is installed"),
        ]:
            handle = await fake_discord.invoke_command("imagine", {**options, **QUICK})
            refused = await handle.wait_for_answer()
            assert refused.is_ephemeral and refusal in refused.content, refused.content
            assert "models/" not in refused.content
        after = await images_today(bot.services, fake_discord.user_id, fake_discord.guild_id)
        assert after == charged == 1
        assert bot.queue.queued_count() == 0

    infotext = infotext_from_png(rendered.attachments[0].data)
    assert infotext is not None
    prompt, _, params = parse_infotext(infotext)
    assert prompt == "a \ufffd cat <a:party_parrot:123456789012345678>"
    assert params["Prompt warnings"] == "<a:party_parrot> ignored: unknown extra network 'a'"


async def test_an_unknown_wildcard_names_the_ones_there_are_not_the_operators_folder(
    fake_discord: FakeDiscord,
    start_easel: Callable[[], AbstractAsyncContextManager[EaselBot]],
    animal_wildcards: None,
) -> None:
    """A member reads which wildcard is unknown and which exist; the file an operator could
    add is the log's. Refused before anything is queued or charged."""
    async with start_easel() as bot:
        handle = await fake_discord.invoke_command("imagine", {"prompt": "a __animl__", **QUICK})
        refused = await handle.wait_for_answer()
        assert refused.is_ephemeral and refused.content == (
            "There is no wildcard `__animl__`; did you mean `__animal__`? "
            "Wildcards here: `__animal__`. Fix the prompt and try again."
        ), refused.content
        assert bot.queue.queued_count() == 0
        assert await images_today(bot.services, fake_discord.user_id, fake_discord.guild_id) == 0
