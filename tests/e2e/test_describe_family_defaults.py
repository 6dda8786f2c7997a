"""/describe's buttons build their request as /imagine does: the model's family fills what
nobody chose, so a suggestion rendered on a Flux schnell server takes schnell's 4 steps, CFG 1
and Euler, not the server's 20 steps, CFG 7 and Euler a; and a /settings sampler schnell
refuses is refused naming where it is kept, as /imagine's is."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import build
from bot.settings import Settings
from inference.describe import Captioner
from inference.infotext import infotext_from_png, parse_infotext
from inference.tiny import write_tiny_captioner, write_tiny_model
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import RENDER_TIMEOUT_S, has_picture, reply_to
from tests.e2e.test_describe import picture
from tests.fake_discord import FakeDiscord
from tests.fake_discord.fixtures import running_bot


def on_schnell_with_a_captioner(fake: FakeDiscord, tmp_path: Path) -> Settings:
    """A server whose default model is a tiny Flux schnell, with a tiny captioner."""
    models = tmp_path / "models"
    write_tiny_model(models / "schnell", family="flux-schnell")
    captioner_dir = write_tiny_captioner(tmp_path / "captioner")
    return easel_settings(fake, tmp_path / "data", models).model_copy(
        update={"captioner_dir": captioner_dir, "default_model": "schnell"}
    )


async def test_a_describe_suggestion_takes_the_default_model_s_family_defaults(
    fake_discord: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its prompt's flags are read as /imagine's are; a --repeat is refused, as /compare's:
    the button runs one /imagine."""
    fake = fake_discord
    settings = on_schnell_with_a_captioner(fake, tmp_path)
    assert settings.captioner_dir is not None
    captioner = Captioner(settings.captioner_dir)
    expected = await captioner.describe(picture())
    captioner.close()
    async with running_bot(fake, build(settings)):
        handle = await fake.invoke_command("describe", {}, attachments={"image": picture()})
        described = await handle.wait_for_original(lambda m: "**1.**" in m.content)
        click = await fake.click(described, label="1")
        result = await click.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        infotext = infotext_from_png(result.attachments[0].data)
        assert infotext is not None and infotext.splitlines()[0] == expected[0]
        params = parse_infotext(infotext)[2]
        assert (params["Model"], params["Steps"], params["Sampler"]) == ("schnell", 4, "Euler")
        monkeypatch.setattr("cogs.describe.suggestion_in", lambda content, number: "a --repeat 2")
        click = await fake.click(described, label="1")
        refused = await click.wait_for_original(
            lambda m: not m.is_loading, timeout=RENDER_TIMEOUT_S
        )
        assert refused.is_ephemeral and "leave out --repeat" in refused.content, refused.summary()


async def test_a_describe_suggestion_refusing_a_settings_sampler_names_settings(
    fake_discord: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sampler saved with /settings that schnell does not take: the suggestion's button is
    refused privately, naming /settings and how to change it, and nothing is queued. So is
    one that is no sampler (kept from before /settings checked it), as /imagine's is."""
    fake = fake_discord
    bot = build(on_schnell_with_a_captioner(fake, tmp_path))
    async with running_bot(fake, bot):
        await reply_to(fake, "settings", {"sampler": "DPM++ SDE"})
        handle = await fake.invoke_command("describe", {}, attachments={"image": picture()})
        described = await handle.wait_for_original(
            lambda m: "**1.**" in m.content, timeout=RENDER_TIMEOUT_S
        )
        click = await fake.click(described, label="1")
        refused = await click.wait_for_original(
            lambda m: not m.is_loading, timeout=RENDER_TIMEOUT_S
        )
        assert refused.is_ephemeral, refused.summary()
        assert "does not work with Flux schnell models" in refused.content, refused.content
        assert "That sampler comes from your /settings" in refused.content, refused.content
        assert "`/settings sampler:`" in refused.content, refused.content
        monkeypatch.setattr("bot.policy.member_settings._check_values", lambda settings: None)
        await bot.services.member_settings.update(fake.user_id, {"sampler": "Eular a"})
        click = await fake.click(described, label="1")
        refused = await click.wait_for_original(
            lambda m: not m.is_loading, timeout=RENDER_TIMEOUT_S
        )
        assert refused.content.startswith("Unknown sampler 'Eular a'"), refused.content
        assert "That sampler comes from your /settings" in refused.content, refused.content
        assert bot.queue.queued_count() == 0
