"""The "Use as control" message menu: the picture of a message the member may read becomes the
ControlNet picture of an /imagine job charged to them; a modal asks for the prompt (inline flags
work), the control type and its weight."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.requests import MAX_PROMPT_CHARS, ImagineOptions, RequestError
from cogs.common import requests_for_member, services_of, submit_from_interaction
from cogs.control import with_control_picture
from cogs.edit import SavedInputs
from cogs.forms import ReportingModal
from cogs.info import picture_of
from cogs.results.story import check_posted_picture
from cogs.visibility import check_enabled_here, check_member_may_use
from inference.control_units import CONTROL_TYPES, MAX_CONTROL_WEIGHT

MENU_NAME = "Use as control"
DEFAULT_CONTROL_TYPE = "canny"


class ControlMenuCog(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self._bot = bot
        self._menu = app_commands.ContextMenu(name=MENU_NAME, callback=self.use_as_control)

    async def cog_load(self) -> None:
        self._bot.tree.add_command(self._menu)

    async def cog_unload(self) -> None:
        self._bot.tree.remove_command(self._menu.name, type=self._menu.type)

    async def use_as_control(
        self, interaction: discord.Interaction[Any], message: discord.Message
    ) -> None:
        # Where Easel works, and the same reading rules as the other menus, before the modal
        # opens (and again when it is submitted: the picture is read then, the job admitted).
        await check_enabled_here(interaction)
        await check_member_may_use(interaction, message)
        picture = picture_of(message, MENU_NAME)  # a message without a picture opens no form
        await check_posted_picture(interaction, message, picture.filename)
        await interaction.response.send_modal(ControlModal(message))


def control_weight(text: str) -> float:
    """The modal's weight field: empty means 1."""
    if not text.strip():
        return 1.0
    try:
        return float(text.strip())
    except ValueError:
        raise RequestError(
            f"control weight must be a number between 0 and {MAX_CONTROL_WEIGHT:g}, not {text!r}"
        ) from None


class ControlModal(ReportingModal):
    def __init__(self, message: discord.Message) -> None:
        super().__init__("control", title=MENU_NAME)
        self.message = message
        self.prompt = discord.ui.TextInput[ControlModal](
            label="Prompt (inline flags such as --ar work)",
            style=discord.TextStyle.paragraph,
            max_length=MAX_PROMPT_CHARS,
        )
        self.control_type = discord.ui.TextInput[ControlModal](
            label="Control type",
            placeholder=", ".join(CONTROL_TYPES),
            default=DEFAULT_CONTROL_TYPE,
            max_length=16,
        )
        self.weight = discord.ui.TextInput[ControlModal](
            label=f"Control weight (0 to {MAX_CONTROL_WEIGHT:g})",
            default="1",
            required=False,
            max_length=8,
        )
        for field in (self.prompt, self.control_type, self.weight):
            self.add_item(field)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        """An /imagine of the prompt with the picture as its control, for the submitter, if
        they may still read it (the form may have been open for 15 minutes)."""
        await check_member_may_use(interaction, self.message)
        picture = picture_of(self.message, MENU_NAME)
        posted = await check_posted_picture(interaction, self.message, picture.filename)
        services = services_of(interaction)
        weight = control_weight(self.weight.value)
        asked = await requests_for_member(interaction, ImagineOptions(prompt=self.prompt.value))
        request, *repeats = asked.requests
        async with SavedInputs(interaction) as inputs:
            # Made from the picture: withdrawn with it (a moderator deleting its post).
            inputs.made_from = posted[0].job_id if posted is not None else None
            request = await with_control_picture(
                request,
                inputs,
                services,
                picture,
                self.control_type.value.strip().lower(),
                weight,
                0.0,
                1.0,
            )
            await submit_from_interaction(
                interaction,
                "imagine",
                request,
                private=asked.private,
                saved=asked.saved,
                repeat_seeds=[repeat.seed for repeat in repeats],
                before_queueing=inputs.saved_later,  # read once acknowledged; the parent
                on_journaled=inputs.keep,
            )
