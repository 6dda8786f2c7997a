"""Each Discord rule the fake enforces is both answered like Discord and recorded."""

from __future__ import annotations

from typing import Any

import aiohttp
import discord
import pytest

from tests.fake_discord import FakeDiscord, Violation
from tests.fake_discord.payloads import Json
from tests.fake_discord.rules import (
    autocomplete_problems,
    command_list_problems,
    message_problems,
    text_input_problems,
)
from tests.fake_discord_selftest.studio import OVERLONG_CUSTOM_ID, StudioBot


def kinds(violations: list[str]) -> list[str]:
    return [v.split(":", 1)[0] for v in violations]


async def test_a_first_response_after_three_seconds_is_an_unknown_interaction(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    handle = await fake_discord.invoke_command("slow")
    fake_discord.advance_time(3.2)  # the bot answers 3.2 s after the interaction
    studio_bot.release_slow.set()

    error = await studio_bot.wait_for_outcome("slow")

    assert isinstance(error, discord.NotFound) and error.code == 10062
    assert handle.error_codes == [10062]
    assert handle.acknowledged_at is None
    assert kinds(fake_discord.take_violations()) == [Violation.LATE_ACK]


async def test_a_second_initial_response_is_already_acknowledged(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    handle = await fake_discord.invoke_command("twice")

    error = await studio_bot.wait_for_outcome("twice")

    assert isinstance(error, discord.HTTPException) and error.code == 40060
    assert (await handle.wait_for_original()).content == "first follow-up"
    assert kinds(fake_discord.take_violations()) == [Violation.DOUBLE_ACK]


async def test_an_interaction_token_expires_after_fifteen_minutes(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    handle = await fake_discord.invoke_command("deferred_edit")
    await handle.wait_for_ack()
    fake_discord.advance_time(15 * 60 + 1)
    studio_bot.release_slow.set()

    error = await studio_bot.wait_for_outcome("deferred_edit")

    assert isinstance(error, discord.HTTPException)
    assert (error.status, error.code) == (401, 50027)
    assert kinds(fake_discord.take_violations()) == [Violation.EXPIRED_TOKEN]


async def test_an_overlong_custom_id_is_rejected(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    handle = await fake_discord.invoke_command("badview")

    error = await studio_bot.wait_for_outcome("badview")

    assert isinstance(error, discord.HTTPException) and error.code == 50035
    assert handle.original is None
    [violation] = fake_discord.take_violations()
    assert violation.startswith(Violation.INVALID_MESSAGE)
    assert f"is {len(OVERLONG_CUSTOM_ID)} characters" in violation


async def test_a_file_over_the_interactions_limit_is_413(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    handle = await fake_discord.invoke_command(
        "bigfile", {"size": 2048}, attachment_size_limit=1024
    )

    error = await studio_bot.wait_for_outcome("bigfile")

    assert isinstance(error, discord.HTTPException)
    assert (error.status, error.code) == (413, 40005)
    assert handle.error_codes == [40005]
    assert kinds(fake_discord.take_violations()) == [Violation.FILE_TOO_LARGE]


async def test_a_file_within_the_limit_is_accepted(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    handle = await fake_discord.invoke_command(
        "bigfile", {"size": 1024}, attachment_size_limit=1024
    )
    assert await studio_bot.wait_for_outcome("bigfile") == "sent"
    [blob] = (await handle.wait_for_original()).attachments
    assert blob.size == 1024


async def test_more_than_25_autocomplete_choices_are_rejected(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    studio_bot.autocomplete_choice_count = 30
    with pytest.raises(TimeoutError):
        await fake_discord.autocomplete("pick", {"model": "x"}, focused="model", timeout=0.5)
    assert kinds(fake_discord.take_violations()) == [Violation.INVALID_AUTOCOMPLETE]


def test_a_choice_value_over_100_characters_fails_the_whole_list() -> None:
    fits = {"name": "fits", "value": "v" * 100}
    assert autocomplete_problems({"choices": [fits]}) == []
    too_long = {"name": "short name", "value": "v" * 101}
    assert autocomplete_problems({"choices": [fits, too_long]}) == [
        f"choice value {'v' * 30!r} is 101 characters; Discord accepts 1 to 100"
    ]


def test_an_attachment_description_over_1024_characters_is_refused() -> None:
    fits = {"id": 0, "filename": "a.png", "description": "d" * 1024}
    assert message_problems({"attachments": [fits]}) == []
    too_long = {"id": 1, "filename": "b.png", "description": "d" * 1025}
    assert message_problems({"attachments": [fits, too_long]}) == [
        "attachment 'b.png''s description is 1025 characters; Discord accepts at most 1024"
    ]


def button(custom_id: str) -> dict[str, Any]:
    return {"type": 2, "style": 1, "label": custom_id, "custom_id": custom_id}


def row(*custom_ids: str) -> dict[str, Any]:
    return {"type": 1, "components": [button(c) for c in custom_ids]}


def select_row(placeholder: str = "p", label: str = "l") -> dict[str, Any]:
    option = {"label": label, "value": "v", "description": "d"}
    select = {"type": 3, "custom_id": "s", "placeholder": placeholder, "options": [option]}
    return {"type": 1, "components": [select]}


def link_row(url: str) -> dict[str, Any]:
    return {"type": 1, "components": [{"type": 2, "style": 5, "label": "x", "url": url}]}


def embed(size: int = 0, **texts: Any) -> dict[str, Any]:
    """An embed whose every text is ``size`` long unless given."""
    return {
        "title": "t" * size or "t",
        "description": "d",
        "fields": [{"name": "n", "value": "v"}],
        "footer": {"text": "f"},
        "author": {"name": "a"},
        **texts,
    }


async def post_to_channel(fake: FakeDiscord, body: dict[str, Any]) -> tuple[int, Json]:
    url = f"{fake.api_base}/channels/{fake.channel_id}/messages"
    headers = {"Authorization": f"Bot {fake.token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"content": "x" * 2001}, "content is 2001 characters"),
        ({"components": [row(f"r{i}") for i in range(6)]}, "6 action rows"),
        ({"components": [row(*(f"b{i}" for i in range(6)))]}, "holds 6 buttons"),
        ({"components": [row("same"), row("same")]}, "repeated: ['same']"),
        ({"embeds": [{"title": "t"}] * 11}, "11 embeds"),
        ({"embeds": [embed(title="t" * 257)]}, "title is 257 characters"),
        ({"embeds": [embed(description="d" * 4097)]}, "description is 4097 characters"),
        ({"embeds": [embed(fields=[{"name": "n" * 257, "value": "v"}])]}, "field name is 257"),
        ({"embeds": [embed(fields=[{"name": "n", "value": "v" * 1025}])]}, "field value is 1025"),
        ({"embeds": [embed(footer={"text": "f" * 2049})]}, "footer text is 2049 characters"),
        ({"embeds": [embed(author={"name": "a" * 257})]}, "author name is 257 characters"),
        ({"components": [select_row(label="l" * 101)]}, "option label 'lll"),
        ({"components": [select_row(placeholder="p" * 151)]}, "placeholder is 151 characters"),
        ({"components": [link_row("https://e.x/" + "u" * 501)]}, "url 'https://e.x/uuu"),
    ],
)
async def test_invalid_channel_messages_are_rejected(
    fake_discord: FakeDiscord, body: dict[str, Any], problem: str
) -> None:
    status, answer = await post_to_channel(fake_discord, body)

    assert (status, answer["code"]) == (400, 50035)
    [violation] = fake_discord.take_violations()
    assert violation.startswith(Violation.INVALID_MESSAGE) and problem in violation
    assert not fake_discord.messages


async def test_unknown_routes_and_missing_auth_are_violations(fake_discord: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{fake_discord.api_base}/guilds/1/nothing-here") as response:
            assert response.status == 404
        async with session.get(f"{fake_discord.api_base}/users/@me") as response:
            assert response.status == 401
    assert kinds(fake_discord.take_violations()) == [
        Violation.UNKNOWN_ROUTE,
        Violation.UNAUTHORIZED,
    ]
    assert [str(c) for c in fake_discord.calls] == [
        "GET /api/v10/guilds/1/nothing-here -> 404",
        "GET /api/v10/users/@me -> 401",
    ]


async def test_invoking_an_unregistered_command_names_the_registered_ones(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    with pytest.raises(LookupError, match="'render', 1"):
        await fake_discord.invoke_command("imagine", {"prompt": "x"})


async def test_option_values_are_checked_like_discords_client(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    with pytest.raises(ValueError, match=r"outside the accepted range \[0, 99\]"):
        await fake_discord.invoke_command("render", {"prompt": "x", "seed": 500})
    with pytest.raises(TypeError, match="takes an int"):
        await fake_discord.invoke_command("render", {"prompt": "x", "seed": "5"})
    with pytest.raises(ValueError, match="needs its required option 'prompt'"):
        await fake_discord.invoke_command("render", {})


@pytest.mark.parametrize(
    ("text_input", "problem"),
    [
        ({"label": "Prompt", "value": "x" * 4001, "max_length": 4000}, "value is 4001 characters"),
        ({"label": "Prompt", "value": "x" * 4001}, "value is 4001 characters"),
        ({"label": "Seed", "value": "1" * 21, "max_length": 20}, "value is 21 characters"),
        ({"label": "L" * 46, "value": ""}, "is 46 characters"),
        ({"label": "Prompt", "placeholder": "p" * 101}, "placeholder is 101 characters"),
        ({"label": "Prompt", "max_length": 4001}, "max_length is 4001"),
    ],
)
def test_a_text_input_over_discords_limits_is_refused(text_input: Json, problem: str) -> None:
    fitting = {
        "type": 4,
        "label": "Prompt",
        "value": "x" * 4000,
        "max_length": 4000,
        "placeholder": "p" * 100,
    }
    assert text_input_problems(fitting) == []
    (found,) = text_input_problems({"type": 4, **text_input})
    assert problem in found, found


async def test_a_message_at_discords_limits_is_accepted(fake_discord: FakeDiscord) -> None:
    """Each text exactly as long as Discord takes it (the six embed texts within 6,000)."""
    texts = {
        "title": "t" * 256,
        "description": "d" * 2000,
        "fields": [{"name": "n" * 256, "value": "v" * 1024}],
        "footer": {"text": "f" * 2000},
        "author": {"name": "a" * 256},
    }
    body = {
        "embeds": [embed(**texts)],
        "components": [
            select_row(placeholder="p" * 150, label="l" * 100),
            link_row("https://e.x/" + "u" * 500),
        ],
    }
    status, _ = await post_to_channel(fake_discord, body)
    assert status == 200
    assert not fake_discord.take_violations()


async def test_an_empty_new_message_is_50006(fake_discord: FakeDiscord) -> None:
    status, answer = await post_to_channel(fake_discord, {"content": ""})

    assert (status, answer["code"]) == (400, 50006)
    [violation] = fake_discord.take_violations()
    assert violation.startswith(Violation.INVALID_MESSAGE) and "needs content" in violation
    assert not fake_discord.messages
    status, _ = await post_to_channel(fake_discord, {"content": "", "embeds": [embed()]})
    assert status == 200


async def test_an_empty_interaction_reply_is_50006(
    fake_discord: FakeDiscord, studio_bot: StudioBot
) -> None:
    handle = await fake_discord.invoke_command("silent")

    error = await studio_bot.wait_for_outcome("silent")

    assert isinstance(error, discord.HTTPException) and error.code == 50006
    assert handle.original is None
    assert kinds(fake_discord.take_violations()) == [Violation.INVALID_MESSAGE]


def test_command_options_over_discords_limits_are_refused() -> None:
    def command(description: str = "d", choice: str = "c") -> Json:
        option = {"type": 3, "name": "o", "description": description}
        option["choices"] = [{"name": choice, "value": "v"}]
        subcommand = {"type": 1, "name": "sub", "description": "s", "options": [option]}
        return {"name": "x", "description": "d", "options": [subcommand]}

    assert command_list_problems([command("d" * 100, "c" * 100)]) == []
    assert command_list_problems([command(description="d" * 101)]) == [
        "/x sub o: description is 101 characters; Discord accepts 1 to 100"
    ]
    assert command_list_problems([command(choice="c" * 101)]) == [
        f"/x sub o: choice name {'c' * 30!r} is 101 characters; Discord accepts 1 to 100"
    ]
