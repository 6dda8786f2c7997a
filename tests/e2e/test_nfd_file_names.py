"""Files whose names macOS wrote in NFD (``é`` as ``e`` + U+0301), through the fake Discord:
a member types ``__café__``, ``<lora:Amélie:0.8>`` and the model ``modèle`` as keyboards send
them (NFC) and gets the picture, not "There is no wildcard `__café__`; did you mean
`__café__`?"; autocomplete offers them for what was typed."""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

from bot.app import build
from db import guild_settings as store
from db.database import connect
from db.guild_settings import GuildList
from inference.infotext import infotext_from_png, parse_infotext
from inference.tiny import write_tiny_lora
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, reply_to
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.fake_discord.fixtures import running_bot
from tests.support.pictures import has_picture


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


CAFE, AMELIE, MODELE = (unicodedata.normalize("NFC", name) for name in ("café", "Amélie", "modèle"))


async def rendered(fake: FakeDiscord, options: dict[str, Any]) -> StoredMessage:
    """/imagine's answer: its picture, or the refusal that came instead (asserted against)."""
    handle = await fake.invoke_command("imagine", {**QUICK, **options})
    answer = await handle.wait_for_original(
        lambda message: has_picture(message) or message.is_ephemeral, timeout=RENDER_TIMEOUT_S
    )
    assert has_picture(answer), answer.content
    return answer


async def test_files_named_in_nfd_are_used_by_the_names_members_type(
    fake_discord: FakeDiscord, tmp_path: Path, tiny_models_dir: Path
) -> None:
    fake = fake_discord
    models = tmp_path / "models"
    models.mkdir()
    (models / nfd(MODELE)).symlink_to(tiny_models_dir / "tiny", target_is_directory=True)
    write_tiny_lora(models / "lora" / f"{nfd(AMELIE)}.safetensors")
    wildcards = tmp_path / "wildcards"
    wildcards.mkdir()
    (wildcards / f"{nfd(CAFE)}.txt").write_text("latte\n", encoding="utf-8")
    bot = build(easel_settings(fake, tmp_path / "data", models, wildcards))
    async with running_bot(fake, bot):
        for option, typed, offered in (("lora", "Amé", AMELIE), ("model", "modè", MODELE)):
            choices = await fake.autocomplete("imagine", {"prompt": "a", option: typed}, option)
            assert [choice["value"] for choice in choices] == [offered]
        posted = await rendered(
            fake, {"prompt": f"a __{CAFE}__ cup <lora:{AMELIE}:0.8>", "model": MODELE, "seed": 3}
        )
        infotext = infotext_from_png(posted.attachments[0].data)
        assert infotext is not None
        prompt, _, params = parse_infotext(infotext)
        assert prompt.startswith("a latte cup")
        assert params["Model"] == MODELE
        assert str(params["Lora hashes"]).startswith(f"{AMELIE}: ")
        assert "Prompt warnings" not in params
        # The options typed rather than picked, pasted from the files' names (NFD).
        posted = await rendered(
            fake, {"prompt": "a cat", "lora": nfd(AMELIE), "model": nfd(MODELE), "seed": 3}
        )
        infotext = infotext_from_png(posted.attachments[0].data)
        assert infotext is not None
        params = parse_infotext(infotext)[2]
        assert params["Model"] == MODELE
        assert str(params["Lora hashes"]).startswith(f"{AMELIE}: ")


async def test_names_a_server_saved_in_nfd_before_still_match_and_can_be_removed(
    fake_discord: FakeDiscord, tmp_path: Path, tiny_models_dir: Path
) -> None:
    """A server's default model, allowed model and allowed LoRA saved before names were
    compared in NFC, as autocomplete then offered them (NFD): a plain /imagine renders with
    that default and the LoRA, and an admin removes each entry by the name typed (NFC)."""
    fake = fake_discord
    models = tmp_path / "models"
    models.mkdir()
    (models / nfd(MODELE)).symlink_to(tiny_models_dir / "tiny", target_is_directory=True)
    write_tiny_lora(models / "lora" / f"{nfd(AMELIE)}.safetensors")
    bot = build(easel_settings(fake, tmp_path / "data", models))
    async with running_bot(fake, bot):
        conn = await connect(bot.settings.database_path)
        try:
            guild, owner = fake.guild_id, fake.owner_id
            await store.set_value(conn, guild, owner, "default_model", nfd(MODELE), 0.0)
            for which, name in (
                (GuildList.ALLOWED_MODEL, MODELE),
                (GuildList.ALLOWED_LORA, AMELIE),
            ):
                await store.change_list(conn, guild, owner, which, nfd(name), add=True, now=0.0)
        finally:
            await conn.close()
        posted = await rendered(fake, {"prompt": f"a cat <lora:{AMELIE}:0.8>", "seed": 3})
        infotext = infotext_from_png(posted.attachments[0].data)
        assert infotext is not None
        params = parse_infotext(infotext)[2]
        assert params["Model"] == MODELE
        assert str(params["Lora hashes"]).startswith(f"{AMELIE}: ")
        # A job journaled then names its model so too: Reroll reuses its request.
        conn = await connect(bot.settings.database_path)
        try:
            await conn.execute(
                "UPDATE jobs SET request_json = json_set(request_json, '$.model', ?)",
                (nfd(MODELE),),
            )
            await conn.commit()
        finally:
            await conn.close()
        reroll = next(c for c in posted.custom_ids if c.startswith("easel:reroll:"))
        rerolled = await (await fake.click(posted, reroll)).wait_for_original(
            lambda message: has_picture(message) or message.is_ephemeral,
            timeout=RENDER_TIMEOUT_S,
        )
        assert has_picture(rerolled), rerolled.content
        for command, options in (
            ("easel-admin addon", {"kind": "LoRA", "action": "remove", "name": AMELIE}),
            ("easel-admin model", {"action": "remove", "name": MODELE}),
        ):
            answer = await reply_to(fake, command, options, user=owner)
            assert answer.content.startswith("Removed"), answer.content
        assert (await bot.services.guild_policy.settings(guild)).lists == {}
