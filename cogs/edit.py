"""/vary, /inpaint, /upscale and the Vary / Upscale message menus: jobs that start from a
picture. The command is acknowledged first (``cogs.common.acknowledge``); then uploads are
checked (type, size, pixel count, dimensions) and saved as PNG under ``EASEL_DATA_DIR/inputs``
before anything is queued; the queue posts the result."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.edits import (
    InpaintSettings,
    Picture,
    check_mask_paints,
    check_may_vary,
    inpaint_request,
    input_path,
    picture_settings,
    request_from_infotext,
    upscale_request,
    vary_denoise,
    vary_request,
)
from bot.images import check_upload_size, decoded_upload
from bot.requests import MAX_PROMPT_CHARS
from bot.user_errors import UserError
from cogs.choices import upscaler_choices
from cogs.common import (
    acknowledge,
    check_addons_installed,
    first_image,
    picture_renderers_in,
    services_of,
    submit_from_interaction,
)
from cogs.results.story import checked_upload, picture_with_story
from cogs.visibility import check_member_may_use, message_for_member
from inference.types import RenderRequest

DEFAULT_VARY_STRENGTH = "strong"
MENU_UPSCALE_FACTOR = 2


def write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


class SavedInputs:
    """The pictures one command saved; removed again unless a job that names them was
    journaled (``keep``, as ``submit_from_interaction``'s ``on_journaled``: whatever raises
    after that, the queued job still reads them). Each one is checked as an upload the member
    made (``checked_upload``), but a mask: it is no picture that is shown or used again.

    ``made_from``: the job of this server that the first picture found to be an Easel
    picture by its pixels is of (None: none is), the parent of the job made of them, so that
    a moderator's deletion of that picture reaches this job too (``db.history``). A job of
    several pictures (/blend, a control picture and a style reference) has one parent: the
    first whose check ended, its journal keeping one."""

    def __init__(self, interaction: discord.Interaction[Any]) -> None:
        self._interaction = interaction
        self._inputs_dir = services_of(interaction).inputs_dir
        self._paths: list[Path] = []
        self._later: list[Callable[[], Awaitable[object]]] = []
        self._kept = False
        self.made_from: str | None = None

    def fresh_path(self) -> Path:
        """Where a picture saved later goes: a request may name it before it is written."""
        return input_path(self._inputs_dir)

    def save_later(self, save: Callable[[], Awaitable[object]]) -> None:
        """``save`` (a download, a decode) runs in ``saved_later``, once Discord was answered."""
        self._later.append(save)

    async def saved_later(self) -> str | None:
        """The saves ``save_later`` held, at once (their decodes in the member's line), then
        ``made_from``: ``submit_from_interaction``'s ``before_queueing``, after the
        acknowledgement. All have ended before a refusal is raised, so none is written after
        ``__aexit__`` removed the saved ones."""
        saves, self._later = self._later, []
        outcomes = await asyncio.gather(*(save() for save in saves), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return self.made_from

    async def save(
        self, attachment: discord.Attachment, *, mask: bool = False, path: Path | None = None
    ) -> Picture:
        check_upload_size(attachment.filename, attachment.size)  # before downloading it
        data = await attachment.read()
        return await self.save_data(attachment.filename, data, mask=mask, path=path)

    async def save_data(
        self, filename: str, data: bytes, *, mask: bool = False, path: Path | None = None
    ) -> Picture:
        """A picture already downloaded (from a link), checked as an upload is, written to
        ``path`` (a job may name it before it is written; default: a fresh one)."""
        check_upload_size(filename, len(data))
        if mask:
            upload = await services_of(self._interaction).picture_work.run(
                self._interaction.user.id, decoded_upload, filename, data, digest=False, as_png=True
            )
        else:
            checked = await checked_upload(self._interaction, filename, data, as_png=True)
            self.made_from = self.made_from or checked.made_from
            upload = checked
        assert upload.png is not None  # asked for
        path = path or self.fresh_path()
        self._paths.append(path)
        await asyncio.to_thread(write_file, path, upload.png)
        return Picture(path, upload.image.width, upload.image.height, upload.infotext)

    def keep(self) -> None:
        """A journaled job names the pictures: not removed."""
        self._kept = True

    async def __aenter__(self) -> SavedInputs:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._kept:
            for path in self._paths:
                await asyncio.to_thread(path.unlink, missing_ok=True)


def picture_in(message: discord.Message) -> discord.Attachment:
    """The picture a command reads from a message (its first image)."""
    picture = first_image(message)
    if picture is None:
        raise UserError("That message has no picture; pick a message with an image attached.")
    return picture


async def _picture_request(
    interaction: discord.Interaction[Any],
    infotext: str | None,
    prompt: str | None,
    *,
    how_to_give_a_prompt: str = "give one with `prompt`",
) -> RenderRequest:
    """``request_from_infotext`` of a picture's text with the models, VAEs and flow-family
    models its settings may name here (``picture_renderers_in``), ``prompt`` replacing its
    own (``how_to_give_a_prompt``: where the picture has none)."""
    renderers = await picture_renderers_in(services_of(interaction), interaction.guild_id)
    return request_from_infotext(
        infotext,
        prompt,
        renderers.models,
        usable_vaes=renderers.vaes,
        flow_models=renderers.flow_models,
        distilled_models=renderers.distilled_models,
        default_model=renderers.default_model,
        how_to_give_a_prompt=how_to_give_a_prompt,
    )


async def _submit(
    interaction: discord.Interaction[Any],
    inputs: SavedInputs,
    kind: str,
    request: RenderRequest,
    picture: Picture,
    private: bool,
    posted_as: str | None = None,
) -> None:
    """``picture``: the one ``request`` is made from (its size reckons its cost);
    ``posted_as``: the job whose post the picture was taken from, its parent (else the one
    its pixels are: ``SavedInputs.made_from``)."""
    await submit_from_interaction(
        interaction,
        kind,
        request,
        posted_as or inputs.made_from,
        private=private,
        on_journaled=inputs.keep,
        input_size=picture.size,
    )


class EditCog(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self._bot = bot
        self._menus = (
            app_commands.ContextMenu(name="Vary", callback=self.vary_menu),
            app_commands.ContextMenu(name="Upscale", callback=self.upscale_menu),
        )

    async def cog_load(self) -> None:
        for menu in self._menus:
            self._bot.tree.add_command(menu)

    async def cog_unload(self) -> None:
        for menu in self._menus:
            self._bot.tree.remove_command(menu.name, type=menu.type)

    @app_commands.command(name="vary", description="Variations of a picture (img2img)")
    @app_commands.describe(
        image="The picture to vary",
        message="Or: a link to (or the id of) a message with the picture",
        strength="subtle, strong, or how much may change: above 0, at most 1",
        prompt="A new prompt; by default the picture's own (from its PNG parameters)",
    )
    async def vary(
        self,
        interaction: discord.Interaction[Any],
        image: discord.Attachment | None = None,
        message: str | None = None,
        strength: str = DEFAULT_VARY_STRENGTH,
        prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS] | None = None,
    ) -> None:
        source: discord.Message | None = None
        if image is not None and message is None:
            picture = image
        elif image is None and message is not None:
            source = await message_for_member(interaction, message)
            picture = picture_in(source)
        else:
            raise UserError("Give exactly one of `image` (an upload) or `message` (a link).")
        await self._vary(interaction, picture, strength, prompt, source)

    async def vary_menu(
        self, interaction: discord.Interaction[Any], message: discord.Message
    ) -> None:
        await check_member_may_use(interaction, message)
        await self._vary(
            interaction,
            picture_in(message),
            DEFAULT_VARY_STRENGTH,
            None,
            message,
            # A menu has no prompt option: /vary takes the same picture by its link.
            how_to_give_a_prompt="use /vary with this message's link in `message` and a `prompt`",
        )

    async def _vary(
        self,
        interaction: discord.Interaction[Any],
        image: discord.Attachment,
        strength: str,
        prompt: str | None,
        source: discord.Message | None = None,
        *,
        how_to_give_a_prompt: str = "give one with `prompt`",
    ) -> None:
        denoise = vary_denoise(strength)  # a typo is refused before "thinking…"
        # The picture's text may say "Relax: True": a free --relax job (as /use-settings').
        private = await acknowledge(interaction, image, may_be_free=True)
        async with SavedInputs(interaction) as inputs:
            saved = await inputs.save(image)
            picture, posted_as = await picture_with_story(
                interaction, saved, source, image.filename
            )
            check_may_vary(picture)  # no prompt makes its size right: said first
            base = await _picture_request(
                interaction, picture.infotext, prompt, how_to_give_a_prompt=how_to_give_a_prompt
            )
            request = vary_request(base, picture, denoise)
            await _submit(interaction, inputs, "vary", request, picture, private, posted_as)

    @app_commands.command(name="inpaint", description="Repaint the white part of a mask")
    @app_commands.describe(
        image="The picture to change",
        mask="Same size as the picture: white = repaint, black = keep",
        prompt="What to paint in the masked area",
        denoise="How much the masked area may change (0-1)",
        mask_blur="Soften the mask's edge by this many pixels (0-64)",
        padding="With only_masked: context around the mask in pixels (0-256)",
        fill="What the masked area starts from",
        only_masked="Render only the masked area at full resolution, then paste it back",
        invert="Repaint the black part instead",
    )
    async def inpaint(
        self,
        interaction: discord.Interaction[Any],
        image: discord.Attachment,
        mask: discord.Attachment,
        prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS],
        denoise: app_commands.Range[float, 0.0, 1.0] = 0.75,
        mask_blur: app_commands.Range[int, 0, 64] = 4,
        padding: app_commands.Range[int, 0, 256] = 32,
        fill: Literal["original", "fill", "latent noise", "latent nothing"] = "original",
        only_masked: bool = False,
        invert: bool = False,
    ) -> None:
        private = await acknowledge(interaction, image, mask, may_be_free=True)
        async with SavedInputs(interaction) as inputs:
            picture = await inputs.save(image)
            mask_picture = await inputs.save(mask, mask=True)
            base = await _picture_request(interaction, picture.infotext, prompt)
            settings = InpaintSettings(denoise, mask_blur, padding, fill, only_masked, invert)
            request = inpaint_request(base, picture, mask_picture, settings)
            await services_of(interaction).picture_work.run(
                interaction.user.id, check_mask_paints, mask_picture, invert
            )
            await _submit(interaction, inputs, "inpaint", request, picture, private)

    @app_commands.command(name="upscale", description="Enlarge a picture 2x or 4x")
    @app_commands.describe(
        image="The picture to enlarge",
        scale="2x or 4x (default 2x)",
        mode=(
            "fast: the upscaler only (a model one if installed); "
            "creative: re-detail with the picture's prompt"
        ),
        upscaler="Which upscaler (default: the configured one, else the first model installed)",
    )
    @app_commands.autocomplete(upscaler=upscaler_choices)
    async def upscale(
        self,
        interaction: discord.Interaction[Any],
        image: discord.Attachment,
        scale: Literal[2, 4] = 2,
        mode: Literal["fast", "creative"] = "fast",
        upscaler: str | None = None,
    ) -> None:
        await self._upscale(interaction, image, scale, mode, upscaler)

    async def upscale_menu(
        self, interaction: discord.Interaction[Any], message: discord.Message
    ) -> None:
        await check_member_may_use(interaction, message)
        await self._upscale(interaction, picture_in(message), MENU_UPSCALE_FACTOR, source=message)

    async def _upscale(
        self,
        interaction: discord.Interaction[Any],
        image: discord.Attachment,
        factor: int,
        mode: str = "fast",
        upscaler: str | None = None,
        source: discord.Message | None = None,
    ) -> None:
        services = services_of(interaction)
        if upscaler is not None:  # a typo is refused before "thinking…"
            named = RenderRequest(prompt="", options={"upscaler": upscaler})
            await check_addons_installed(services, named, interaction.guild_id, {})
        # A creative one reads the picture's text, which may make it free (--relax).
        private = await acknowledge(interaction, image, may_be_free=mode != "fast")
        async with SavedInputs(interaction) as inputs:
            saved = await inputs.save(image)
            picture, posted_as = await picture_with_story(
                interaction, saved, source, image.filename
            )
            # A fast upscale uses no model: the picture's is not read.
            renderers = (
                None
                if mode == "fast"
                else await picture_renderers_in(services, interaction.guild_id)
            )
            base = picture_settings(picture.infotext, renderers)
            installed_upscalers = await asyncio.to_thread(services.upscaler_names)
            request = upscale_request(
                base,
                picture,
                factor,
                mode,
                upscaler=upscaler,
                installed_upscalers=installed_upscalers,
            )
            await _submit(interaction, inputs, "upscale", request, picture, private, posted_as)
