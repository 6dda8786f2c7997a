"""/models, /loras, /embeddings, /wildcards and /imagine's lora pick through the fake Discord:
paged, searchable, the server's model and LoRA rules applied, LoRA cards read from file metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from bot.app import build
from inference.infotext import infotext_from_png, png_with_infotext
from inference.tiny import write_tiny_embedding, write_tiny_lora
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, images_today, imagine, reply_to
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.fake_discord.fixtures import running_bot
from tests.support.pictures import has_picture

FILLERS = [f"filler-{index:02}" for index in range(10)]


@pytest.fixture
def models_dir(tmp_path: Path, tiny_models_dir: Path) -> Path:
    """Two models (``tiny`` and ``other``, the same tiny weights), a real tiny LoRA whose
    kohya metadata names its base model and tags, ten header-only LoRAs and an SDXL one, an
    embedding."""
    models = tmp_path / "models"
    models.mkdir()
    for name in ("tiny", "other"):
        (models / name).symlink_to(tiny_models_dir / "tiny", target_is_directory=True)
    tags = {"10_cat": {"red cat": 12, "whiskers": 7}, "2_misc": {"whiskers": 1, "sofa": 2}}
    write_tiny_lora(
        models / "lora" / "red-cat.safetensors",
        metadata={"ss_tag_frequency": json.dumps(tags), "ss_base_model_version": "sd_v1"},
    )
    # The lists read headers only: these files need no real weights.
    for name, base in [*((filler, "sd_v1") for filler in FILLERS), ("xl-style", "sdxl_base_v1-0")]:
        save_file(
            {"w": torch.zeros(1)},
            str(models / "lora" / f"{name}.safetensors"),
            {"ss_base_model_version": base},
        )
    write_tiny_embedding(models / "embeddings" / "bad-hands.safetensors")
    return models


def lines_of(message: StoredMessage) -> list[str]:
    [embed] = message.embeds
    return [line for line in embed["description"].split("\n\n")[0].splitlines() if line]


def footer_of(message: StoredMessage) -> str:
    return str(message.embeds[0]["footer"]["text"])


async def test_lists_page_search_and_follow_the_servers_rules(
    fake_discord: FakeDiscord, tmp_path: Path, models_dir: Path
) -> None:
    fake = fake_discord
    wildcards = tmp_path / "wildcards"
    wildcards.mkdir()
    (wildcards / "colors.txt").write_text("red\nblue\n")
    (wildcards / "animals.txt").write_text("cat\ndog\n")
    settings = easel_settings(fake, tmp_path / "data", models_dir, wildcards)
    async with running_bot(fake, build(settings)):
        loras = await reply_to(fake, "loras")
        assert loras.is_ephemeral
        assert loras.embeds[0]["title"] == "LoRAs (12)" and footer_of(loras) == "Page 1/2"
        first_page = lines_of(loras)
        assert len(first_page) == 10 and first_page[0].startswith("`<lora:filler-00:0.8>`")
        assert loras.component(label="◀")["disabled"] is True
        click = await fake.click(loras, label="▶")
        await click.wait_for_ack()
        assert click.response_type == 7  # the same message shows the next page
        assert footer_of(loras) == "Page 2/2"
        assert lines_of(loras) == [
            "`<lora:red-cat:0.8>` — base model SD 1.5; trigger words: red cat, whiskers, sofa",
            "`<lora:xl-style:0.8>` — base model SDXL",
        ]
        assert loras.component(label="▶")["disabled"] is True

        # Search looks at names, base models and trigger words.
        searched = await reply_to(fake, "loras", {"search": "sdxl"})
        assert lines_of(searched) == ["`<lora:xl-style:0.8>` — base model SDXL"]
        assert not searched.custom_ids  # one page: no buttons
        nothing = await reply_to(fake, "loras", {"search": "zebra"})
        assert lines_of(nothing) == ["Nothing matches “zebra”."]

        models = await reply_to(fake, "models")
        assert lines_of(models) == ["`other` — SD 1.5", "`tiny` — SD 1.5"]
        await reply_to(
            fake, "easel-admin model", {"action": "add", "name": "tiny"}, user=fake.owner_id
        )
        models = await reply_to(fake, "models")
        assert lines_of(models) == ["`tiny` — SD 1.5"]
        # Every model option's autocomplete follows the same list.
        for command, options in [("imagine", {"prompt": "a cat"}), ("presets", {"name": "p"})]:
            choices = await fake.autocomplete(
                command,
                {**options, "model": ""},
                focused="model",
                subcommand="save" if command == "presets" else (),
            )
            assert [choice["value"] for choice in choices] == ["tiny"], command
        # A picture made with a model the list leaves out since: its settings fall back to
        # the default, as for a model not installed (whether "other" exists is not told), so a
        # fast upscale, which uses no model, works.
        made_with_other = png_with_infotext(
            Image.new("RGB", (64, 64), "orange"), "a fox\nSteps: 2, Seed: 7, Model: other"
        )
        upscaled = await (
            await fake.invoke_command("upscale", attachments={"image": ("f.png", made_with_other)})
        ).wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert infotext_from_png(upscaled.attachments[0].data) is not None
        assert "model" not in upscaled.content  # no note: the upscale read no model

        embeddings = await reply_to(fake, "embeddings")
        assert lines_of(embeddings) == ["`bad-hands` — base model unknown"]
        listed = await reply_to(fake, "wildcards", {"search": "o"})
        assert lines_of(listed) == ["`__colors__`"]


async def test_imagine_picks_a_lora_by_its_trigger_words(
    fake_discord: FakeDiscord, tmp_path: Path, models_dir: Path
) -> None:
    fake = fake_discord
    async with running_bot(fake, build(easel_settings(fake, tmp_path / "data", models_dir))):
        choices = await fake.autocomplete(
            "imagine", {"prompt": "a cat", "lora": "whisk"}, focused="lora"
        )
        assert choices == [
            {
                "name": "red-cat — base model SD 1.5; trigger words: red cat, whiskers, sofa",
                "value": "red-cat",
            }
        ]
        # The tag goes before flags typed at the prompt's end, which must stay last.
        result = await imagine(fake, "a cat --cfg 6", lora="red-cat", seed=3)
        infotext = infotext_from_png(result.attachments[0].data)
        assert infotext is not None and infotext.startswith("a cat <lora:red-cat:0.8>\n")
        assert "CFG scale: 6," in infotext
        assert "Prompt warnings" not in infotext  # the LoRA was found and applied
        assert "red-cat" in infotext.splitlines()[-1]  # its hash is recorded
        unknown = await reply_to(
            fake, "imagine", {"prompt": "a cat", "lora": "nope", "steps": 2, "size": "64x64"}
        )
        assert unknown.is_ephemeral
        # The one refusal of what is not installed or not allowed here, naming what is.
        assert unknown.content.startswith(
            "The LoRA `nope` is not installed or not allowed here. You may use: "
        )
        assert unknown.content.endswith("and 2 more (`/loras` lists them all).")


async def test_a_lora_the_server_leaves_out_is_refused_free_hidden_and_not_reused(
    fake_discord: FakeDiscord, tmp_path: Path, models_dir: Path
) -> None:
    fake = fake_discord
    bot = build(easel_settings(fake, tmp_path / "data", models_dir))
    async with running_bot(fake, bot):
        made = await imagine(fake, "a cat <lora:red-cat:0.8>", seed=3)  # no list yet: allowed
        # Typed in another letter case: listed as installed.
        added = await reply_to(
            fake,
            "easel-admin addon",
            {"kind": "LoRA", "action": "add", "name": "FILLER-00"},
            user=fake.owner_id,
        )
        assert added.content == "Added `filler-00` to the allowed LoRAs.", added.content
        # Two files differing in letter case only: which one is meant is not guessed.
        (models_dir / "lora" / "Filler-01.safetensors").symlink_to(
            models_dir / "lora" / "filler-01.safetensors"
        )
        ambiguous = await reply_to(
            fake,
            "easel-admin addon",
            {"kind": "LoRA", "action": "add", "name": "FILLER-01"},
            user=fake.owner_id,
        )
        assert ambiguous.content == (
            "`FILLER-01` matches the LoRAs `Filler-01` and `filler-01`; type one exactly."
        ), ambiguous.content
        (models_dir / "lora" / "Filler-01.safetensors").unlink()
        sentence = (
            "The LoRA `red-cat` is not installed or not allowed here. You may use: filler-00."
        )
        refused = await reply_to(fake, "imagine", {"prompt": "a cat <lora:red-cat:0.8>", **QUICK})
        assert refused.is_ephemeral and sentence in refused.content, refused.content
        assert "xl-style" not in refused.content
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 1  # the first
        # A button reuses the earlier result's request under the server's rules of now.
        reroll_id = next(c for c in made.custom_ids if c.startswith("easel:reroll:"))
        clicked = await (await fake.click(made, reroll_id)).wait_for_original(
            lambda m: not m.is_loading
        )
        assert clicked.is_ephemeral and sentence in clicked.content, clicked.content
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 1
        loras = await reply_to(fake, "loras")
        assert [line.split(" — ")[0] for line in lines_of(loras)] == ["`<lora:filler-00:0.8>`"]
        choices = await fake.autocomplete("imagine", {"prompt": "a", "lora": ""}, focused="lora")
        assert [choice["value"] for choice in choices] == ["filler-00"]
        # The admin's name choices (every installed file): none for a member without Manage
        # Server, who sees the command where a server changed its permissions.
        typed = {"kind": "LoRA", "action": "remove", "name": ""}
        for user, shown in ((fake.user_id, False), (fake.owner_id, True)):
            names = await fake.autocomplete("easel-admin addon", typed, "name", user=user)
            assert ("red-cat" in [choice["value"] for choice in names]) is shown
        # Listed but removed from the folders since: refused before anything is charged, as
        # the lora option refuses it, suggesting no LoRA the server leaves out.
        (models_dir / "lora" / "filler-00.safetensors").unlink()
        missing = await reply_to(
            fake, "imagine", {"prompt": "a cat <lora:filler-00:0.8>", "seed": 3, **QUICK}
        )
        assert missing.is_ephemeral and missing.content == (
            "The LoRA `filler-00` is not installed or not allowed here; "
            "there is none you may use here."
        ), missing.content
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 1
        emptied = await reply_to(
            fake, "easel-admin addon", {**typed, "name": "filler-00"}, user=fake.owner_id
        )
        assert "The list is now empty: every installed LoRA is allowed here." in emptied.content


async def test_an_unknown_lora_tag_is_refused_as_the_lora_option_refuses_it(
    fake_discord: FakeDiscord, tmp_path: Path, models_dir: Path
) -> None:
    """A ``<lora:...>`` tag naming no installed LoRA and the ``lora`` option naming it get
    the same refusal (the closest installed named), before anything is queued or charged."""
    fake = fake_discord
    bot = build(easel_settings(fake, tmp_path / "data", models_dir))
    async with running_bot(fake, bot):
        typed = await reply_to(fake, "imagine", {"prompt": "a cat <lora:red-cta:0.8>", **QUICK})
        picked = await reply_to(fake, "imagine", {"prompt": "a cat", "lora": "red-cta", **QUICK})
        assert typed.is_ephemeral and picked.is_ephemeral
        assert typed.content == picked.content, (typed.content, picked.content)
        assert "The LoRA `red-cta` is not installed" in typed.content
        assert "did you mean `red-cat`?" in typed.content
        assert bot.queue.queued_count() == 0
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 0
