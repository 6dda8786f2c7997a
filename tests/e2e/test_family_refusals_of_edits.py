"""What the model's family cannot take, on the paths that make a job from something else (a
picture's own settings in /vary, /use-settings and the buttons under an upscale, the "Use as
control" form, Fix faces, a creative /upscale), is settled before anything is queued: refused
privately in the render's own sentence, or, for what a Flux picture was never rendered with,
left out with a note. It used to be queued, refused by the render in the channel after the
wait, and refunded. Through the fake Discord with tiny models."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bot.settings import Settings
from inference.infotext import infotext_from_png, parse_infotext
from inference.tiny import write_tiny_controlnet, write_tiny_model, write_tiny_vae
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import (
    RENDER_TIMEOUT_S,
    StartEasel,
    images_today,
    imagine,
    modal_fields,
)
from tests.e2e.test_combined_edits import answered, crafted_picture, pressed
from tests.e2e.test_controlnet import edges_png
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.support.pictures import has_picture
from tests.support.polling import until

VAE_ON_FLUX = (
    "VAE sd-vae.safetensors is for SD 1.x, 2.x and SDXL models and this model takes a "
    "16-channel VAE (SD3 and Flux); choose one of those, or none for the model's own."
)


@pytest.fixture(scope="module")
def family_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Flux model, a tiny SD 1.5 one with its ControlNet, and an SD (4-channel) VAE."""
    directory = tmp_path_factory.mktemp("family-models")
    write_tiny_model(directory / "my-flux", family="flux")
    write_tiny_controlnet(write_tiny_model(directory / "sd", family="sd15"))
    write_tiny_vae(directory / "vae" / "sd-vae.safetensors")
    return directory


@pytest.fixture
def easel_settings_for_test(
    fake_discord: FakeDiscord, tmp_path: Path, family_models_dir: Path
) -> Settings:
    return easel_settings(fake_discord, tmp_path / "data", family_models_dir)


async def uploaded_to(
    fake: FakeDiscord, command: str, png: bytes, options: Mapping[str, Any] | None = None
) -> StoredMessage:
    """/vary (subtle), a fast 2x /upscale (unless ``options`` say otherwise) or
    /use-settings of the upload ``png``: its result, its failure posted, or its private
    refusal (a follow-up: the upload is acknowledged first)."""
    if options is None:
        options = {"strength": "subtle"} if command == "vary" else {"scale": 2}
    handle = await fake.invoke_command(command, options, attachments={"image": ("f.png", png)})

    def told() -> StoredMessage | None:
        original = handle.original
        if original is not None and answered(original):
            return original
        return next(iter(handle.followups), None)

    await until(lambda: told() is not None, RENDER_TIMEOUT_S)
    answer = told()
    assert answer is not None
    return answer


def picture_params(message: StoredMessage) -> dict[str, object]:
    text = infotext_from_png(message.attachments[0].data)
    assert text is not None, message.summary()
    return dict(parse_infotext(text)[2])


async def test_a_flux_pictures_clip_skip_is_left_out_where_it_is_rendered_again(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A Flux picture whose text says "Clip skip: 2" (another UI's) was never rendered with
    it: /vary and Vary under its upscale re-render it on its own model, without it, and say
    so, where the render refused the whole job after the queue."""
    fake = fake_discord
    crafted = crafted_picture("Model: my-flux, Clip skip: 2, Tiling: True", sampler="Euler")
    async with start_easel():
        varied = await uploaded_to(fake, "vary", crafted)
        upscaled = await uploaded_to(fake, "upscale", crafted)
        under = await pressed(fake, upscaled, "Vary (Subtle)")
    for posted in (varied, under):
        assert has_picture(posted), posted.summary()
        assert "clip skip, tiling left out: the picture's model (flow matching) takes none" in (
            posted.content
        )
        params = picture_params(posted)
        assert params["Model"] == "my-flux" and "Clip skip" not in params, params


async def test_a_vae_the_pictures_own_model_cannot_take_is_refused_before_queueing(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """The picture's own model (Flux) and an SD VAE its text names: refused privately in the
    render's sentence, from /vary and from Vary under its upscale, nothing charged."""
    fake = fake_discord
    crafted = crafted_picture("Model: my-flux, VAE: sd-vae.safetensors", sampler="Euler")
    async with start_easel() as bot:
        varied = await uploaded_to(fake, "vary", crafted)
        upscaled = await uploaded_to(fake, "upscale", crafted)
        assert has_picture(upscaled), upscaled.summary()  # a fast upscale renders nothing
        under = await (await fake.click(upscaled, label="Vary (Subtle)")).wait_for_answer()
        for refused in (varied, under):
            assert refused.is_ephemeral and refused.content == VAE_ON_FLUX, refused.summary()
        assert bot.queue.queued_count() == 0
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 1  # the upscale


async def test_use_as_control_on_flux_is_refused_before_queueing(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """The form's prompt names Flux, which takes no ControlNet: refused privately in the
    render's sentence, as /imagine's control option is, nothing queued or charged."""
    fake = fake_discord
    posted = await fake.post_user_message(
        "edges", user=fake.owner_id, attachments=[("edges.png", edges_png())]
    )
    async with start_easel() as bot:
        opened = await fake.invoke_message_command("Use as control", posted)
        fields = modal_fields(await opened.wait_for_modal())
        prompt_id = fields["Prompt (inline flags such as --ar work)"][0]
        values = {custom_id: value for custom_id, value in fields.values()}
        prompt = {prompt_id: "a ring --steps 2 --model my-flux"}
        handle = await fake.submit_modal(opened, {**values, **prompt})
        reply = await handle.wait_for_answer()
        assert reply.is_ephemeral, reply.summary()
        assert reply.content == "ControlNet does not work with Flux dev models here.", reply.content
        assert bot.queue.queued_count() == 0
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 0


async def test_a_flux_pictures_default_clip_skip_is_no_setting_left_out(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """ "Clip skip: 1" is the default, which Flux renders with: /vary renders the picture again
    with no note saying a clip skip was left out."""
    crafted = crafted_picture("Model: my-flux, Clip skip: 1", sampler="Euler")
    async with start_easel():
        varied = await uploaded_to(fake_discord, "vary", crafted)
    assert has_picture(varied), varied.summary()
    assert "left out" not in varied.content, varied.content
    assert picture_params(varied)["Model"] == "my-flux"


async def test_use_settings_leaves_out_a_flux_pictures_clip_skip_as_vary_does(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """/use-settings of a Flux picture whose text says "Clip skip: 2" renders it on its model
    without it, in /vary's words, where it refused the whole picture."""
    crafted = crafted_picture("Model: my-flux, Clip skip: 2", sampler="Euler")
    async with start_easel():
        used = await uploaded_to(fake_discord, "use-settings", crafted, {})
    assert has_picture(used), used.summary()
    assert "clip skip left out: the picture's model (flow matching) takes none" in used.content
    params = picture_params(used)
    assert params["Model"] == "my-flux" and "Clip skip" not in params, params


async def test_fixing_faces_and_a_creative_upscale_of_a_flux_picture_are_refused_up_front(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """The faces passes and the creative upscale re-render through a UNet, which Flux has
    none of: Fix faces under a Flux result, /imagine --faces on Flux and a creative /upscale of
    a Flux picture are refused privately in the render's sentences, nothing queued or
    charged, where they were queued and refused in the channel after the wait."""
    fake = fake_discord
    faces = (
        "My-flux (Flux dev) cannot fix or restore faces: that works with SD 1.x and SDXL "
        "models; leave out --faces and --restore-faces or pick another."
    )
    crafted = crafted_picture("Model: my-flux", sampler="Euler")
    async with start_easel() as bot:
        result = await imagine(fake, "a portrait --model my-flux", steps=2, size="64x64")
        fix = await (await fake.click(result, label="Fix faces")).wait_for_answer()
        flag = await (
            await fake.invoke_command(
                "imagine", {"prompt": "a portrait --faces --model my-flux", "steps": 2}
            )
        ).wait_for_answer()
        creative = await uploaded_to(fake, "upscale", crafted, {"scale": 2, "mode": "creative"})
        for refused, expected in (
            (fix, faces),
            (flag, faces),
            (
                creative,
                "The creative upscale (img2img in tiles) does not work with Flux dev models here.",
            ),
        ):
            assert refused.is_ephemeral and refused.content == expected, refused.summary()
        assert bot.queue.queued_count() == 0
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 1  # /imagine
