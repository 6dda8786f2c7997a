"""/help's pages: each fits one Discord message, the overview names every slash command, and
the topic pages document every subcommand, /imagine option and inline flag."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from typing import get_args

from discord import app_commands
from discord.ext import commands

import cogs
from cogs.help_pages import HELP_OVERVIEW, HELP_PAGES, HelpTopic, help_page
from cogs.imagine import ImagineCog
from cogs.info import MESSAGE_LIMIT, InfoCog
from inference.prompts import KNOWN_FLAGS

HELP_TOPICS: tuple[str, ...] = get_args(HelpTopic)


def slash_commands() -> list[app_commands.Command[object, ..., object] | app_commands.Group]:
    """Every slash command (and command group) a cog in ``cogs`` declares."""
    found = []
    for module in pkgutil.walk_packages(cogs.__path__, "cogs."):
        for _, cog in inspect.getmembers(importlib.import_module(module.name), inspect.isclass):
            if issubclass(cog, commands.Cog) and cog.__module__ == module.name:
                found.extend(cog.__cog_app_commands__)
    return found


def test_every_page_fits_one_discord_message() -> None:
    for topic in (None, *HELP_TOPICS):
        page = help_page(topic)
        assert len(page) <= MESSAGE_LIMIT, f"/help {topic}: {len(page)} characters"


def test_the_topic_option_offers_every_page() -> None:
    [topic] = InfoCog.help.parameters
    assert not topic.required
    assert [choice.value for choice in topic.choices] == list(HELP_PAGES) == list(HELP_TOPICS)
    for name in HELP_TOPICS:
        assert name in HELP_OVERVIEW  # the overview says which topics there are


def test_every_command_is_named_and_every_part_of_one_documented() -> None:
    declared = slash_commands()
    assert len(declared) >= 20
    pages = "\n".join(HELP_PAGES.values())
    for command in declared:
        assert re.search(rf"`/{re.escape(command.name)}\b", HELP_OVERVIEW), command.name
        if isinstance(command, app_commands.Group):
            for sub in command.commands:
                assert f"`{sub.name}`" in pages, sub.qualified_name
    for option in ImagineCog.imagine.parameters:
        named = rf"`(/imagine )?{option.name}`"  # `/imagine prompt`, `negative`...
        assert re.search(named, HELP_PAGES["prompts"]), f"/imagine {option.name}"
    for flag in KNOWN_FLAGS:
        assert f"`{flag}" in HELP_PAGES["flags"], flag


def test_what_the_forget_me_question_says_stays_is_on_the_page_it_names() -> None:
    """The question a member reads before erasing claims no "no copy": it names what stays and
    sends them to a topic that exists and lists those."""
    from cogs.history import FORGET_ME_ASK

    [topic] = re.findall(r"`/help topic:(\w+)`", FORGET_ME_ASK)
    page = " ".join(HELP_PAGES[topic].split())
    assert "no copy" not in FORGET_ME_ASK
    for stays in ("a record that you asked", "others made from your public results"):
        assert stays in page, stays
