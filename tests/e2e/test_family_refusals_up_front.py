"""What a model's family cannot take (fast mode, clip skip or --tile on Flux, a refiner after
SD 1.5, a refiner named as the model) is refused privately before anything is queued, in the
engine's own sentence, the family read from the model's header: not posted in the channel
after a wait in the queue and a load. Through the fake Discord with tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from bot.presets import Scope
from bot.settings import Settings
from inference.tiny import write_tiny_checkpoint, write_tiny_model
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    has_picture,
    images_today,
    reply_to,
)
from tests.e2e.test_combined_edits import answered
from tests.fake_discord import FakeDiscord


@pytest.fixture(scope="module")
def family_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Written once for the file: no test changes a model, and the five cost seconds."""
    models = tmp_path_factory.mktemp("family-models")
    write_tiny_model(models / "my-flux", family="flux")
    write_tiny_model(models / "sd", family="sd15")
    write_tiny_model(models / "xl", family="sdxl")
    write_tiny_checkpoint(
        models / "Stable-diffusion" / "refiner.safetensors", family="sdxl-refiner", seed=3
    )
    # SDXL tensors whose metadata (a merge's stale kohya field) says SD 1.5: the engine loads
    # it by its tensors, as SDXL.
    lying = write_tiny_checkpoint(models / "Stable-diffusion" / "xlie.safetensors", family="sdxl")
    save_file(load_file(lying), lying, metadata={"ss_base_model_version": "sd_v1"})
    return models


@pytest.fixture
def easel_settings_for_test(
    fake_discord: FakeDiscord, tmp_path: Path, family_models_dir: Path
) -> Settings:
    return easel_settings(
        fake_discord, tmp_path / "data", family_models_dir, tmp_path / "wildcards"
    )


FLUX = "does not work with Flux dev models here"
FLUX_SAMPLER = (
    "The DPM++ SDE sampler does not work with Flux dev models; choose one of: Euler, "
    "DPM++ 2M, UniPC."
)


async def test_what_a_family_cannot_take_is_refused_before_it_is_queued(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel() as bot:
        for options, expected in (
            ({"model": "my-flux", "fast": True}, f"Fast mode (a UNet feature cache) {FLUX}."),
            (
                {"prompt": "a cat --fast --model my-flux"},
                f"Fast mode (a UNet feature cache) {FLUX}.",
            ),
            ({"model": "my-flux", "clip_skip": 3}, f"Clip skip {FLUX}."),
            ({"model": "my-flux", "sampler": "DPM++ SDE"}, FLUX_SAMPLER),
            ({"prompt": "a cat --tile", "model": "my-flux"}, f"Seamless tiling (--tile) {FLUX}."),
            ({"model": "my-flux", "refiner": "refiner"}, f"The SDXL refiner {FLUX}."),
            (
                {"model": "sd", "refiner": "refiner"},
                "A refiner finishes SDXL pictures; sd is not an SDXL base model: choose an "
                "SDXL model or no refiner.",
            ),
            (
                {"prompt": "a cat --model refiner"},
                "Refiner is an SDXL refiner: it finishes pictures an SDXL model starts (name "
                "it as the refiner); choose another model.",
            ),
        ):
            handle = await fake_discord.invoke_command(
                "imagine", {"prompt": "a cat", **QUICK, **options}
            )
            reply = await handle.wait_for_original(lambda m: not m.is_loading)
            assert reply.is_ephemeral and reply.content == expected, (options, reply.content)
        assert bot.queue.queued_count() == 0
        assert await images_today(bot.services, fake_discord.user_id, fake_discord.guild_id) == 0


async def test_a_model_the_server_leaves_out_is_refused_without_its_family(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """The one "not installed or not allowed here" sentence, never what the family of a model
    the server's admins left out cannot take: a member cannot probe for hidden models."""
    owner = fake_discord.owner_id
    async with start_easel() as bot:
        await reply_to(
            fake_discord, "easel-admin model", {"action": "add", "name": "sd"}, user=owner
        )
        left_out = [
            ({"prompt": "a cat --model refiner"}, "The model `refiner`"),
            ({"model": "sd", "refiner": "refiner"}, "The refiner `refiner`"),
        ]
        for options, refused in left_out:
            reply = await reply_to(fake_discord, "imagine", {"prompt": "a cat", **QUICK, **options})
            assert reply.is_ephemeral, (options, reply.content)
            assert reply.content.startswith(f"{refused} is not installed or not allowed here"), (
                options,
                reply.content,
            )
        # The refiner allowed too: the base model left out is what is refused.
        await reply_to(
            fake_discord, "easel-admin model", {"action": "add", "name": "refiner"}, user=owner
        )
        for options in (
            {"model": "my-flux", "fast": True},
            {"model": "my-flux", "refiner": "refiner"},
            {"model": "my-flux", "sampler": "DPM++ SDE"},
        ):
            reply = await reply_to(fake_discord, "imagine", {"prompt": "a cat", **QUICK, **options})
            assert reply.is_ephemeral and reply.content.startswith(
                "The model `my-flux` is not installed or not allowed here"
            ), (options, reply.content)
        assert bot.queue.queued_count() == 0


async def test_a_family_is_told_by_the_tensors_the_engine_loads_by(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A file whose metadata names another base model is not refused up front for what that
    family cannot take: the engine, which loads it by its tensors (SDXL), renders it."""
    async with start_easel():
        handle = await fake_discord.invoke_command(
            "imagine", {"prompt": "a cat", **QUICK, "model": "xlie", "refiner": "refiner"}
        )
        taken = await handle.wait_for_original(lambda m: not m.is_loading)
        assert not taken.is_ephemeral, taken.content
        done = await handle.wait_for_original(lambda m: bool(m.attachments), timeout=300)
        assert not done.is_ephemeral and len(done.attachments) == 1, done.content


async def test_a_preset_keeps_no_sampler_its_model_cannot_take(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel() as bot:
        refused = await reply_to(
            fake_discord,
            "presets save",
            {"name": "f", "model": "my-flux", "sampler": "DPM++ SDE"},
        )
        assert refused.is_ephemeral and refused.content == FLUX_SAMPLER, refused.content
        assert await bot.services.presets.of(Scope.MEMBER, fake_discord.user_id) == []
        saved = await reply_to(
            fake_discord, "presets save", {"name": "f", "model": "my-flux", "sampler": "UniPC"}
        )
        assert saved.content.startswith("Saved your preset **f**"), saved.content


async def test_a_saved_sampler_the_model_cannot_take_is_refused_naming_where_it_is_kept(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A sampler or clip skip saved without a model (/settings, a preset) and used with Flux:
    the member typed none, so the refusal says where it is kept, as any saved value's does.
    (The presets are saved under an SD default, which takes them.)"""
    async with start_easel() as bot:
        await reply_to(
            fake_discord, "easel-admin default-model", {"name": "sd"}, user=fake_discord.owner_id
        )
        await reply_to(fake_discord, "settings", {"sampler": "DPM++ SDE"})
        await reply_to(fake_discord, "presets save", {"name": "s", "sampler": "DPM++ SDE"})
        cases = [(FLUX_SAMPLER, "sampler", "s")]
        # A saved clip skip is named as the sampler is (it was refused without where it is kept).
        cases.append((f"Clip skip {FLUX}.", "clip_skip", "c"))
        for refusal, option, preset in cases:
            if option == "clip_skip":
                await reply_to(fake_discord, "settings", {"reset": True})
                await reply_to(fake_discord, "settings", {"clip_skip": 2})
                await reply_to(fake_discord, "presets save", {"name": "c", "clip_skip": 3})
            what = option.replace("_", " ")
            for options, kept in (
                (
                    {"model": "my-flux"},
                    f"That {what} comes from your /settings: change it with `/settings "
                    f"{option}:`, or clear them with `/settings reset:True`.",
                ),
                (
                    {"prompt": f"a cat --preset {preset}", "model": "my-flux"},
                    f"That {what} comes from your preset `{preset}`: save it again with "
                    f"`/presets save name:{preset} {option}:`, or delete it with "
                    "`/presets delete`.",
                ),
            ):
                reply = await reply_to(
                    fake_discord, "imagine", {"prompt": "a cat", **QUICK, **options}
                )
                assert reply.is_ephemeral, (options, reply.content)
                assert reply.content == f"{refusal} {kept}", (options, reply.content)
        typed = await reply_to(
            fake_discord,
            "imagine",
            {"prompt": "a cat", **QUICK, "model": "my-flux", "clip_skip": 2},
        )
        assert typed.content == f"Clip skip {FLUX}.", typed.content
        assert bot.queue.queued_count() == 0


async def test_a_preset_without_a_model_is_saved_with_a_note_of_what_the_default_refuses(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A preset is the member's on every server. One naming a Flux model with a clip skip or a
    sampler Flux lacks is refused on saving, in the render's sentence; one naming no model is
    saved, with a note of what this server's default (Flux) refuses of it, as it does when
    the preset is used here; with an SD default there is no note."""
    fake = fake_discord
    owner = fake.owner_id
    async with start_easel() as bot:
        await reply_to(fake, "easel-admin default-model", {"name": "my-flux"}, user=owner)
        for settings, expected in (
            ({"model": "my-flux", "clip_skip": 2}, f"Clip skip {FLUX}."),
            ({"model": "my-flux", "sampler": "DPM++ SDE"}, FLUX_SAMPLER),
        ):
            refused = await reply_to(fake, "presets save", {"name": "p", **settings})
            assert refused.is_ephemeral and refused.content == expected, refused.content
        assert await bot.services.presets.of(Scope.MEMBER, fake.user_id) == []
        for name, settings, refusal in (
            ("skip", {"clip_skip": 2}, f"Clip skip {FLUX}."),
            ("dpm", {"sampler": "DPM++ SDE"}, FLUX_SAMPLER),
        ):
            saved = await reply_to(fake, "presets save", {"name": name, **settings})
            assert saved.content.startswith(f"Saved your preset **{name}**"), saved.content
            assert saved.content.endswith(
                "\nNote: naming no model, it renders here with this server's default, which "
                f"refuses it: {refusal} Add a `--model` that takes it when you use it here."
            ), saved.content
            used = await reply_to(
                fake, "imagine", {"prompt": f"a cat --preset {name}", "size": "64x64"}
            )
            assert used.is_ephemeral and used.content.startswith(refusal), used.content
        assert bot.queue.queued_count() == 0
        assert len(await bot.services.presets.of(Scope.MEMBER, fake.user_id)) == 2
        await reply_to(fake, "easel-admin default-model", {"name": "sd"}, user=owner)
        saved = await reply_to(
            fake, "presets save", {"name": "p", "clip_skip": 2, "sampler": "DPM++ SDE"}
        )
        assert saved.content.startswith("Saved your preset **p**"), saved.content
        assert "Note" not in saved.content, saved.content


async def test_settings_tell_of_a_sampler_or_clip_skip_this_servers_default_refuses(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """/settings name no model and are the member's on every server: a clip skip or sampler
    this server's default (Flux) refuses is saved with a note saying so, in the render's
    sentence, where it was told only when used. A change that gives neither, or an SD
    default, has no note."""
    fake = fake_discord
    owner = fake.owner_id
    async with start_easel() as bot:
        await reply_to(fake, "easel-admin default-model", {"name": "my-flux"}, user=owner)
        for settings, refusal in (
            ({"clip_skip": 2}, f"Clip skip {FLUX}."),
            ({"sampler": "DPM++ SDE"}, FLUX_SAMPLER),
        ):
            saved = await reply_to(fake, "settings", settings)
            assert saved.content.startswith("Saved."), saved.content
            assert saved.content.endswith(
                "\nNote: naming no model, it renders here with this server's default, which "
                f"refuses it: {refusal} Add a `--model` that takes it when you use it here."
            ), saved.content
        kept = await bot.services.member_settings.get(fake.user_id)
        assert (kept.clip_skip, kept.sampler) == (2, "DPM++ SDE")
        unrelated = await reply_to(fake, "settings", {"steps": 3})
        assert "Note" not in unrelated.content, unrelated.content
        await reply_to(fake, "easel-admin default-model", {"name": "sd"}, user=owner)
        on_sd = await reply_to(fake, "settings", {"clip_skip": 2, "sampler": "DPM++ SDE"})
        assert on_sd.content.startswith("Saved.") and "Note" not in on_sd.content, on_sd.content


async def test_a_compare_is_checked_by_the_samplers_and_models_its_cells_render(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """/compare checks each cell's model and sampler against its family, as /imagine checks
    its one. With a /settings sampler Flux lacks: a sampler axis renders it in no cell, so a
    grid of samplers Flux takes renders on Flux, and one with a sampler Flux lacks is refused
    in the typed sampler's sentence; a model axis whose Flux cell would render the saved
    sampler is refused naming /settings. Nothing refused is queued or charged."""
    fake = fake_discord
    owner = fake.owner_id
    from_settings = (
        "That sampler comes from your /settings: change it with `/settings sampler:`, "
        "or clear them with `/settings reset:True`."
    )
    async with start_easel() as bot:
        await reply_to(fake, "easel-admin default-model", {"name": "sd"}, user=owner)
        await reply_to(fake, "settings", {"sampler": "DPM++ SDE"})
        for options, expected in (
            ({"x": "sampler", "x_values": "Euler, DPM++ SDE", "model": "my-flux"}, FLUX_SAMPLER),
            ({"x": "model", "x_values": "sd, my-flux"}, f"{FLUX_SAMPLER} {from_settings}"),
        ):
            handle = await fake.invoke_command("compare", {"prompt": "a cat", **QUICK, **options})
            reply = await handle.wait_for_original(
                lambda m: not m.is_loading, timeout=RENDER_TIMEOUT_S
            )
            assert reply.is_ephemeral, (options, reply.summary())
            assert reply.content == expected, (options, reply.content)
        assert bot.queue.queued_count() == 0
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 0
        options = {"x": "sampler", "x_values": "Euler, UniPC", "model": "my-flux"}
        handle = await fake.invoke_command("compare", {"prompt": "a cat", **QUICK, **options})
        grid = await handle.wait_for_original(answered, timeout=RENDER_TIMEOUT_S)
        assert has_picture(grid) and not grid.is_ephemeral, grid.summary()
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 2
