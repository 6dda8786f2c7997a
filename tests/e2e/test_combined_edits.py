"""The result buttons on results of other buttons (an upscale, a picked picture, a --relax
grid, a tiled or clip-skip picture) keep the picture's settings, charge what they render and
refund a failed render (AUD20's findings), through the fake Discord and the tiny model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NoReturn

import pytest
from PIL import Image

from bot.app import EaselBot, build
from inference.engine import Engine
from inference.infotext import InfotextValue, infotext_from_png, parse_infotext, png_with_infotext
from inference.tiny import write_tiny_model, write_tiny_vae
from inference.types import RenderFailed
from tests.conftest import ErrorLogs
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import (
    RENDER_TIMEOUT_S,
    StartEasel,
    images_today,
    imagine,
    job_id_of,
    limit_daily_images,
    modal_fields,
    reply_to,
    size_of,
)
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.fake_discord.fixtures import running_bot
from tests.fake_discord.rules import walk_components
from tests.support.pictures import has_picture

SETTINGS_SHOWN = ("Model", "Steps", "CFG scale", "Sampler", "Schedule type", "Fast")


def params_of(message: StoredMessage) -> dict[str, InfotextValue]:
    """The web UI parameters of the message's first picture."""
    text = infotext_from_png(message.attachments[0].data)
    assert text is not None, message.summary()
    return parse_infotext(text)[2]


def shown(message: StoredMessage) -> dict[str, InfotextValue | None]:
    params = params_of(message)
    return {key: params.get(key) for key in SETTINGS_SHOWN}


def answered(message: StoredMessage) -> bool:
    """A result posted, a failure posted, or a private answer given."""
    return (
        has_picture(message)
        or "❌" in message.content
        or (message.is_ephemeral and not message.is_loading)
    )


async def clicked(fake: FakeDiscord, message: StoredMessage, custom_id: str) -> StoredMessage:
    handle = await fake.click(message, custom_id)
    return await handle.wait_for_original(answered, timeout=RENDER_TIMEOUT_S)


async def pressed(fake: FakeDiscord, message: StoredMessage, label: str) -> StoredMessage:
    handle = await fake.click(message, label=label)
    return await handle.wait_for_original(answered, timeout=RENDER_TIMEOUT_S)


def custom_id(message: StoredMessage, prefix: str) -> str:
    [found] = [c for c in message.custom_ids if c.startswith(prefix)]
    return found


def as_posted_before(message: StoredMessage, now: str, then: str) -> None:
    """Make the fake hold ``message`` as Easel posted it before this change: its button
    ``now`` carried the custom id ``then`` (Discord keeps a posted message's custom ids)."""
    [button] = [c for c in walk_components(message.components) if c.get("custom_id") == now]
    button["custom_id"] = then


async def charged(bot: EaselBot, fake: FakeDiscord) -> int:
    """The pictures charged to the fake's member today."""
    return await images_today(bot.services, fake.user_id, fake.guild_id)


def failing_renders(monkeypatch: pytest.MonkeyPatch, error_logs: ErrorLogs) -> None:
    """Every render from now on fails, as an unreadable model file makes it."""

    def unreadable(*_args: object, **_kwargs: object) -> NoReturn:
        raise RenderFailed("the model file could not be read")

    monkeypatch.setattr(Engine, "render", unreadable)
    monkeypatch.setattr(Engine, "render_batch", unreadable)
    error_logs.expect("the model file could not be read")


@pytest.fixture
def two_models(tmp_path: Path, tiny_models_dir: Path) -> Path:
    """``other`` (the default model: it sorts first) and ``tiny``, the upscalers and a VAE."""
    models = tmp_path / "models"
    models.mkdir()
    for name in ("tiny", "other"):
        (models / name).symlink_to(tiny_models_dir / "tiny", target_is_directory=True)
    (models / "upscalers").symlink_to(tiny_models_dir / "upscalers", target_is_directory=True)
    write_tiny_vae(models / "vae" / "warm.safetensors")
    return models


@pytest.fixture
def start_with_two_models(
    fake_discord: FakeDiscord, tmp_path: Path, two_models: Path
) -> StartEasel:
    @asynccontextmanager
    async def start() -> AsyncIterator[EaselBot]:
        settings = easel_settings(fake_discord, tmp_path / "data", two_models, tmp_path / "wc")
        bot = build(settings)
        async with running_bot(fake_discord, bot):
            yield bot

    return start


async def test_buttons_under_an_upscale_keep_the_pictures_settings(
    fake_discord: FakeDiscord,
    start_with_two_models: StartEasel,
    monkeypatch: pytest.MonkeyPatch,
    error_logs: ErrorLogs,
) -> None:
    fake = fake_discord
    async with start_with_two_models() as bot:
        made = await imagine(
            fake,
            "a red fox --fast",
            seed=5,
            steps=6,
            cfg=4.0,
            model="tiny",
            sampler="DPM++ 2M Karras",
        )
        picture = shown(made)
        assert picture["Model"] == "tiny" and picture["Fast"], picture
        upscaled = await pressed(fake, made, "Upscale (2x)")
        assert shown(upscaled) == picture  # the upscale carries the picture's text over
        job = job_id_of(upscaled)
        for button in (
            "vary:{}:0:subtle",
            "expand:{}:0:zoom2",
            "expand:{}:0:left",
        ):
            before = await charged(bot, fake)
            edited = await clicked(fake, upscaled, "easel:" + button.format(job))
            assert has_picture(edited), edited.summary()
            # Not the server's default model at 20 steps, CFG 7, Euler a and no fast mode.
            assert shown(edited) == picture, button
            assert await charged(bot, fake) - before == 1, button
        command = await fake.invoke_command(
            "vary", {"message": upscaled.jump_url, "strength": "subtle"}
        )
        by_command = await command.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert shown(by_command) == picture  # the button does what /vary of the post does

        # Fix faces takes the same path; the tiny picture has no face, so its job fails,
        # refunded, and what it was asked to render is read from its journaled request.
        error_logs.expect("no face found")
        before = await charged(bot, fake)
        faceless = await clicked(fake, upscaled, f"easel:faces:{job}:0:fix")
        assert "❌ no face found" in faceless.content and await charged(bot, fake) == before
        faces_job = job_id_of(faceless)
        asked = await bot.queue.request_of(faces_job)
        assert asked is not None and asked.mode == "faces"
        assert (asked.model, asked.steps, asked.cfg_scale, asked.fast) == ("tiny", 6, 4.0, True)

        failing_renders(monkeypatch, error_logs)
        before = await charged(bot, fake)
        failed = await pressed(fake, upscaled, "Vary (Strong)")
        assert "❌" in failed.content and await charged(bot, fake) == before  # refunded


async def test_reroll_under_a_picked_picture_makes_that_picture_again(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    monkeypatch: pytest.MonkeyPatch,
    error_logs: ErrorLogs,
) -> None:
    fake = fake_discord
    async with start_easel() as bot:
        grid = await imagine(fake, "four foxes", seed=100, count=4)
        job = job_id_of(grid)
        assert custom_id(grid, "easel:reroll:") == f"easel:reroll:{job}"  # the grid's: unchanged
        picked = await pressed(fake, grid, "U3")
        reroll_id = custom_id(picked, "easel:reroll:")
        assert reroll_id == f"easel:reroll:{job}:2"
        assert custom_id(picked, "easel:remix:") == f"easel:remix:{job}:2"  # as its Remix
        before = await charged(bot, fake)
        again = await clicked(fake, picked, reroll_id)
        assert len(again.attachments) == 1 and size_of(again) == (64, 64)
        assert (
            "Grid" not in params_of(again) and params_of(again)["Seed"] != params_of(picked)["Seed"]
        )
        assert await charged(bot, fake) - before == 1

        # A 🔄 posted under a U3 before this change named no picture: the whole grid again.
        as_posted_before(picked, reroll_id, f"easel:reroll:{job}")
        before = await charged(bot, fake)
        whole = await clicked(fake, picked, f"easel:reroll:{job}")
        assert params_of(whole)["Grid"] == "4 images" and await charged(bot, fake) - before == 4

        failing_renders(monkeypatch, error_logs)
        before = await charged(bot, fake)
        failed = await clicked(fake, await pressed(fake, grid, "U1"), f"easel:reroll:{job}:0")
        assert "❌" in failed.content and await charged(bot, fake) == before  # refunded


async def test_reroll_and_remix_are_not_offered_under_an_upscale_and_refuse_one(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    async with start_easel() as bot:
        made = await imagine(fake, "a red fox", seed=5, steps=3)
        assert any(c.startswith("easel:reroll:") for c in made.custom_ids)
        upscaled = await pressed(fake, made, "Upscale (2x)")
        job = job_id_of(upscaled)
        for gone in ("easel:reroll:", "easel:remix:"):
            assert not any(c.startswith(gone) for c in upscaled.custom_ids), upscaled.custom_ids
        shown_again = await (await fake.invoke_command("show", {"job_id": job})).wait_for_original(
            has_picture, timeout=RENDER_TIMEOUT_S
        )
        assert not any(c.startswith("easel:reroll:") for c in shown_again.custom_ids)
        assert not any(c.startswith("easel:remix:") for c in shown_again.custom_ids)

        # Posted before this change, the upscale carried both: each now refuses, charging nothing.
        as_posted_before(upscaled, f"easel:vary:{job}:0:subtle", f"easel:reroll:{job}")
        remix_then = f"easel:remix:{job}:0"
        as_posted_before(upscaled, f"easel:dm:{job}:0", remix_then)
        before = await charged(bot, fake)
        for old, button in ((f"easel:reroll:{job}", "Reroll (🔄)"), (remix_then, "Remix")):
            refused = await clicked(fake, upscaled, old)
            assert refused.is_ephemeral and not refused.attachments, refused.summary()
            assert f"{button} does nothing new under an upscale" in refused.content
        assert await charged(bot, fake) == before


async def test_edits_keep_clip_skip_tiling_the_vae_and_relax(
    fake_discord: FakeDiscord,
    start_with_two_models: StartEasel,
    monkeypatch: pytest.MonkeyPatch,
    error_logs: ErrorLogs,
) -> None:
    fake = fake_discord
    async with start_with_two_models() as bot:
        made = await imagine(fake, "a fox --tile", seed=3, clip_skip=2, model="tiny")
        assert params_of(made)["Clip skip"] == 2 and params_of(made)["Tiling"] == "True"
        for label in ("Vary (Subtle)", "Zoom Out (2x)"):
            edited = params_of(await pressed(fake, made, label))
            assert (edited.get("Clip skip"), edited.get("Tiling")) == (2, "True"), label
        command = await fake.invoke_command(
            "vary", {"message": made.jump_url, "strength": "subtle"}
        )
        varied = params_of(await command.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S))
        assert (varied.get("Clip skip"), varied.get("Tiling")) == (2, "True")

        pasted = await fake.invoke_command(
            "use-settings",
            {
                "infotext": "a fox\nSteps: 2, Sampler: Euler a, CFG scale: 7, Seed: 4, "
                "Size: 64x64, Model: tiny, VAE: warm.safetensors, RNG: CPU"
            },
        )
        with_vae = await pasted.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert params_of(with_vae)["VAE"] == "warm.safetensors"
        assert params_of(await pressed(fake, with_vae, "Vary (Subtle)")).get("VAE") == (
            "warm.safetensors"
        )
        command = await fake.invoke_command("vary", {"message": with_vae.jump_url})
        varied = params_of(await command.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S))
        assert varied.get("VAE") == "warm.safetensors"

        # A free --relax grid's V1 is free as its U1 and 🔄 are; a plain grid's is charged.
        before = await charged(bot, fake)
        relaxed = await imagine(fake, "a fox --relax", seed=3, count=2)
        v1 = await pressed(fake, relaxed, "V1")
        assert params_of(v1)["Relax"] == "True" and await charged(bot, fake) == before
        plain = await imagine(fake, "a fox", seed=3, count=2)
        before = await charged(bot, fake)
        await pressed(fake, plain, "V1")
        assert await charged(bot, fake) - before == 1

        failing_renders(monkeypatch, error_logs)
        before = await charged(bot, fake)
        failed = await pressed(fake, made, "Vary (Strong)")
        assert "❌" in failed.content and await charged(bot, fake) == before  # refunded


async def remixed(fake: FakeDiscord, message: StoredMessage, size_sampler: str) -> StoredMessage:
    """Remix ``message`` with its size and sampler field set to ``size_sampler``."""
    opened = await fake.click(message, label="Remix")
    fields = modal_fields(await opened.wait_for_modal())
    values = {cid: value for cid, value in fields.values()}
    [size_id] = [cid for label, (cid, _) in fields.items() if label.startswith("Size")]
    values[size_id] = size_sampler
    submitted = await fake.submit_modal(opened, values)
    return await submitted.wait_for_original(answered, timeout=RENDER_TIMEOUT_S)


async def test_remix_of_a_variation_refuses_an_aspect_ratio_naming_why(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    async with start_easel() as bot:
        varied = await pressed(fake, await imagine(fake, "a fox", seed=3), "Vary (Subtle)")
        before = await charged(bot, fake)
        refused = await remixed(fake, varied, "16:9, Euler a")
        assert refused.is_ephemeral and not refused.attachments, refused.summary()
        assert "Aspect ratio 16:9" in refused.content and "made from a picture" in refused.content
        assert await charged(bot, fake) == before
        sized = await remixed(fake, varied, "128x64, Euler a")  # a typed size is honoured
        assert size_of(sized) == (128, 64) and await charged(bot, fake) - before == 1


async def test_an_upscale_of_an_upscale_says_by_how_much_in_all(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    async with start_easel():
        made = await imagine(fake, "a fox", seed=3)
        once = await pressed(fake, made, "Upscale (2x)")
        twice = await pressed(fake, once, "Upscale (2x)")
        assert size_of(twice) == (256, 256)
        params = params_of(twice)
        assert params["Size"] == "64x64" and params["Postprocess upscale by"] == 4


def crafted_picture(parameters: str, sampler: str = "Euler a") -> bytes:
    """A member's upload whose web UI text says ``parameters`` under the prompt "a red fox"."""
    text = f"a red fox\nSteps: 2, Sampler: {sampler}, CFG scale: 1, Seed: 5, Size: 64x64, "
    return png_with_infotext(Image.new("RGB", (64, 64), "teal"), text + parameters)


async def varied_upload(fake: FakeDiscord, png: bytes) -> StoredMessage:
    command = await fake.invoke_command(
        "vary", {"strength": "subtle"}, attachments={"image": ("fox.png", png)}
    )
    return await command.wait_for_original(answered, timeout=RENDER_TIMEOUT_S)


async def test_a_pictures_model_and_vae_are_noted_without_quoting_its_text(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A note is posted in Easel's caption, read by no banned-word check: the picture's own
    values (a member's upload) are not quoted there, from /vary nor a button."""
    fake = fake_discord
    crafted = crafted_picture("Model: slur model, VAE: slur.safetensors")
    async with start_easel():
        await reply_to(
            fake, "easel-admin banned-word", {"action": "add", "word": "slur"}, user=fake.owner_id
        )
        varied = await varied_upload(fake, crafted)
        command = await fake.invoke_command(
            "upscale", {"scale": 2}, attachments={"image": ("fox.png", crafted)}
        )
        upscaled = await command.wait_for_original(answered, timeout=RENDER_TIMEOUT_S)
        under = await pressed(fake, upscaled, "Vary (Subtle)")
    for posted in (varied, under):
        assert has_picture(posted) and "slur" not in posted.content, posted.summary()
        assert "the picture's model is not available here" in posted.content
        assert "the picture's VAE is not installed here" in posted.content


@pytest.fixture
def flux_default(tmp_path: Path, tiny_models_dir: Path) -> Path:
    """A tiny Flux model as the default (it sorts first) and the tiny SD 1.5 one."""
    models = tmp_path / "models"
    models.mkdir()
    write_tiny_model(models / "aaa-flux", family="flux")
    (models / "tiny").symlink_to(tiny_models_dir / "tiny", target_is_directory=True)
    return models


async def test_a_clip_skip_picture_varies_on_a_flux_default_without_its_model(
    fake_discord: FakeDiscord, tmp_path: Path, flux_default: Path
) -> None:
    """The picture's model is not here, so the Flux default stands in: what the picture set
    for its own model (clip skip, tiling, pad conds) is left out with a note, as its VAE is,
    rather than refused by the render after the queue."""
    fake = fake_discord
    crafted = crafted_picture(
        "Model: animagine, Clip skip: 2, Tiling: True, Pad conds: True", sampler="Euler"
    )
    settings = easel_settings(fake, tmp_path / "data", flux_default, tmp_path / "wc")
    async with running_bot(fake, build(settings)):
        varied = await varied_upload(fake, crafted)
    assert has_picture(varied), varied.summary()
    assert "clip skip, tiling, pad conds left out" in varied.content
    assert "Clip skip" not in params_of(varied) and "Tiling" not in params_of(varied)


async def test_a_relax_picture_varies_free_with_the_quota_used_up(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A picture whose text says ``Relax: True`` makes a free --relax edit: a member whose
    pictures are used up may make it, as /use-settings of the same picture does."""
    fake = fake_discord
    crafted = crafted_picture("Relax: True")
    async with start_easel() as bot:
        await limit_daily_images(fake, 1)
        await imagine(fake, "a fox", seed=1)  # the one picture of the day
        before = await charged(bot, fake)
        for command, options in (
            ("vary", {"strength": "subtle"}),
            ("upscale", {"scale": 2, "mode": "creative"}),
        ):
            handle = await fake.invoke_command(
                command, options, attachments={"image": ("fox.png", crafted)}
            )
            made = await handle.wait_for_original(answered, timeout=RENDER_TIMEOUT_S)
            assert has_picture(made), (command, made.summary())
            assert params_of(made)["Relax"] == "True"
        assert await charged(bot, fake) == before
