"""/imagine end to end: fake Discord → discord.py → cog → journal → worker → tiny model → PNG."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from bot.app import EaselBot
from inference.infotext import infotext_from_png, parse_infotext
from tests.e2e.helpers import RENDER_TIMEOUT_S, has_picture
from tests.fake_discord import FakeDiscord, StoredMessage


def reroll_id(message: StoredMessage) -> str:
    [custom_id] = [c for c in message.custom_ids if c.startswith("easel:reroll:")]
    return custom_id


def parameters_of(message: StoredMessage) -> tuple[str, dict[str, object]]:
    [picture] = message.attachments
    assert picture.content_type == "image/png"
    infotext = infotext_from_png(picture.data)
    assert infotext is not None, "the PNG carries no parameters chunk"
    prompt, _negative, params = parse_infotext(infotext)
    return prompt, dict(params)


async def test_imagine_reroll_and_reroll_after_restart(
    fake_discord: FakeDiscord,
    start_easel: Callable[[], AbstractAsyncContextManager[EaselBot]],
) -> None:
    async with start_easel():
        commands = {c["name"] for c in fake_discord.registered_commands(guild=True)}
        assert "imagine" in commands
        handle = await fake_discord.invoke_command(
            "imagine", {"prompt": "a (red:1.2) cat", "seed": 1234, "steps": 3, "size": "64x64"}
        )
        first = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert handle.response_type == 5  # deferred within the 3 s window
        assert handle.ack_latency is not None and handle.ack_latency < 3.0
        prompt, params = parameters_of(first)
        assert prompt == "a (red:1.2) cat"
        assert params["Seed"] == 1234 and params["Steps"] == 3
        assert params["Size"] == "64x64" and params["Sampler"] == "Euler a"
        assert params["Model"] == "tiny" and len(str(params["Model hash"])) == 10
        assert "1234" in first.content

        click = await fake_discord.click(first, reroll_id(first))
        second = await click.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert second.id != first.id
        second_prompt, second_params = parameters_of(second)
        assert second_prompt == prompt and second_params["Steps"] == 3
        assert second_params["Seed"] != 1234
        assert second.attachments[0].data != first.attachments[0].data

    async with start_easel():  # a restart: the old message's button must still work
        click = await fake_discord.click(first, reroll_id(first))
        third = await click.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        third_prompt, third_params = parameters_of(third)
        assert third_prompt == prompt and third_params["Size"] == "64x64"


async def test_fast_flag_renders_a_picture_that_records_fast_mode(
    fake_discord: FakeDiscord,
    start_easel: Callable[[], AbstractAsyncContextManager[EaselBot]],
) -> None:
    options = {"seed": 21, "steps": 6, "size": "64x64"}
    async with start_easel():
        fast = await fake_discord.invoke_command("imagine", {"prompt": "a cat --fast", **options})
        fast_message = await fast.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        plain = await fake_discord.invoke_command("imagine", {"prompt": "a cat", **options})
        plain_message = await plain.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    prompt, params = parameters_of(fast_message)
    assert prompt == "a cat" and params["Fast"] == "DeepCache 3"
    assert params["Seed"] == 21 and params["Steps"] == 6
    _prompt, plain_params = parameters_of(plain_message)
    assert "Fast" not in plain_params  # never a default
    assert fast_message.attachments[0].data != plain_message.attachments[0].data


async def test_bad_option_is_refused_ephemerally_and_nothing_is_queued(
    fake_discord: FakeDiscord,
    start_easel: Callable[[], AbstractAsyncContextManager[EaselBot]],
) -> None:
    async with start_easel() as bot:
        handle = await fake_discord.invoke_command("imagine", {"prompt": "a cat", "size": "13x7"})
        reply = await handle.wait_for_original()
        assert reply.is_ephemeral
        assert "Size '13x7'" in reply.content and "multiple of 8" in reply.content
        assert bot.queue.queued_count() == 0
