"""/models, /loras, /embeddings, /wildcards and /imagine's lora pick through the fake Discord:
paged, searchable, the server's model and LoRA rules applied, LoRA cards read from file metadata."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import bot.policy.guild as guild_policy
from bot.app import EaselBot, build
from inference.infotext import infotext_from_png, png_with_infotext
from inference.tiny import write_tiny_embedding, write_tiny_lora
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    calls_held,
    images_today,
    imagine,
    reply_to,
)
from tests.e2e.test_moderation_commands import WAIT_S, until
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
        assert loras.component(label="◀ Previous")["disabled"] is True
        click = await fake.click(loras, label="Next ▶")
        await click.wait_for_ack()
        assert click.response_type == 7  # the same message shows the next page
        assert footer_of(loras) == "Page 2/2"
        assert lines_of(loras) == [
            "`<lora:red-cat:0.8>` — base model SD 1.5; trigger words: red cat, whiskers, sofa",
            "`<lora:xl-style:0.8>` — base model SDXL",
        ]
        assert loras.component(label="Next ▶")["disabled"] is True

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
        assert added.content == (
            "Added `filler-00` to the allowed LoRAs. Easel now allows only the listed LoRAs."
        ), added.content
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


async def queued(fake: FakeDiscord, options: dict[str, str]) -> str:
    """The id of a quick /imagine with ``options``, once queued (its start held)."""
    handle = await fake.invoke_command("imagine", {**options, **QUICK})
    shown = await handle.wait_for_original(lambda m: any("cancel" in c for c in m.custom_ids))
    return shown.custom_ids[0].rsplit(":", 1)[1]


async def ended(bot: EaselBot, job_id: str) -> str:
    """How job ``job_id`` ended (its status once neither queued nor running)."""

    async def status() -> str | None:
        stored = await bot.services.history.job(job_id)
        return None if stored is None else stored.status

    async def over() -> bool:
        return await status() not in (None, "queued", "running")

    assert await until(over), job_id
    return str(await status())


async def test_the_first_model_or_lora_listed_says_how_many_queued_jobs_end(
    fake_discord: FakeDiscord, tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first entry closes every other model (or LoRA), as a first channel closes every other
    channel: the admin is told so, with the count of jobs queued or rendering it ends; so is a
    removal that leaves others listed."""
    fake, owner = fake_discord, fake_discord.owner_id
    bot = build(easel_settings(fake, tmp_path / "data", models_dir))
    async with running_bot(fake, bot):
        gate = calls_held(bot.results, "why_not_started", monkeypatch)
        jobs = {
            name: await queued(fake, options)
            for name, options in {
                "other model": {"prompt": "a cat", "model": "other"},
                "other lora": {"prompt": "a cat <lora:red-cat:0.8>", "model": "tiny"},
                "kept": {"prompt": "a dog <lora:filler-00:0.5>", "model": "tiny"},
            }.items()
        }
        first = await reply_to(
            fake, "easel-admin model", {"action": "add", "name": "tiny"}, user=owner
        )
        assert first.content == (
            "Added `tiny` to the allowed models. Easel now allows only the listed models. 1 job "
            "queued or rendering now with a model the list leaves out ends unposted and refunded "
            "(its maker is told): at once if rendering, else when it would start unless the list "
            "allows it again by then."
        ), first.content
        lora = {"kind": "LoRA", "action": "add", "name": "filler-00"}
        first_lora = await reply_to(fake, "easel-admin addon", lora, user=owner)
        assert first_lora.content.startswith(
            "Added `filler-00` to the allowed LoRAs. Easel now allows only the listed LoRAs. "
            "1 job queued or rendering now with a LoRA the list leaves out ends unposted"
        ), first_lora.content
        # Another entry closes nothing more; taking one of two off ends what used it.
        await reply_to(fake, "easel-admin model", {"action": "add", "name": "other"}, user=owner)
        removed = await reply_to(
            fake, "easel-admin model", {"action": "remove", "name": "other"}, user=owner
        )
        assert removed.content.startswith(
            "Removed `other` from the allowed models. 1 job queued or rendering now with a "
            "model the list leaves out ends"
        ), removed.content
        gate.set()
        ends = {"other model": "cancelled", "other lora": "cancelled", "kept": "done"}
        assert {name: await ended(bot, job_id) for name, job_id in jobs.items()} == ends
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 1  # refunded


async def test_a_job_naming_no_model_is_counted_with_the_engines_pick(
    fake_discord: FakeDiscord, tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no list and no default, a job naming no model renders with the engine's pick
    (``other``, the first installed): a first entry leaving it out counts that job, which ends."""
    fake, owner = fake_discord, fake_discord.owner_id
    bot = build(easel_settings(fake, tmp_path / "data", models_dir))
    async with running_bot(fake, bot):
        gate = calls_held(bot.results, "why_not_started", monkeypatch)
        job_id = await queued(fake, {"prompt": "a cat"})
        first = await reply_to(
            fake, "easel-admin model", {"action": "add", "name": "tiny"}, user=owner
        )
        assert "1 job queued or rendering now with a model the list leaves out" in first.content
        gate.set()
        assert await ended(bot, job_id) == "cancelled"


async def test_a_list_narrowed_then_undone_before_a_queued_job_starts_lets_it_render(
    fake_discord: FakeDiscord, tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queued job is judged when it would start, by the lists of then: the answer says so,
    and an undo before its start lets it render."""
    fake, owner = fake_discord, fake_discord.owner_id
    bot = build(easel_settings(fake, tmp_path / "data", models_dir))
    async with running_bot(fake, bot):
        gate = calls_held(bot.results, "why_not_started", monkeypatch)
        job_id = await queued(fake, {"prompt": "a cat", "model": "other"})
        first = await reply_to(
            fake, "easel-admin model", {"action": "add", "name": "tiny"}, user=owner
        )
        assert "when it would start unless the list allows it again by then" in first.content
        await reply_to(fake, "easel-admin model", {"action": "remove", "name": "tiny"}, user=owner)
        gate.set()
        assert await ended(bot, job_id) == "done"


async def test_a_narrowing_is_answered_at_once_and_counted_off_the_event_loop(
    fake_discord: FakeDiscord, tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The count reads every job queued in the server, which for thousands takes seconds: the
    admin's command is deferred before it (within Discord's 3 s, which the fake checks), and it
    runs on a thread, so that other members are answered meanwhile. The count is held here
    until another member's /queue is answered."""
    fake, owner = fake_discord, fake_discord.owner_id
    bot = build(easel_settings(fake, tmp_path / "data", models_dir))
    async with running_bot(fake, bot):
        gate = calls_held(bot.results, "why_not_started", monkeypatch)
        await queued(fake, {"prompt": "a cat", "model": "other"})
        counting, go_on = threading.Event(), threading.Event()
        released: list[bool] = []
        count = guild_policy._models_left_out

        def held_count(*args: Any) -> int:
            counting.set()
            # On the loop, nothing could set it: the wait would end unreleased.
            released.append(go_on.wait(timeout=WAIT_S))
            return count(*args)

        async def count_started() -> bool:
            return counting.is_set()

        monkeypatch.setattr(guild_policy, "_models_left_out", held_count)
        try:
            handle = await fake.invoke_command(
                "easel-admin model", {"action": "add", "name": "tiny"}, user=owner
            )
            await handle.wait_for_ack()  # deferred: the count has not ended
            assert await until(count_started)
            assert (await reply_to(fake, "queue")).content
        finally:
            go_on.set()
        answer = await handle.wait_for_answer()
        assert released == [True]
        assert "1 job queued or rendering now with a model" in answer.content, answer.content
        gate.set()
