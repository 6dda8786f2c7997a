"""Image prompts (IP-Adapter) in Discord: ``/imagine sref:`` or ``--sref <picture URL or
message link>``, a style reference, and ``/blend``, two to five pictures averaged into one image
prompt. A linked picture or message is read only where the member may read it
(``cogs.visibility``), as for ``/vary``; every picture, uploaded or linked, is saved through
``SavedInputs``, so one whose pixels a moderator withdrew is refused whatever its name
(``cogs.results.story.checked_upload``)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.history import StoredJob
from bot.images import check_upload_size
from bot.requests import (
    MAX_PROMPT_CHARS,
    ImagineOptions,
    RequestError,
    style_reference_flags,
)
from cogs.choices import allowed_models_only, model_choices
from cogs.common import (
    default_model_for,
    requests_for_member,
    services_of,
    submit_from_interaction,
)
from cogs.edit import SavedInputs, picture_in
from cogs.results.story import check_named_picture, check_posted_picture
from cogs.visibility import (
    attachment_for_member,
    check_member_may_read_link,
    message_for_member,
)
from inference.image_prompts import (
    MAX_IMAGE_PROMPT_WEIGHT,
    ImagePrompt,
    ImagePromptMode,
    check_image_prompt_fits,
    with_image_prompt,
)
from inference.types import RenderInputError, RenderRequest

# /blend's shapes, as Midjourney's ``dimensions`` option.
BLEND_DIMENSIONS = {"square": "1:1", "portrait": "2:3", "landscape": "3:2"}
BlendDimensions = Literal["square", "portrait", "landscape"]


async def _check_installed(
    interaction: discord.Interaction[Any], model: str | None, mode: ImagePromptMode
) -> None:
    """Refuse before any picture is downloaded or anything queued when no installed adapter
    could render on the model the job will use (file headers, read off the event loop)."""
    if model is not None and not await allowed_models_only(interaction, [model]):
        return  # the server's rules refuse it in their own words, naming only allowed models
    services = services_of(interaction)
    default_model = await default_model_for(interaction)
    prompt = ImagePrompt(("",), mode=mode)
    try:
        await asyncio.to_thread(
            check_image_prompt_fits, prompt, services.registry, model, default_model
        )
    except RenderInputError as error:
        raise RequestError(str(error)) from None


def _guided(
    request: RenderRequest, paths: Sequence[Path], weight: float | None, mode: ImagePromptMode
) -> RenderRequest:
    try:
        return with_image_prompt(request, ImagePrompt(tuple(map(str, paths)), weight, mode))
    except RenderInputError as error:
        raise RequestError(str(error)) from None


def _posted_job_is_parent(inputs: SavedInputs, posted: tuple[StoredJob, int] | None) -> None:
    """The job Easel posted the linked picture as is the parent, as for /vary (its pixels may
    match no job: one stored before their digests were), unless an earlier picture of the job
    gave one. Only Easel's own post names it: a file's name is anyone's to write."""
    if posted is not None:
        inputs.made_from = inputs.made_from or posted[0].job_id


async def with_style_reference(
    interaction: discord.Interaction[Any],
    request: RenderRequest,
    options: ImagineOptions,
    inputs: SavedInputs,
    upload: discord.Attachment | None,
    strength: float | None,
) -> RenderRequest:
    """``request`` with the style reference the member gave: the ``sref`` upload, else what
    ``--sref`` in the prompt of ``options`` (as parsed for ``request``) names: a picture's URL
    on Discord, or a message link whose first picture is used (None of either: ``request`` as
    it is). The picture is fetched, read and saved later (``SavedInputs.saved_later``): a
    link's fetch may take 30 s, past Discord's 3 s."""
    reference, typed_strength = style_reference_flags(options)
    weight = strength if strength is not None else typed_strength
    if upload is None and reference is None:
        if weight is not None:
            raise RequestError(
                "sref_strength needs a picture: attach one as `sref` or link one with --sref."
            )
        return request
    await _check_installed(interaction, request.model, "auto")
    notes = list(request.notes)
    path = inputs.fresh_path()
    if upload is not None:
        check_upload_size(upload.filename, upload.size)  # by what Discord says of it
        inputs.save_later(functools.partial(inputs.save, upload, path=path))
        if reference is not None:
            notes.append("the sref option overrides the prompt's --sref")
    else:
        assert reference is not None
        await check_member_may_read_link(interaction, reference)  # before the acknowledgement
        inputs.save_later(functools.partial(_save_reference, interaction, inputs, reference, path))
    guided = _guided(request, [path], weight, "auto")
    return dataclasses.replace(guided, notes=notes)


async def _save_reference(
    interaction: discord.Interaction[Any], inputs: SavedInputs, reference: str, path: Path
) -> None:
    """The picture ``--sref`` names, saved to ``path``: a picture's URL on Discord, or a
    message link whose first picture is used."""
    linked = await attachment_for_member(interaction, reference)
    if linked is not None:
        # A file's name only refuses (a withdrawn job's); its pixels give the parent.
        await check_named_picture(interaction, linked[0])
        await inputs.save_data(*linked, path=path)
        return
    message = await message_for_member(interaction, reference)
    picture = picture_in(message)
    posted = await check_posted_picture(interaction, message, picture.filename)
    _posted_job_is_parent(inputs, posted)
    await inputs.save(picture, path=path)


class BlendCog(commands.Cog):
    @app_commands.command(name="blend", description="Blend 2-5 pictures into new pictures")
    @app_commands.describe(
        image1="A picture to blend",
        image2="Another picture to blend",
        image3="Another picture (optional)",
        image4="Another picture (optional)",
        image5="Another picture (optional)",
        prompt="Words to steer the blend (optional); inline flags such as --seed work",
        dimensions="The shape of the result (default: your usual size)",
        strength=f"How strongly the pictures guide (0-{MAX_IMAGE_PROMPT_WEIGHT:g}, default 0.6)",
        model="Checkpoint name",
    )
    @app_commands.autocomplete(model=model_choices)
    async def blend(
        self,
        interaction: discord.Interaction[Any],
        image1: discord.Attachment,
        image2: discord.Attachment,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        image5: discord.Attachment | None = None,
        prompt: app_commands.Range[str, 0, MAX_PROMPT_CHARS] | None = None,
        dimensions: BlendDimensions | None = None,
        strength: app_commands.Range[float, 0.0, MAX_IMAGE_PROMPT_WEIGHT] | None = None,
        model: str | None = None,
    ) -> None:
        options = ImagineOptions(
            prompt=prompt or "",
            size=BLEND_DIMENSIONS[dimensions] if dimensions else None,
            model=model,
            prompt_optional=True,
        )
        asked = await requests_for_member(interaction, options)
        request, *repeats = asked.requests
        await _check_installed(interaction, request.model, "full")
        pictures = [
            image for image in (image1, image2, image3, image4, image5) if image is not None
        ]
        for picture in pictures:  # from what Discord says of each: refused before the defer
            check_upload_size(picture.filename, picture.size)
        async with SavedInputs(interaction) as inputs:
            paths = [inputs.fresh_path() for _ in pictures]
            # The pictures' look and content both: the full adapter, not style-only.
            request = _guided(request, paths, strength, "full")
            for picture, path in zip(pictures, paths, strict=True):
                inputs.save_later(functools.partial(inputs.save, picture, path=path))
            # Downloaded, decoded and checked (banned, age-restricted, withdrawn) once
            # acknowledged: five large ones take seconds, past Discord's 3 s. A refusal is then
            # a private follow-up (``cogs.common.tell``). An Easel picture among them is the
            # job's parent: withdrawn with it.
            await submit_from_interaction(
                interaction,
                "blend",
                request,
                private=asked.private,
                saved=asked.saved,
                repeat_seeds=[repeat.seed for repeat in repeats],
                before_queueing=inputs.saved_later,
                on_journaled=inputs.keep,
            )
