"""What a flow-matching model (Flux, SD 3) cannot read of a prompt, ``AND`` parts and a text
that changes over the steps (prompt editing ``[a:b:when]``, alternation ``[a|b]``), is refused
privately before anything is queued, in the render's own sentence, told from the prompt's
plan as the render reads it: not posted in the channel after the wait, then refunded.
Through the fake Discord with tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from bot.settings import Settings
from inference.infotext import png_with_infotext
from inference.tiny import write_tiny_model
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    images_today,
    imagine,
    modal_fields,
)
from tests.e2e.test_combined_edits import answered
from tests.e2e.test_family_refusals_of_edits import uploaded_to
from tests.fake_discord import FakeDiscord
from tests.support.pictures import has_picture

AND_ON = "AND (composable prompts) does not work with {} models here."
EDITING_ON = "Prompt editing and alternation ([a:b:when], [a|b]) does not work with {} models here."


@pytest.fixture(scope="module")
def prompt_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Flux dev model, a tiny SD 3 one and a tiny SD 1.5 one."""
    directory = tmp_path_factory.mktemp("prompt-family-models")
    write_tiny_model(directory / "my-flux", family="flux")
    write_tiny_model(directory / "my-sd3", family="sd3")
    write_tiny_model(directory / "sd", family="sd15")
    return directory


@pytest.fixture
def easel_settings_for_test(
    fake_discord: FakeDiscord, tmp_path: Path, prompt_models_dir: Path
) -> Settings:
    return easel_settings(fake_discord, tmp_path / "data", prompt_models_dir)


async def test_and_and_prompt_editing_on_flow_models_are_refused_before_queueing(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """/imagine on Flux and SD 3 with AND, an edit, an alternation, an edit in the negative
    prompt: each refused privately in the render's sentence; nothing queued nor charged."""
    fake = fake_discord
    async with start_easel() as bot:
        for options, expected in (
            ({"prompt": "a cat AND a dog", "model": "my-flux"}, AND_ON.format("Flux dev")),
            ({"prompt": "a cat AND a dog:0.5 --model my-sd3"}, AND_ON.format("SD 3")),
            ({"prompt": "a [cat:dog:1]", "model": "my-flux"}, EDITING_ON.format("Flux dev")),
            ({"prompt": "a [cat|dog]", "model": "my-sd3"}, EDITING_ON.format("SD 3")),
            (
                {"prompt": "a cat", "negative": "[blur:noise:0.5]", "model": "my-sd3"},
                EDITING_ON.format("SD 3"),
            ),
        ):
            handle = await fake.invoke_command("imagine", {**QUICK, **options})
            reply = await handle.wait_for_original(lambda m: not m.is_loading)
            assert reply.is_ephemeral and reply.content == expected, (options, reply.summary())
        assert bot.queue.queued_count() == 0
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 0


async def test_an_edit_of_a_flux_picture_whose_prompt_has_and_is_refused_before_queueing(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """/vary of an upload rendered by Flux whose prompt has AND parts: refused privately (a
    follow-up after the upload's acknowledgement), nothing queued nor charged."""
    fake = fake_discord
    text = (
        "a red fox AND a hat\nSteps: 2, Sampler: Euler, CFG scale: 1, Seed: 5, Size: 64x64, "
        "Model: my-flux"
    )
    upload = png_with_infotext(Image.new("RGB", (64, 64), "teal"), text)
    async with start_easel() as bot:
        refused = await uploaded_to(fake, "vary", upload)
        assert refused.is_ephemeral, refused.summary()
        assert refused.content == AND_ON.format("Flux dev"), refused.summary()
        assert bot.queue.queued_count() == 0
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 0


async def test_what_the_plan_reads_as_one_text_renders_and_a_remix_to_alternation_is_refused(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """The rule is the plan's, not the brackets': an edit due after the last of the 2 steps
    leaves one text, which Flux and SD 3 render (and SD renders AND). A Remix of the Flux one
    to an alternation is refused privately, charging nothing more."""
    fake = fake_discord
    async with start_easel() as bot:
        flux = await imagine(fake, "a [cat:dog:5]", model="my-flux")
        # Heun makes two model calls a step on SD, but the flow pass reads its prompt once
        # a step: the edit, due at 3, comes after the 2 steps.
        sd3 = await imagine(fake, "a [cat:dog:3]", model="my-sd3", sampler="Heun")
        sd = await imagine(fake, "a cat AND a dog", model="sd")
        for posted in (flux, sd3, sd):
            assert has_picture(posted) and not posted.is_ephemeral, posted.summary()
        opened = await fake.click(flux, label="Remix")
        fields = modal_fields(await opened.wait_for_modal())
        values = {custom_id: value for custom_id, value in fields.values()}
        [prompt_id] = [cid for label, (cid, _) in fields.items() if label.startswith("Prompt")]
        submitted = await fake.submit_modal(opened, {**values, prompt_id: "a [cat|dog]"})
        refused = await submitted.wait_for_original(answered, timeout=RENDER_TIMEOUT_S)
        assert refused.is_ephemeral and not refused.attachments, refused.summary()
        assert refused.content == EDITING_ON.format("Flux dev"), refused.summary()
        assert bot.queue.queued_count() == 0
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 3


async def test_a_compare_cell_on_flux_whose_prompt_has_and_is_refused_before_queueing(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """/compare whose cells render ``AND`` on Flux: a model axis (SD, then Flux) and a
    prompt search/replace on Flux that brings the ``AND`` in. Each refused privately, in the
    render's sentence, before anything is queued or charged (the Flux cells were rendered
    SD-style or refused after the wait); the same grid on SD alone renders."""
    fake = fake_discord
    async with start_easel() as bot:
        for options in (
            {"prompt": "a cat AND a dog", "x": "model", "x_values": "sd, my-flux"},
            {"prompt": "a cat", "model": "my-flux", "x": "prompt", "x_values": "cat, cat AND dog"},
        ):
            handle = await fake.invoke_command("compare", {**QUICK, **options})
            reply = await handle.wait_for_original(lambda m: not m.is_loading)
            assert reply.is_ephemeral, (options, reply.summary())
            assert reply.content == AND_ON.format("Flux dev"), (options, reply.summary())
        assert bot.queue.queued_count() == 0
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 0
        options = {"prompt": "a cat AND a dog", "x": "seed", "x_values": "1, 2", "model": "sd"}
        handle = await fake.invoke_command("compare", {**QUICK, **options})
        grid = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert not grid.is_ephemeral, grid.summary()
