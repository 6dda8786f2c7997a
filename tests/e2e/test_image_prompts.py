"""Image prompts through the fake Discord: ``--sref <message link or picture URL>`` and
``/blend`` render a real tiny picture guided by a tiny IP-Adapter, recorded in the PNG; a link
to a channel the member cannot read, a URL off Discord, or an upload that is no picture, is
refused with one sentence and nothing is queued; /forget-me erases the uploaded pictures."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from bot.policy.visibility import NOT_FROM_DISCORD, NOT_READABLE
from bot.settings import Settings
from db import jobs as journal
from db.database import connect
from inference.infotext import infotext_from_png, parse_infotext
from inference.ldm_export import UNET_PREFIX
from inference.tiny import write_tiny_ip_adapter, write_tiny_model
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, StartEasel, forget_me, has_picture, reply_to
from tests.e2e.test_edits import inputs_of
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.fake_discord.rest import RESPONSE_DEFERRED_MESSAGE as DEFERRED

# Discord lets a member attach far more than Easel's 10 MiB upload limit.
HUGE_BYTES = 48 * 2**20
SDXL_HEADER = "xl"


@pytest.fixture(scope="module")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD1.5 model with its tiny IP-Adapter and image encoder, and an SDXL
    checkpoint's header (``xl``: never loaded, see the last test)."""
    directory = tmp_path_factory.mktemp("models")
    write_tiny_ip_adapter(write_tiny_model(directory / "tiny", family="sd15", seed=0))
    save_file(
        {
            "conditioner.embedders.1.model.ln_final.weight": torch.zeros(4),
            f"{UNET_PREFIX}input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(
                4, 2048
            ),
        },
        directory / f"{SDXL_HEADER}.safetensors",
    )
    return directory


def picture_png(colour: str) -> bytes:
    picture = Image.new("RGB", (64, 64), colour)
    ImageDraw.Draw(picture).rectangle((16, 16, 48, 48), fill="white")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def image_prompt_params(message: StoredMessage) -> dict[str, object]:
    infotext = infotext_from_png(message.attachments[0].data)
    assert infotext is not None
    params = parse_infotext(infotext)[2]
    return {key: value for key, value in params.items() if key.startswith("IP-Adapter")}


async def test_imagine_with_a_style_reference_link(
    fake_discord: FakeDiscord, start_easel: StartEasel, easel_settings_for_test: Settings
) -> None:
    fake = fake_discord
    mods = fake.add_text_channel("mods", visible_to=[fake.moderator_role_id])
    in_mods = await fake.post_user_message(
        "mods only", user=fake.owner_id, channel=mods, attachments=[("s.png", picture_png("red"))]
    )
    here = await fake.post_user_message("my style", attachments=[("a.png", picture_png("blue"))])
    huge = await fake.post_user_message("huge", attachments=[("huge.png", b"\0" * HUGE_BYTES)])
    async with start_easel() as bot:
        refusals = [
            ({"prompt": f"a cat --sref {in_mods.jump_url}"}, {}, NOT_READABLE),
            ({"prompt": f"a cat --sref {in_mods.attachments[0].url}"}, {}, NOT_READABLE),
            (
                {"prompt": "a cat --sref https://example.com/attachments/1/2/a.png"},
                {},
                NOT_FROM_DISCORD,
            ),
            (
                {"prompt": "a cat"},
                {"sref": ("notes.txt", b"just some text")},
                "not a readable image",
            ),
            (
                {"prompt": "a cat --sref-strength 0.5"},
                {},
                "sref_strength needs a picture",
            ),
        ]
        for options, files, expected in refusals:
            handle = await fake.invoke_command("imagine", {**QUICK, **options}, attachments=files)
            reply = await handle.wait_for_answer()
            assert reply.is_ephemeral and expected in reply.content, reply.content
            assert "\n" not in reply.content
            # Only an upload is read once acknowledged; a link is refused before.
            assert (handle.response_type == DEFERRED) is ("sref" in files)
        # A picture's URL far over the upload limit: refused having read about the limit.
        huge_picture = huge.attachments[0]
        handle = await fake.invoke_command(
            "imagine", {**QUICK, "prompt": f"a cat --sref {huge_picture.url}"}
        )
        reply = await handle.wait_for_answer()
        assert reply.is_ephemeral and "at most 10 MiB" in reply.content, reply.content
        assert fake.cdn_bytes_served(huge_picture.attachment_id) < HUGE_BYTES // 2
        assert bot.queue.queued_count() == 0
        assert inputs_of(easel_settings_for_test) == []

        # A message link, and a picture's URL on Discord (the fake's CDN), both work.
        for reference in (here.jump_url, here.attachments[0].url):
            handle = await fake.invoke_command(
                "imagine",
                {"prompt": f"a cat --sref {reference} --sref-strength 0.8", **QUICK},
            )
            result = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
            params = image_prompt_params(result)
            assert str(params.pop("IP-Adapter")).startswith("tiny-ipadapter [")
            # SD1.5 has no known style layers: the whole adapter.
            assert params == {"IP-Adapter weight": 0.8, "IP-Adapter mode": "full"}


async def test_blend_of_three_pictures(
    fake_discord: FakeDiscord, start_easel: StartEasel, easel_settings_for_test: Settings
) -> None:
    fake = fake_discord
    uploads = {
        f"image{index}": (f"p{index}.png", picture_png(colour))
        for index, colour in enumerate(("red", "green", "blue"), start=1)
    }
    async with start_easel() as bot:
        handle = await fake.invoke_command(
            "blend",
            {"prompt": "--steps 2"},
            attachments={**uploads, "image2": ("notes.txt", b"text")},
        )
        # Read once acknowledged (cogs.blend): refused in a private follow-up.
        reply = await handle.wait_for_followup()
        assert reply.is_ephemeral and "not a readable image" in reply.content, reply.content
        await handle.wait_for_original_deleted()  # no public "thinking…" left
        assert bot.queue.queued_count() == 0
        assert inputs_of(easel_settings_for_test) == []

        handle = await fake.invoke_command(
            "blend",
            {"prompt": "--steps 2", "dimensions": "square", "strength": 1.2},
            attachments=uploads,
        )
        result = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        params = image_prompt_params(result)
        assert params["IP-Adapter images"] == 3
        assert (params["IP-Adapter weight"], params["IP-Adapter mode"]) == (1.2, "full")
        kept = inputs_of(easel_settings_for_test)  # the accepted job's pictures
        assert len(kept) == 3
        conn = await connect(easel_settings_for_test.database_path)
        try:  # retention keeps what a journaled job reads
            named = {f"inputs/{path.name}" for path in kept}  # by its place in the data folder
            assert named <= await journal.input_picture_paths(conn)
        finally:
            await conn.close()

        forgotten = await (await forget_me(fake)).wait_for_answer()
        assert "3 uploaded pictures" in forgotten.content, forgotten.content
        assert inputs_of(easel_settings_for_test) == []


async def test_an_image_prompt_the_model_cannot_take_is_refused_before_queueing(
    fake_discord: FakeDiscord, start_easel: StartEasel, easel_settings_for_test: Settings
) -> None:
    """Only an SD1.5 adapter is installed: an image prompt on the SDXL checkpoint is refused
    from the files' headers when it is asked for, before any picture is fetched and nothing
    queued (the checkpoint is a header only: a job would fail to load it)."""
    fake = fake_discord
    here = await fake.post_user_message("my style", attachments=[("a.png", picture_png("blue"))])
    pictures = {f"image{n}": (f"p{n}.png", picture_png(c)) for n, c in ((1, "red"), (2, "green"))}
    asks = [
        ("imagine", {**QUICK, "prompt": f"a cat --sref {here.jump_url}", "model": SDXL_HEADER}, {}),
        (
            "imagine",
            {**QUICK, "prompt": "a cat", "model": SDXL_HEADER},
            {"sref": pictures["image1"]},
        ),
        ("blend", {"prompt": f"--steps 2 --model {SDXL_HEADER}"}, pictures),
    ]
    async with start_easel() as bot:
        for command, options, files in asks:
            handle = await fake.invoke_command(command, options, attachments=files)
            reply = await handle.wait_for_answer()
            assert reply.is_ephemeral, reply.content
            assert reply.content.startswith(
                "No installed IP-Adapter fits this checkpoint: put an IP-Adapter for the SDXL "
                "family in EASEL_MODELS_DIR/ipadapter/"
            ), reply.content
            assert bot.queue.queued_count() == 0
        assert inputs_of(easel_settings_for_test) == []
        assert fake.cdn_bytes_served(here.attachments[0].attachment_id) == 0

        # A model the server does not allow is refused by its rules, which say nothing of it.
        await reply_to(
            fake, "easel-admin model", {"action": "add", "name": "tiny"}, user=fake.owner_id
        )
        handle = await fake.invoke_command("imagine", asks[1][1], attachments=asks[1][2])
        reply = await handle.wait_for_answer()
        assert reply.is_ephemeral and reply.content == (
            f"The model `{SDXL_HEADER}` is not installed or not allowed here. You may use: tiny."
        ), reply.content
        assert bot.queue.queued_count() == 0
