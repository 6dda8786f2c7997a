"""Read-only helpers: /info and the "Info" message menu (a PNG's parameters), /help (its pages
in ``cogs.help_pages``), /explain."""

from __future__ import annotations

import io
import json
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.images import CheckedImage, check_upload_size
from bot.infotext_import import MAX_INFOTEXT_CHARS
from bot.requests import MAX_NEGATIVE_OPTION_CHARS, MAX_PROMPT_CHARS
from bot.shown_text import shortened
from bot.user_errors import UserError
from cogs.common import (
    MESSAGE_LIMIT,
    defer_thinking,
    first_image,
    quoted,
    services_of,
    shown_prompt,
)
from cogs.help_pages import HelpTopic, help_page
from cogs.moderation import picture_makers
from cogs.results.story import (
    CheckedUpload,
    checked_upload,
    journaled_infotext,
    own_upload_infotext,
)
from cogs.visibility import check_enabled_here, check_member_may_use
from inference.infotext import parse_infotext
from inference.limits import MAX_STEPS, MIN_STEPS

_CODE_BLOCK_ROOM = MESSAGE_LIMIT - 120  # fences, and the note on truncation


async def read_upload(
    interaction: discord.Interaction[Any], attachment: discord.Attachment
) -> CheckedUpload:
    """An attachment the member gave, read as their upload (``checked_upload``)."""
    check_upload_size(attachment.filename, attachment.size)  # before downloading it
    data = await attachment.read()
    return await checked_upload(interaction, attachment.filename, data)


async def read_attachment(
    interaction: discord.Interaction[Any], attachment: discord.Attachment
) -> CheckedImage:
    """``read_upload``'s picture."""
    return (await read_upload(interaction, attachment)).image


async def _acknowledge_privately(
    interaction: discord.Interaction[Any], picture: discord.Attachment
) -> None:
    """The answer is the member's alone: acknowledged privately before ``picture`` is
    downloaded and decoded (seconds for a large one, past Discord's 3 s), unless Discord's
    size for it or the channel's rules of now refuse it at once: a job's prompt is read from
    the journal only where Easel works, as the result buttons and the other menus read it."""
    check_upload_size(picture.filename, picture.size)
    await check_enabled_here(interaction)
    await defer_thinking(interaction, private=True)


def picture_of(message: discord.Message, menu: str) -> discord.Attachment:
    """The first image a message menu was used on."""
    picture = first_image(message)
    if picture is None:
        raise UserError(f"That message has no image; use {menu} on a message with a picture.")
    return picture


def describe_infotext(filename: str, infotext: str | None) -> str:
    """The parameters laid out for reading, or a sentence saying there are none."""
    if infotext is None:
        return (
            f"{filename!r} carries no generation parameters; only PNGs saved by Easel or the "
            "web UI (not re-compressed by an app) have them."
        )
    if len(infotext) > MAX_INFOTEXT_CHARS:  # read on the event loop: bounded work only
        return (
            f"{filename!r} carries {len(infotext):,} characters of parameters; at most "
            f"{MAX_INFOTEXT_CHARS:,} are read."
        )
    prompt, negative, params = parse_infotext(infotext)
    # Every part is whoever made the PNG's text: a masked link or a pill in a parameter would
    # read as Easel's own words (``quoted``). The prompts show as the text encoder reads them
    # (``shown_prompt``): padding hides none of their words; the PNG keeps them as typed.
    lines = [f"**Prompt:** {shown_prompt(prompt, MESSAGE_LIMIT)}"]
    if negative:
        lines.append(f"**Negative:** {shown_prompt(negative, MESSAGE_LIMIT)}")
    lines.extend(
        f"**{quoted(key, MESSAGE_LIMIT)}:** {quoted(str(value), MESSAGE_LIMIT)}"
        for key, value in params.items()
    )
    text = "\n".join(lines)
    return shortened(text, MESSAGE_LIMIT)


class InfoCog(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self._bot = bot
        self._info_menu = app_commands.ContextMenu(name="Info", callback=self.info_menu)

    async def cog_load(self) -> None:
        self._bot.tree.add_command(self._info_menu)

    async def cog_unload(self) -> None:
        self._bot.tree.remove_command(self._info_menu.name, type=self._info_menu.type)

    @app_commands.command(name="info", description="Show the generation settings stored in a PNG")
    @app_commands.describe(image="A PNG made by Easel or the Stable Diffusion web UI")
    async def info(self, interaction: discord.Interaction[Any], image: discord.Attachment) -> None:
        await _acknowledge_privately(interaction, image)
        # Its text as the upload's thread read it (Pillow never runs on the event loop).
        upload = await read_upload(interaction, image)
        # A copy of the member's own result whose text was stripped: the journal remembers.
        infotext = upload.infotext or await own_upload_infotext(interaction, image.filename)
        await interaction.edit_original_response(
            content=describe_infotext(image.filename, infotext)
        )

    async def info_menu(
        self, interaction: discord.Interaction[Any], message: discord.Message
    ) -> None:
        await check_member_may_use(interaction, message)
        picture = picture_of(message, "Info")
        await _acknowledge_privately(interaction, picture)
        upload = await read_upload(interaction, picture)  # its text read on the thread
        # Easel's own result served re-encoded, its text gone: the journal remembers.
        infotext = upload.infotext or await journaled_infotext(
            interaction, message, picture.filename
        )
        described = describe_infotext(picture.filename, infotext)
        # A moderator of this channel learns whose Easel jobs the picture is (a re-post).
        makers = await picture_makers(interaction, upload.pixel_digests)
        if makers:
            room = MESSAGE_LIMIT - len(makers) - 2
            described = f"{makers}\n\n{shortened(described, room)}"
        await interaction.edit_original_response(
            content=described, allowed_mentions=discord.AllowedMentions.none()
        )

    @app_commands.command(name="help", description="What Easel can do and how to ask for it")
    @app_commands.describe(topic="One part in more detail (leave it out for an overview)")
    async def help(
        self, interaction: discord.Interaction[Any], topic: HelpTopic | None = None
    ) -> None:
        await interaction.response.send_message(help_page(topic), ephemeral=True)

    @app_commands.command(name="explain", description="How Easel understands a prompt, as JSON")
    @app_commands.describe(
        prompt="The prompt to explain",
        negative="A negative prompt to explain with it",
        steps="Steps, for [from:to:when] schedules (1-150)",
    )
    async def explain(
        self,
        interaction: discord.Interaction[Any],
        prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS],
        negative: app_commands.Range[str, 0, MAX_NEGATIVE_OPTION_CHARS] | None = None,
        steps: app_commands.Range[int, MIN_STEPS, MAX_STEPS] | None = None,
    ) -> None:
        # Acknowledged first (the answer is the member's alone), then read on a worker thread
        # within a time budget; a prompt error is a UserError.
        await defer_thinking(interaction, private=True)
        explained = await services_of(interaction).prompts.explain(
            prompt, negative or "", steps, interaction.user.id, guild_id=interaction.guild_id
        )
        text = json.dumps(explained, indent=1, ensure_ascii=False)
        if len(text) <= _CODE_BLOCK_ROOM:
            await interaction.edit_original_response(content=f"```json\n{text}\n```")
            return
        # Too long for a message: a readable head, and the whole JSON as a file.
        await interaction.edit_original_response(
            content=f"```json\n{text[:_CODE_BLOCK_ROOM]}\n```… truncated; the full JSON is "
            "attached.",
            attachments=[discord.File(io.BytesIO(text.encode()), filename="explain.json")],
        )
