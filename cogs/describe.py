"""``/describe``: four prompt suggestions for a picture (a local captioning model), with a
button under each that runs ``/imagine`` with it for whoever clicks.

The buttons read their prompt from the message they are on (the bot's own words), so they
keep working after a restart without storing anything.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Self

import discord
from discord import app_commands
from discord.ext import commands

from bot.images import check_engine_sides, check_upload_size
from bot.requests import ImagineOptions
from bot.user_errors import UserError
from cogs.common import (
    defer_thinking,
    requests_for_member,
    services_of,
    submit_from_interaction,
)
from cogs.errors import report_error
from cogs.info import read_attachment
from cogs.visibility import check_enabled_here, check_member_may_act_here
from inference.describe import MAX_WAITING, Captioner
from inference.model_thread import AlreadyInLine, LineFull
from inference.types import RenderFailed

_SUGGESTION = re.compile(r"\*\*(?P<number>[1-9])\.\*\* (?P<prompt>.+)")
_MARKDOWN_ESCAPE = re.compile(r"\\(.)")


def suggestions_message(captions: list[str]) -> str:
    lines = [
        f"**{number}.** {discord.utils.escape_markdown(caption, ignore_links=False)}"
        for number, caption in enumerate(captions, start=1)
    ]
    return "Prompts for this picture; a button runs `/imagine` with one:\n" + "\n".join(lines)


def suggestion_in(content: str, number: int) -> str | None:
    """Suggestion ``number`` of a /describe message, as the captioner wrote it."""
    for line in content.splitlines():
        match = _SUGGESTION.fullmatch(line)
        if match and int(match["number"]) == number:
            return _MARKDOWN_ESCAPE.sub(r"\1", match["prompt"])
    return None


class ImagineSuggestionButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=r"easel:describe:(?P<number>[1-9])",
):
    """A number under /describe's suggestions: /imagine that prompt, charged to the clicker."""

    def __init__(self, number: int) -> None:
        super().__init__(
            discord.ui.Button(
                label=str(number),
                style=discord.ButtonStyle.secondary,
                custom_id=f"easel:describe:{number}",
            )
        )
        self.number = number

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: Any
    ) -> Self:
        return cls(int(match["number"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            message = interaction.message
            prompt = None if message is None else suggestion_in(message.content, self.number)
            if prompt is None:
                raise UserError("That suggestion is gone; run /describe again.")
            # Read as /imagine reads a prompt (its flags, a preset, the clicker's /settings),
            # off the loop; one picture set, as the button promises.
            asked = await requests_for_member(interaction, ImagineOptions(prompt=prompt))
            if len(asked.requests) > 1:
                raise UserError("A suggestion runs one /imagine; leave out --repeat.")
            await submit_from_interaction(
                interaction,
                "imagine",
                asked.requests[0],
                private=asked.private,
                saved=asked.saved,
            )
        except Exception as error:
            await report_error(interaction, error, "describe suggestion")


class DescribeCog(commands.Cog):
    def __init__(self, captioner_dir: Path | None) -> None:
        self._captioner = None if captioner_dir is None else Captioner(captioner_dir)

    async def cog_unload(self) -> None:
        if self._captioner is not None:
            self._captioner.close()

    @app_commands.command(name="describe", description="Prompt suggestions for a picture")
    @app_commands.describe(image="A PNG, JPEG or WebP picture")
    async def describe(
        self, interaction: discord.Interaction[Any], image: discord.Attachment
    ) -> None:
        if self._captioner is None:
            raise UserError(
                "/describe is not set up on this bot: its operator sets EASEL_CAPTIONER_DIR "
                "to a captioning model folder."
            )
        services = services_of(interaction)
        await check_enabled_here(interaction)
        member = interaction.user.id
        personal = await services.member_settings.get(member)
        # The suggestions are text: posted for everyone, they need Send Messages there.
        check_member_may_act_here(interaction, private=personal.private_results, text_only=True)
        # Describing is free: each member has one place in the captioner's line, taken before
        # the download (up to 10 MB), so a flood downloads once.
        try:
            with self._captioner.thread.place(member):
                check_upload_size(image.filename, image.size)  # as Discord reports it
                # Answered before the download and decode, which may take past Discord's 3 s.
                await defer_thinking(interaction, private=personal.private_results)
                checked = await read_attachment(interaction, image)
                # The sides a job's input may have: the captioner reads pictures as jobs do.
                check_engine_sides(checked, image.filename)
                captions = await self._captioner.describe(checked.data)
        except AlreadyInLine:
            raise UserError(
                "Your last picture is still being described; /describe the next one when its "
                "suggestions are in."
            ) from None
        except LineFull:
            raise UserError(
                f"More than {MAX_WAITING} pictures are waiting to be described; try again in a "
                "minute."
            ) from None
        except RenderFailed as error:
            raise UserError(f"Not described: {error}.") from None
        view = discord.ui.View(timeout=None)
        for number in range(1, len(captions) + 1):
            view.add_item(ImagineSuggestionButton(number))
        await interaction.followup.send(suggestions_message(captions), view=view)
