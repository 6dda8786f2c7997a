"""/easel-admin through the fake Discord: who may use it, and what its rules refuse."""

from __future__ import annotations

from pathlib import Path

from bot.app import build
from bot.policy.guild import GuildList
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, StartEasel, has_picture, imagine, reply_to
from tests.e2e.test_discord_audit import pinged
from tests.fake_discord import FakeDiscord
from tests.fake_discord.fixtures import running_bot


async def test_admin_commands_are_refused_for_members(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel() as bot:
        [admin] = [
            c for c in fake_discord.registered_commands(guild=True) if c["name"] == "easel-admin"
        ]
        assert int(admin["default_member_permissions"]) == 1 << 5  # Manage Server
        # Discord's picker shows choice names: Easel's words, not its enums' member names.
        choices = {
            (sub["name"], option["name"]): [(c["name"], c["value"]) for c in option["choices"]]
            for sub in admin["options"]
            for option in sub.get("options", [])
            if option.get("choices") and sub["name"] in {"nsfw", "quota"}
        }
        assert choices == {
            ("nsfw", "policy"): [
                ("allow", "allow"),
                ("spoiler", "spoiler"),
                ("age_restricted_only", "age_restricted_only"),
            ],
            ("quota", "scope"): [("server", "guild"), ("role", "role"), ("member", "user")],
            ("quota", "change"): [
                ("set", "set"),
                ("unlimited", "unlimited"),
                ("reset", "reset"),
            ],
        }
        refused = await reply_to(
            fake_discord, "easel-admin banned-word", {"action": "add", "word": "dog"}
        )
        assert refused.is_ephemeral
        assert "You need the Manage Server permission" in refused.content
        assert (await bot.services.guild_policy.settings(fake_discord.guild_id)).lists == {}


async def test_banned_words_channels_models_and_audit(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    owner = fake_discord.owner_id
    async with start_easel() as bot:
        added = await reply_to(
            fake_discord,
            "easel-admin banned-word",
            {"action": "add", "word": "Ugly Dog"},
            user=owner,
        )
        assert "Added" in added.content
        refused = await reply_to(fake_discord, "imagine", {"prompt": "an ugly dog, photo"})
        assert refused.is_ephemeral
        assert "The word 'ugly dog' is banned on this server" in refused.content
        assert bot.queue.queued_count() == 0
        # Whole words only: "ugly doghouse" does not contain the phrase.
        await imagine(fake_discord, "an ugly doghouse")

        other_channel = fake_discord.add_text_channel("art")
        added = await reply_to(
            fake_discord,
            "easel-admin channel",
            {"action": "add", "channel": other_channel},
            user=owner,
        )
        assert f"Added <#{other_channel}>" in added.content
        refused = await reply_to(fake_discord, "imagine", {"prompt": "a cat", **QUICK})
        assert "Easel is not enabled in this channel" in refused.content
        assert f"<#{other_channel}>" in refused.content
        allowed = await fake_discord.invoke_command(
            "imagine", {"prompt": "a cat", "steps": 2, "size": "64x64"}, channel=other_channel
        )
        await allowed.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)

        await reply_to(
            fake_discord, "easel-admin model", {"action": "add", "name": "tiny"}, user=owner
        )
        refused = await reply_to(
            fake_discord,
            "imagine",
            {"prompt": "a cat", "model": "huge", **QUICK},
            channel=other_channel,
        )
        assert "The model `huge` is not installed or not allowed here. You may use: tiny." in (
            refused.content
        )

        await reply_to(
            fake_discord,
            "easel-admin quota",
            {"scope": "user", "member": fake_discord.user_id, "images_per_day": 0},
            user=owner,
        )
        over = await fake_discord.invoke_command(
            "imagine", {"prompt": "a cat", "steps": 2, "size": "64x64"}, channel=other_channel
        )
        refusal = await over.wait_for_original(lambda m: "⛔" in m.content)
        assert "allowed no images per day here" in refusal.content
        assert bot.queue.queued_count() == 0

        audit = await reply_to(fake_discord, "easel-admin audit", user=owner)
        assert "banned words: added ||ugly dog||" in audit.content
        assert f"allowed channels: added <#{other_channel}>" in audit.content
        assert f"quota for <@{fake_discord.user_id}>: images per day: 0" in audit.content
        shown = await reply_to(fake_discord, "easel-admin show", user=owner)
        assert f"<#{other_channel}>" in shown.content and "tiny" in shown.content


async def test_nsfw_policies(fake_discord: FakeDiscord, start_easel: StartEasel) -> None:
    owner = fake_discord.owner_id
    async with start_easel():
        await reply_to(fake_discord, "easel-admin nsfw", {"policy": "spoiler"}, user=owner)
        result = await imagine(fake_discord, "a cat")
        assert result.attachments[0].filename.startswith("SPOILER_")

        await reply_to(
            fake_discord, "easel-admin nsfw", {"policy": "age_restricted_only"}, user=owner
        )
        refused = await reply_to(fake_discord, "imagine", {"prompt": "a cat", **QUICK})
        assert refused.is_ephemeral and "only in age-restricted channels" in refused.content


async def test_a_default_model_must_be_installed(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A default nobody installed would refuse every member's plain /imagine, naming a model
    they never asked for: it is refused to the admin instead, with the closest installed
    ones, and the name choices list the models."""
    owner = fake_discord.owner_id
    async with start_easel() as bot:
        refused = await reply_to(
            fake_discord, "easel-admin default-model", {"name": "nosuch"}, user=owner
        )
        assert refused.is_ephemeral
        assert refused.content == (
            "No model named `nosuch` is installed. Pick one from the name choices."
        )
        typo = await reply_to(
            fake_discord, "easel-admin default-model", {"name": "tny"}, user=owner
        )
        assert typo.content == (
            "No model named `tny` is installed; did you mean `tiny`? "
            "Pick one from the name choices."
        )
        choices = await fake_discord.autocomplete(
            "easel-admin default-model", {"name": "ti"}, "name", user=owner
        )
        assert [choice["value"] for choice in choices] == ["tiny"]
        settings = await bot.services.guild_policy.settings(fake_discord.guild_id)
        assert settings.default_model is None
        set_to = await reply_to(
            fake_discord, "easel-admin default-model", {"name": "TINY"}, user=owner
        )
        assert set_to.content == "Default model: tiny."
        await imagine(fake_discord, "a cat")
        # Removed from the folder since it was set: /easel-admin show says so, and which
        # model a request naming none gets instead.
        await bot.services.guild_policy.set_default_model(fake_discord.guild_id, owner, "gone")
        shown = await reply_to(fake_discord, "easel-admin show", user=owner)
        assert (
            "default model: gone (not installed: a request naming no model gets the first "
            "model installed)"
        ) in shown.content
        # The server's list allows only a model not installed either: such a request is
        # refused, and show says so rather than naming that model as the one it gets.
        await bot.services.guild_policy.change_list(
            fake_discord.guild_id, owner, GuildList.ALLOWED_MODEL, "alsogone", add=True
        )
        shown = await reply_to(fake_discord, "easel-admin show", user=owner)
        assert (
            "default model: gone (not installed: a request naming no model is refused: "
            "alsogone is not installed)"
        ) in shown.content
        refused = await reply_to(fake_discord, "imagine", {"prompt": "a cat", **QUICK})
        assert refused.is_ephemeral and "alsogone" in refused.content, refused.content


async def test_a_default_model_in_two_letter_cases_is_not_guessed(
    fake_discord: FakeDiscord, tmp_path: Path, tiny_models_dir: Path
) -> None:
    """Two installed models differing in letter case only: the admin is told both, not that
    none is installed."""
    models = tmp_path / "models"
    models.mkdir()
    for name in ("tiny", "Tiny"):
        (models / name).symlink_to(tiny_models_dir / "tiny", target_is_directory=True)
    bot = build(easel_settings(fake_discord, tmp_path / "data", models))
    async with running_bot(fake_discord, bot):
        refused = await reply_to(
            fake_discord, "easel-admin default-model", {"name": "TINY"}, user=fake_discord.owner_id
        )
        assert refused.content == "`TINY` matches the models `Tiny` and `tiny`; type one exactly."


async def test_a_banned_word_s_confirmation_keeps_it_behind_its_spoiler(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A word holding ``||`` would close its spoiler early and show the rest: escaped, in
    the confirmations as in /easel-admin show and audit (``_list_entry``)."""
    owner = fake_discord.owner_id
    async with start_easel():
        word = {"action": "add", "word": "bad||word"}
        added = await reply_to(fake_discord, "easel-admin banned-word", word, user=owner)
        assert added.content == "Added ||bad\\|\\|word|| to the banned words."
        again = await reply_to(fake_discord, "easel-admin banned-word", word, user=owner)
        assert again.content == "||bad\\|\\|word|| is already in the banned words; no change."


async def test_a_server_presets_audit_row_shows_its_words_escaped_and_pings_nobody(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """A server preset's row in /easel-admin audit quotes what a member typed (here its
    negative prompt): escaped like every other member's words there, so it can neither
    format, hide text behind a spoiler, mask a link nor ping anyone."""
    owner = fake_discord.owner_id
    words = "**x** ||y|| @everyone <@123> [l](http://e)"
    async with start_easel():
        await reply_to(
            fake_discord, "presets save", {"name": "loud", "negative": words}, user=owner
        )
        await reply_to(
            fake_discord, "easel-admin preset", {"action": "add", "name": "loud"}, user=owner
        )
        audit = await reply_to(fake_discord, "easel-admin audit", user=owner)
    [row] = [line for line in audit.content.splitlines() if "preset loud" in line]
    # The link stays in angle brackets (no preview); the stored JSON's end runs into it.
    assert r"\*\*x\*\* \|\|y\|\| @everyone \<@123> \[l](<http://e" in row, row
    assert "**x**" not in row and "||y||" not in row and "<@123>" not in row.replace(r"\<@123>", "")
    [answer] = [
        call.json["data"]
        for call in fake_discord.calls_to("POST", "/interactions/{interaction}/{token}/callback")
        if "preset loud" in str(call.json.get("data", {}).get("content"))
    ]
    assert pinged(answer["content"], answer) == set(), answer.get("allowed_mentions")


async def test_an_admin_may_allow_only_an_installed_model(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """``/easel-admin model add`` refuses a name no installed model has, saying where Easel
    looked and what a model is; the list is not changed. A removal takes any listed name."""
    owner = fake_discord.owner_id
    async with start_easel() as bot:
        refused = await reply_to(
            fake_discord, "easel-admin model", {"action": "add", "name": "tiyn"}, user=owner
        )
        assert refused.is_ephemeral and refused.content == (
            "No model named `tiyn` is installed; did you mean `tiny`? Easel looked in its models "
            "folder (EASEL_MODELS_DIR) for `tiyn.safetensors` (or .gguf, or .ckpt where the "
            "operator allows pickles) or a diffusers folder `tiyn/`; `/models` lists those "
            "installed."
        ), refused.content
        settings = await bot.services.guild_policy.settings(fake_discord.guild_id)
        assert settings.entries(GuildList.ALLOWED_MODEL) == frozenset()
        added = await reply_to(
            fake_discord, "easel-admin model", {"action": "add", "name": "tiny"}, user=owner
        )
        assert "Added `tiny` to the allowed models." in added.content, added.content
