"""/describe's buttons build their request as /imagine does: the model's family fills what
nobody chose, so a suggestion rendered on a Flux schnell server takes schnell's 4 steps, CFG 1
and Euler, not the server's 20 steps, CFG 7 and Euler a."""

from __future__ import annotations

from pathlib import Path

from bot.app import build
from inference.describe import Captioner
from inference.infotext import infotext_from_png, parse_infotext
from inference.tiny import write_tiny_captioner, write_tiny_model
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import RENDER_TIMEOUT_S, has_picture
from tests.e2e.test_describe import picture
from tests.fake_discord import FakeDiscord
from tests.fake_discord.fixtures import running_bot


async def test_a_describe_suggestion_takes_the_default_model_s_family_defaults(
    fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    fake = fake_discord
    models = tmp_path / "models"
    write_tiny_model(models / "schnell", family="flux-schnell")
    captioner_dir = write_tiny_captioner(tmp_path / "captioner")
    captioner = Captioner(captioner_dir)
    expected = await captioner.describe(picture())
    captioner.close()
    settings = easel_settings(fake, tmp_path / "data", models).model_copy(
        update={"captioner_dir": captioner_dir, "default_model": "schnell"}
    )
    async with running_bot(fake, build(settings)):
        handle = await fake.invoke_command("describe", {}, attachments={"image": picture()})
        described = await handle.wait_for_original(lambda m: "**1.**" in m.content)
        click = await fake.click(described, label="1")
        result = await click.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        infotext = infotext_from_png(result.attachments[0].data)
        assert infotext is not None and infotext.splitlines()[0] == expected[0]
        params = parse_infotext(infotext)[2]
        assert (params["Model"], params["Steps"], params["Sampler"]) == ("schnell", 4, "Euler")
