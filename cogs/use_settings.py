"""Rendering from another picture's settings: ``/use-settings`` (a pasted infotext or a PNG)
and the "Use settings" message menu. What cannot be honoured is said under the result."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.infotext_import import (
    MAX_INFOTEXT_CHARS,
    Installed,
    installed_in,
    request_from_infotext_text,
)
from bot.policy.addons import AddonKind, AddonRules
from bot.user_errors import UserError
from cogs.common import (
    acknowledge,
    default_model_for,
    models_allowed_in,
    services_of,
    submit_from_interaction,
)
from cogs.info import describe_infotext, picture_of, read_upload
from cogs.results.story import check_posted_picture, own_upload_infotext
from cogs.visibility import check_member_may_use

# Discord's longest text option.
MAX_PASTED_CHARS = min(6000, MAX_INFOTEXT_CHARS)


class UseSettingsCog(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self._bot = bot
        self._menu = app_commands.ContextMenu(name="Use settings", callback=self.use_settings_menu)

    async def cog_load(self) -> None:
        self._bot.tree.add_command(self._menu)

    async def cog_unload(self) -> None:
        self._bot.tree.remove_command(self._menu.name, type=self._menu.type)

    @app_commands.command(
        name="use-settings",
        description="Render from a picture's settings (web UI or Civitai infotext, or its PNG)",
    )
    @app_commands.describe(
        infotext="The settings as text: prompt, 'Negative prompt: …' and 'Steps: …, Seed: …'",
        image="Or: a PNG that carries them (saved by Easel or the web UI)",
    )
    async def use_settings(
        self,
        interaction: discord.Interaction[Any],
        infotext: app_commands.Range[str, 1, MAX_PASTED_CHARS] | None = None,
        image: discord.Attachment | None = None,
    ) -> None:
        if image is not None and infotext is None:
            # Before the seconds its reading may take; its text may ask for a free --relax job.
            private = await acknowledge(interaction, image, may_be_free=True)
            upload = await read_upload(interaction, image)
            found = upload.infotext
            if found is None:
                # A copy of the member's own result, its text stripped: the journal remembers.
                found = await own_upload_infotext(interaction, image.filename)
            settings = _settings_found(found, image.filename)
            await _render(interaction, settings, upload.made_from, private)
        elif infotext is not None and image is None:
            # Before reading it and admission's plan: each may take a prompt's budget (2.5 s).
            private = await acknowledge(interaction, may_be_free=True)
            await _render(interaction, infotext, None, private)
        else:
            raise UserError("Give either `infotext` (the pasted settings) or `image` (a PNG).")

    async def use_settings_menu(
        self, interaction: discord.Interaction[Any], message: discord.Message
    ) -> None:
        await check_member_may_use(interaction, message)
        picture = picture_of(message, "Use settings")
        # Before the seconds its checks and reading may take; its text may ask for --relax.
        private = await acknowledge(interaction, picture, may_be_free=True)
        # Its settings and seed render the same picture: not of a job that is withdrawn.
        posted = await check_posted_picture(interaction, message, picture.filename)
        upload = await read_upload(interaction, picture)
        infotext = upload.infotext
        if infotext is None and posted is not None:
            # Easel's own result whose PNG text was lost on the way: the journal remembers.
            job, index = posted
            infotext = job.infotexts[index]
        made_from = posted[0].job_id if posted is not None else upload.made_from
        settings = _settings_found(infotext, picture.filename)
        await _render(interaction, settings, made_from, private)


def _settings_found(infotext: str | None, filename: str) -> str:
    """The settings read from picture ``filename``; refused when it carries none."""
    if infotext is None:
        raise UserError(describe_infotext(filename, None))
    return infotext


def _allowed_here(
    installed: Installed, rules: AddonRules, *, renders_on_workers: bool = False
) -> Installed:
    """What is installed, less the add-ons the server leaves out: the import reads those as
    not installed (the model's own VAE, Lanczos), so whether such a file exists is not told.
    The embeddings are those a job here reads: rendered here, an embedding the server lists
    that is not installed is not; on a broker's workers (``renders_on_workers``) the job
    records and reads every one the server lists (``AddonRules.embeddings_read``, as
    admission does), installed for the bot or not."""
    embeddings = (
        list(rules.embeddings_read(installed.embeddings))
        if renders_on_workers
        else rules.usable(AddonKind.EMBEDDING, installed.embeddings)
    )
    return dataclasses.replace(
        installed,
        loras=rules.usable(AddonKind.LORA, installed.loras),
        vaes=rules.usable(AddonKind.VAE, installed.vaes),
        upscalers=rules.usable(AddonKind.UPSCALER, installed.upscalers),
        embeddings=embeddings,
    )


async def _render(
    interaction: discord.Interaction[Any], infotext: str, made_from: str | None, private: bool
) -> None:
    """The settings as an /imagine job: the same prompt cap, server rules, banned words and
    quota, through the same submission. ``made_from``: the Easel job whose picture gave them
    (its seed renders the same pixels), the job's parent: withdrawn with it. ``private``: as
    the member's /settings were read once, when Discord was answered."""
    services = services_of(interaction)
    default_model = await default_model_for(interaction)
    rules = await services.guild_policy.addon_rules(interaction.guild_id)
    # Off the loop: folder scans and the hashes kept. The models searched for a hash are those
    # allowed here, and a hash not known yet is read in the background (seconds per
    # checkpoint), not before this answer, which Discord wants within 3 s.
    installed = await asyncio.to_thread(
        installed_in, services.registry, default_model, wait_for_hashes=False
    )
    models = await models_allowed_in(services, interaction.guild_id, installed.models)
    # A broker's jobs carry the embeddings admission records (``PromptPlanner.max_job_bytes``
    # is set only where renders run on a broker).
    on_workers = services.prompts.max_job_bytes is not None
    allowed = _allowed_here(installed, rules, renders_on_workers=on_workers)
    # A grid's Template is drawn from the folder admission draws its batch from.
    here = dataclasses.replace(
        allowed,
        models=models,
        wildcards_dir=services.prompts.wildcards_dir,
    )
    # Its notes quote the pasted text only where it holds none of the server's banned words.
    banned_words = await services.guild_policy.banned_words_where(interaction.guild_id)
    # A grid's Template is drawn again (the prompt language): within a prompt's budget.
    imported = await services.prompts.read(
        interaction.user.id,
        interaction.guild_id,
        request_from_infotext_text,
        infotext,
        here,
        services.request_defaults,
        banned_words,
    )
    # A grid made again that does not fit the member's quota: as many of it as fit.
    await submit_from_interaction(
        interaction, "imagine", imported.request, made_from, private=private, as_many_as_fit=True
    )
