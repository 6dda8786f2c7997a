"""/wildcards and /imagine over the fake Discord with a wildcards folder holding a YAML alias
bomb (a pack file of a few hundred bytes that dynamicprompts walked for minutes): the file is
left out, the others are listed and drawn."""

from __future__ import annotations

from pathlib import Path

from bot.app import build
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import reply_to
from tests.fake_discord import FakeDiscord
from tests.fake_discord.fixtures import running_bot
from tests.prompts.test_wildcard_files import alias_bomb


async def test_a_wildcard_alias_bomb_is_left_out_of_the_list_and_the_plans(
    fake_discord: FakeDiscord, tmp_path: Path, tiny_models_dir: Path
) -> None:
    wildcards = tmp_path / "wildcards"
    wildcards.mkdir()
    (wildcards / "colors.txt").write_text("red\nblue\n", encoding="utf-8")
    # 20 levels: minutes of work at each read before.
    (wildcards / "pack.yaml").write_text(alias_bomb(20), encoding="utf-8")
    settings = easel_settings(fake_discord, tmp_path / "data", tiny_models_dir, wildcards)
    async with running_bot(fake_discord, build(settings)):
        listed = await reply_to(fake_discord, "wildcards")
        assert listed.embeds[0]["description"].split("\n")[0] == "`__colors__`"
        explained = await reply_to(fake_discord, "explain", {"prompt": "a __colors__ cat"})
        assert any(f'"prompt": "a {c} cat"' in explained.content for c in ("red", "blue"))
        refused = await reply_to(fake_discord, "explain", {"prompt": "a __l1/p/a__ cat"})
        assert "There is no wildcard `__l1/p/a__`" in refused.content
