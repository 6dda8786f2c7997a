"""/describe through the fake Discord with a tiny random BLIP captioner: suggestions from the
model, a button per suggestion that renders it for the clicker, nothing charged for describing."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from bot.app import build
from bot.jobs.accounting import Member
from bot.policy.quota import Period
from bot.policy.visibility import NO_MESSAGES_HERE
from inference.describe import Captioner
from inference.infotext import infotext_from_png
from inference.tiny import write_tiny_captioner
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import RENDER_TIMEOUT_S, StartEasel, has_picture, reply_to
from tests.fake_discord import FakeDiscord, Overwrite
from tests.fake_discord.fixtures import running_bot
from tests.fake_discord.payloads import PERMISSION_ATTACH_FILES, PERMISSION_SEND_MESSAGES


def picture(size: tuple[int, int] = (96, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_describe_suggests_prompts_and_a_button_renders_one(
    fake_discord: FakeDiscord, tmp_path: Path, tiny_models_dir: Path
) -> None:
    fake = fake_discord
    captioner_dir = write_tiny_captioner(tmp_path / "captioner")
    captioner = Captioner(captioner_dir)
    expected = await captioner.describe(picture())
    captioner.close()
    settings = easel_settings(fake, tmp_path / "data", tiny_models_dir).model_copy(
        update={"captioner_dir": captioner_dir}
    )
    bot = build(settings)
    async with running_bot(fake, bot):
        handle = await fake.invoke_command("describe", {}, attachments={"image": picture()})
        described = await handle.wait_for_original(lambda m: "**1.**" in m.content)
        lines = described.content.splitlines()[1:]
        assert lines == [f"**{n}.** {caption}" for n, caption in enumerate(expected, start=1)]
        labels = [c["label"] for row in described.components for c in row["components"]]
        assert labels == [str(n) for n in range(1, len(expected) + 1)]

        click = await fake.click(described, label=str(len(expected)))
        result = await click.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        infotext = infotext_from_png(result.attachments[0].data)
        assert infotext is not None and infotext.splitlines()[0] == expected[-1]
        report = await bot.services.quota_status.report(Member(fake.user_id, fake.guild_id))
        # The render is charged, the description is not.
        assert next(p.images for p in report.periods if p.period is Period.DAY) == 1

        # A picture no job could read is refused before the captioner sees it, as /vary's is.
        strip = await reply_to(
            fake, "describe", {}, attachments={"image": ("strip.png", picture((4104, 8)))}
        )
        assert strip.is_ephemeral
        assert strip.content.endswith(
            "'strip.png' is 4104x8 pixels; each side must be between 8 and 4096 pixels."
        )

        # Its suggestions are text posted for all to see: where the member may not send
        # messages they are refused, naming what they lack; Attach Files is not asked.
        rules = fake.add_text_channel(
            "rules", overwrites=[Overwrite(fake.guild_id, deny=PERMISSION_SEND_MESSAGES)]
        )
        read_only = await reply_to(
            fake, "describe", {}, attachments={"image": picture()}, channel=rules
        )
        assert read_only.is_ephemeral
        assert read_only.content == NO_MESSAGES_HERE.format("Send Messages")
        fake.set_overwrite(
            rules, fake.user_id, allow=PERMISSION_SEND_MESSAGES, deny=PERMISSION_ATTACH_FILES
        )
        handle = await fake.invoke_command(
            "describe", {}, attachments={"image": picture()}, channel=rules
        )
        await handle.wait_for_original(lambda m: "**1.**" in m.content)

        # Describing is Easel's work too: only in the channels the server enabled.
        art = fake.add_text_channel("art")
        await reply_to(
            fake, "easel-admin channel", {"action": "add", "channel": art}, user=fake.owner_id
        )
        refused = await fake.invoke_command("describe", {}, attachments={"image": picture()})
        message = await refused.wait_for_original(lambda m: "not enabled" in m.content)
        assert message.is_ephemeral and f"<#{art}>" in message.content


async def test_describe_without_a_captioner_says_so(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel():
        answer = await reply_to(fake_discord, "describe", {}, attachments={"image": picture()})
        assert answer.is_ephemeral
        assert answer.content.endswith(
            "/describe is not set up on this bot: its operator sets EASEL_CAPTIONER_DIR to a "
            "captioning model folder."
        )
