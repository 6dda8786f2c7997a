"""An unmodified discord.py bot runs on the fake: commands, files, buttons, RESUME."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.fake_discord import FakeDiscord, StoredMessage
from tests.fake_discord.fixtures import running_bot
from tests.fake_discord_selftest.studio import StudioBot, make_png


def has_attachment(message: StoredMessage) -> bool:
    return bool(message.attachments)


async def test_commands_are_synced_with_their_options(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    commands = {c["name"]: c for c in fake_discord.registered_commands()}
    assert {"render", "slow", "admin", "pick", "Describe"} <= set(commands)
    render_options = {o["name"]: o for o in commands["render"]["options"]}
    assert render_options["prompt"]["required"] is True
    assert render_options["seed"]["max_value"] == 99
    assert commands["Describe"]["type"] == 3


async def test_deferred_render_delivers_the_png_and_its_button_works(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    handle = await fake_discord.invoke_command("render", {"prompt": "a cat", "seed": 7})

    result = await handle.wait_for_original(has_attachment)

    assert handle.response_type == 5
    assert handle.ack_latency is not None and handle.ack_latency < 3.0
    assert result.content == "done: a cat"
    assert not result.is_loading
    [picture] = result.attachments
    assert picture.data == make_png(8, 4)
    assert (picture.content_type, picture.width, picture.height) == ("image/png", 8, 4)
    async with aiohttp.ClientSession() as session, session.get(picture.url) as response:
        assert await response.read() == picture.data
    assert result.custom_ids == ["reroll:7"]

    click = await fake_discord.click(result, "reroll:7")
    reply = await click.wait_for_original()
    assert reply.content == "rerolled 8"
    assert reply.id != result.id


async def test_a_dropped_gateway_resumes_and_replays_the_missed_interaction(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    await fake_discord.drop_gateway_connection()
    # Dispatched while the bot is disconnected: it must arrive through the RESUME replay.
    handle = await fake_discord.invoke_command("admin config set", {"key": "steps", "value": "30"})
    await fake_discord.wait_for_resume()

    reply = await handle.wait_for_original()

    assert reply.content == "steps=30"
    assert fake_discord.gateway.identify_count == 1
    later = await fake_discord.invoke_command(
        "admin", {"key": "k", "value": "v"}, subcommand="config set"
    )
    assert (await later.wait_for_original()).content == "k=v"


async def test_a_reconnect_request_also_resumes(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    await fake_discord.request_reconnect()
    await fake_discord.wait_for_resume()
    handle = await fake_discord.invoke_command("pick", {"model": "sd15"})
    assert (await handle.wait_for_original()).content == "sd15"


async def test_an_uploaded_attachment_option_reaches_the_bot(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    png = make_png(16, 12)
    handle = await fake_discord.invoke_command("upscale", attachments={"image": ("in.png", png)})

    reply = await handle.wait_for_original()

    assert reply.content == f"in.png 16x12 {len(png)} bytes"
    assert reply.is_ephemeral


async def test_a_result_can_be_fed_back_as_an_input(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    first = await fake_discord.invoke_command("render", {"prompt": "a dog"})
    result = await first.wait_for_original(has_attachment)

    again = await fake_discord.invoke_command(
        "upscale", attachments={"image": result.attachments[0]}
    )

    assert (await again.wait_for_original()).content.startswith("result.png 8x4")


async def test_autocomplete_returns_the_bots_choices(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    choices = await fake_discord.autocomplete("pick", {"model": "sd"}, focused="model")
    assert [c["name"] for c in choices] == ["sd-model-0", "sd-model-1", "sd-model-2"]


async def test_message_context_menu_reads_a_users_image(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    png = make_png(4, 4)
    posted = await fake_discord.post_user_message("look", attachments=[("mine.png", png)])

    handle = await fake_discord.invoke_message_command("Describe", posted)

    assert (await handle.wait_for_original()).content == f"1 attachment(s), [{len(png)}] bytes"


async def test_the_bot_honours_an_injected_rate_limit(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    fake_discord.rate_limit("POST", "/channels/{channel}/messages", times=2, retry_after=0.1)
    channel = studio_bot.get_channel(fake_discord.channel_id)
    assert channel is not None and hasattr(channel, "send")

    await channel.send("hello")

    message = await fake_discord.wait_for_channel_message(lambda m: m.content == "hello")
    assert message.author_id == fake_discord.bot_user_id
    assert [r.waited for r in fake_discord.rate_limits] == [True, True]
    statuses = [c.status for c in fake_discord.calls_to("POST", "/channels/{channel}/messages")]
    assert statuses == [429, 429, 200]


async def test_the_gateway_compresses_and_acknowledges_heartbeats() -> None:
    async with FakeDiscord(heartbeat_interval_ms=20) as fake:
        bot = StudioBot()
        async with running_bot(fake, bot):
            beats_at_ready = fake.gateway.heartbeat_count
            await asyncio.sleep(0.2)
            assert fake.gateway.heartbeat_count >= beats_at_ready + 3
            assert bot.latency < 1.0  # discord.py measured our heartbeat ACKs
        assert fake.gateway.compressions == ["zlib-stream"]
        assert fake.violations == []


async def test_a_modal_is_shown_and_submitted(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    opened = await fake_discord.invoke_command("survey")
    modal = await opened.wait_for_modal()
    assert modal["title"] == "Your prompt"
    [text_input] = [c for row in modal["components"] for c in row["components"]]

    submitted = await fake_discord.submit_modal(opened, {text_input["custom_id"]: "a red fox"})

    assert (await submitted.wait_for_original()).content == "prompt was a red fox"


async def test_a_button_can_update_its_own_message(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    sent = await (await fake_discord.invoke_command("counter")).wait_for_original()

    click = await fake_discord.click(sent, label="+1")
    updated = await click.wait_for_original(lambda m: m.content == "count 1")

    assert click.response_type == 7
    assert updated.id == sent.id and updated.edit_count == 1
