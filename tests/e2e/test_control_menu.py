"""The "Use as control" message menu through the fake Discord: a picture the member can read
becomes the ControlNet picture of a real tiny /imagine render charged to them, a picture they
cannot read is refused before any modal opens, and a bad control type is one sentence. The
modal's prompt flags beat the member's saved /settings (the precedence /imagine shares)."""

from __future__ import annotations

from bot.policy.visibility import NOT_READABLE
from inference.infotext import infotext_from_png, parse_infotext
from tests.e2e.helpers import (
    RENDER_TIMEOUT_S,
    StartEasel,
    has_picture,
    job_id_of,
    modal_fields,
    reply_to,
)
from tests.e2e.test_controlnet import edges_png
from tests.e2e.test_edits import inputs_of
from tests.fake_discord import FakeDiscord, Overwrite
from tests.fake_discord.payloads import PERMISSION_READ_MESSAGE_HISTORY


async def test_use_as_control_renders_the_picture_as_the_members_control(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    # Visible to everyone, but without Read Message History.
    live_only = fake.add_text_channel(
        "live", overwrites=[Overwrite(fake.guild_id, deny=PERMISSION_READ_MESSAGE_HISTORY)]
    )
    unreadable = await fake.post_user_message(
        "now", user=fake.owner_id, channel=live_only, attachments=[("e.png", edges_png())]
    )
    posted = await fake.post_user_message(
        "edges", user=fake.owner_id, attachments=[("edges.png", edges_png())]
    )
    async with start_easel() as bot:
        settings = {"steps": 40, "cfg": 9.0, "sampler": "Euler", "size": "128x96"}
        await reply_to(fake, "settings", settings)

        refused = await fake.invoke_message_command("Use as control", unreadable)
        reply = await refused.wait_for_original(lambda m: not m.is_loading)
        assert reply.is_ephemeral and NOT_READABLE in reply.content and refused.modal is None

        opened = await fake.invoke_message_command("Use as control", posted)
        fields = modal_fields(await opened.wait_for_modal())
        prompt_id = fields["Prompt (inline flags such as --ar work)"][0]
        type_id, default_type = fields["Control type"]
        weight_id = fields["Control weight (0 to 2)"][0]
        assert default_type == "canny"
        values = {prompt_id: "a ring --steps 2 --cfg 4 --ar 1:1", weight_id: "0.8"}
        bad = await fake.submit_modal(opened, {**values, type_id: "sketch"})
        told = await bad.wait_for_original(lambda m: not m.is_loading)
        assert told.is_ephemeral and "Unknown control type 'sketch'" in told.content
        assert bot.queue.queued_count() == 0 and inputs_of(bot.settings) == []

        handle = await fake.submit_modal(opened, {**values, type_id: "Canny "})
        result = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        infotext = infotext_from_png(result.attachments[0].data)
        assert infotext is not None
        prompt, _, params = parse_infotext(infotext)
        control = str(params["ControlNet 0"])
        assert control.startswith("Module: canny, Model: tiny-controlnet [")
        assert "Weight: 0.8" in control
        assert prompt == "a ring"
        # Typed flags beat the saved /settings; what the flags leave out comes from them.
        assert (params["Steps"], params["CFG scale"], params["Size"]) == (2, 4.0, "64x64")
        assert params["Sampler"] == "Euler"
        job = await bot.services.history.job(job_id_of(result))
        assert job is not None and job.user_id == fake.user_id  # charged to the member
