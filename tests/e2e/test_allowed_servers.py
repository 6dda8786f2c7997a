"""EASEL_ALLOWED_SERVERS: the operator's list of the servers Easel serves. A server left out
gets one answer to everything (commands, clicks, message menus; no autocomplete choices) and
nothing is queued there; a server that adds Easel while it runs is left at once; one it is in
at READY is named and refused, never left. With no list, a public application is named at
the start. Two servers on the fake Discord."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from bot.app import build
from bot.settings import Settings
from cogs.contexts import NOT_ENABLED_HERE
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, images_today
from tests.fake_discord import FakeDiscord
from tests.fake_discord.fixtures import running_bot
from tests.support.pictures import has_picture

B_MEMBER = 7101
WAIT_S = 30.0
LEAVE = ("DELETE", "/users/@me/guilds/{guild}")
PUBLIC = "the Discord application is public"


@pytest.fixture
def easel_settings_for_test(easel_settings_for_test: Settings) -> Settings:
    # Registered globally: commands synced to one server would exist there only.
    return easel_settings_for_test.model_copy(update={"dev_guild_id": None})


def serving(settings: Settings, *guild_ids: int) -> Settings:
    return settings.model_copy(update={"allowed_servers": frozenset(guild_ids)})


async def logged(caplog: pytest.LogCaptureFixture, matches: Callable[[str], bool]) -> str:
    """The first WARNING ``matches``, once it is logged (listeners run as tasks)."""
    async with asyncio.timeout(WAIT_S):
        while True:
            for record in caplog.records:
                if record.levelno == logging.WARNING and matches(message := record.getMessage()):
                    return message
            await asyncio.sleep(0.05)


async def test_a_server_left_out_is_refused_everything_and_nothing_is_queued(
    fake_discord: FakeDiscord,
    easel_settings_for_test: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Server B's member made a picture before the operator listed only server A. After the
    restart, B's /imagine, a button and a message menu on that picture are answered that Easel
    is not enabled there, B's autocomplete offers nothing, nothing is queued or charged; A is
    served as before. Easel stays in B (named at READY), because a typo in the list must not
    take it out of every server. /forget-me alone is served in B."""
    fake = fake_discord
    other = fake.add_guild("Server B")
    fake.add_member(B_MEMBER, "b-member", roles=(other.member_role_id,), guild=other.guild_id)
    async with running_bot(fake, build(easel_settings_for_test)):
        made = await fake.invoke_command(
            "imagine", {"prompt": "b's barn", **QUICK}, user=B_MEMBER, channel=other.channel_id
        )
        picture = await made.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)

    caplog.set_level(logging.WARNING, logger="cogs.servers")
    async with running_bot(fake, build(serving(easel_settings_for_test, fake.guild_id))) as bot:
        named = await logged(caplog, lambda message: str(other.guild_id) in message)
        assert "not in EASEL_ALLOWED_SERVERS" in named, named
        refusals = [
            await fake.invoke_command(
                "imagine", {"prompt": "again", **QUICK}, user=B_MEMBER, channel=other.channel_id
            ),
            await fake.click(picture, label="Vary (Subtle)", user=B_MEMBER),
            await fake.invoke_message_command("Upscale", picture, user=B_MEMBER),
        ]
        for handle in refusals:
            answer = await handle.wait_for_original(timeout=WAIT_S)
            assert answer.content == NOT_ENABLED_HERE, handle.describe()
            assert answer.is_ephemeral
        offered_b = await fake.autocomplete(
            "imagine",
            {"prompt": "a", "model": ""},
            "model",
            user=B_MEMBER,
            channel=other.channel_id,
        )
        assert offered_b == []
        offered_a = await fake.autocomplete("imagine", {"prompt": "a", "model": ""}, "model")
        assert offered_a != []

        # Server A is served: its render is the next job, B's three refusals queued none.
        served = await fake.invoke_command("imagine", {"prompt": "a's barn", **QUICK})
        await served.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        history = bot.services.history
        assert await history.unfinished(B_MEMBER, guild_id=other.guild_id) == []
        assert await images_today(bot.services, B_MEMBER, other.guild_id) == 1
        assert bot.get_guild(other.guild_id) is not None

        # /forget-me alone is served there: B's member shares no listed server with Easel and
        # DMs are off, so it is their one way to erase what Easel keeps of them.
        forget = await fake.invoke_command("forget-me", user=B_MEMBER, channel=other.channel_id)
        erased = await forget.wait_for_original(lambda m: m.content.startswith("Done"))
        assert "erased 1 job" in erased.content, erased.content
    assert fake.calls_to(*LEAVE) == []


async def test_a_server_that_adds_easel_while_it_runs_is_left(
    fake_discord: FakeDiscord,
    easel_settings_for_test: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = fake_discord
    caplog.set_level(logging.WARNING, logger="cogs.servers")
    async with running_bot(fake, build(serving(easel_settings_for_test, fake.guild_id))) as bot:
        uninvited = await fake.add_bot("Uninvited")
        warned = await logged(caplog, lambda message: str(uninvited.guild_id) in message)
        assert "not in EASEL_ALLOWED_SERVERS: leaving it" in warned, warned
        async with asyncio.timeout(WAIT_S):
            while bot.get_guild(uninvited.guild_id) is not None:  # noqa: ASYNC110 (the cache's)
                await asyncio.sleep(0.05)
        [leave] = fake.calls_to(*LEAVE)
        assert (leave.path.rsplit("/", 1)[1], leave.status) == (str(uninvited.guild_id), 204)
        assert bot.get_guild(fake.guild_id) is not None


@pytest.mark.parametrize(
    ("public", "listed", "warned"),
    [(True, False, True), (False, False, False), (True, True, False)],
    ids=["public-unlisted", "private", "public-listed"],
)
async def test_a_public_application_with_no_server_list_is_named_at_the_start(
    fake_discord: FakeDiscord,
    easel_settings_for_test: Settings,
    caplog: pytest.LogCaptureFixture,
    public: bool,
    listed: bool,
    warned: bool,
) -> None:
    fake_discord.set_bot_public(public)
    settings = easel_settings_for_test
    if listed:
        settings = serving(settings, fake_discord.guild_id)
    caplog.set_level(logging.WARNING, logger="cogs.servers")
    async with running_bot(fake_discord, build(settings)):
        pass
    warnings = [r.getMessage() for r in caplog.records if PUBLIC in r.getMessage()]
    if warned:
        assert len(warnings) == 1, warnings
        assert "turn off Public Bot" in warnings[0] and "EASEL_ALLOWED_SERVERS" in warnings[0]
    else:
        assert warnings == []
