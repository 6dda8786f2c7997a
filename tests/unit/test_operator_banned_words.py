"""EASEL_BANNED_WORDS_FILE: the operator's banned words hold in every server and in direct
messages, on top of each server's own, and no server's admins can lift them."""

from __future__ import annotations

from pathlib import Path

import aiosqlite
import pytest

from bot.policy.guild import GuildList
from bot.policy.moderation import BANNED_SINCE, ConditioningTexts, read_banned_words
from bot.services import Services
from bot.settings import SettingsError, load_settings
from bot.user_errors import Reason, UserError
from cogs.admin import describe_guild
from inference.types import RenderRequest

GUILD, ADMIN, MEMBER = 100, 1, 2


def test_the_file_is_one_word_or_phrase_a_line_stored_as_an_admins() -> None:
    text = "# the operator's list\n  Gore \n\nugly   DOG\n#not a word\n"
    assert read_banned_words(text) == {"gore", "ugly   dog"}
    with pytest.raises(ValueError, match=r"line 2 is 101 characters long; .* 1 to 100"):
        read_banned_words("ok\n" + "x" * 101)


def test_a_file_that_cannot_be_read_is_named_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EASEL_BANNED_WORDS_FILE", str(tmp_path / "missing.txt"))
    with pytest.raises(SettingsError, match=r"EASEL_BANNED_WORDS_FILE=.*cannot read it"):
        load_settings(env_file=None)
    monkeypatch.setenv("EASEL_BANNED_WORDS_FILE", "")
    assert load_settings(env_file=None).operator_banned_words == frozenset()


def test_a_file_saved_with_a_byte_order_mark_bans_its_first_word(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    words = tmp_path / "banned.txt"
    words.write_bytes("\ufeffgore\nblood\n".encode())  # a Windows editor's "UTF-8 with BOM"
    monkeypatch.setenv("EASEL_BANNED_WORDS_FILE", str(words))
    assert load_settings(env_file=None).operator_banned_words == {"gore", "blood"}


def services_banning(
    words_file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, conn: aiosqlite.Connection
) -> Services:
    """Services whose operator's file holds ``words_file``."""
    words = tmp_path / "banned.txt"
    words.write_text(words_file, encoding="utf-8")
    monkeypatch.setenv("EASEL_BANNED_WORDS_FILE", str(words))
    monkeypatch.setenv("EASEL_ALLOW_DMS", "1")
    settings = load_settings(env_file=None).model_copy(update={"data_dir": tmp_path / "data"})
    for word in settings.operator_banned_words:
        assert word not in repr(settings)  # the list stays out of logs, like a secret
    return Services.build(conn, settings)


@pytest.fixture
def services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, conn: aiosqlite.Connection
) -> Services:
    return services_banning("gore\n", tmp_path, monkeypatch, conn)


async def test_the_operators_words_are_refused_in_a_server_that_bans_none(
    services: Services,
) -> None:
    policy = services.guild_policy
    request = RenderRequest("a [red|GORE] scene", seed=1, steps=2)
    with pytest.raises(UserError, match="'gore' is banned") as refused:
        await policy.admit(GUILD, None, False, request, member_id=MEMBER)
    assert refused.value.reason is Reason.BANNED_WORD
    # The server's admins cannot lift it: it is not theirs to remove.
    assert not await policy.change_list(GUILD, ADMIN, GuildList.BANNED_WORD, "gore", add=False)
    with pytest.raises(UserError, match="'gore' is banned"):
        await policy.admit(GUILD, None, False, request, member_id=MEMBER)
    # Their own words add to the operator's.
    await policy.change_list(GUILD, ADMIN, GuildList.BANNED_WORD, "cat", add=True)
    with pytest.raises(UserError, match="'cat' is banned"):
        await policy.admit(GUILD, None, False, RenderRequest("a cat", seed=1), member_id=MEMBER)
    await policy.admit(GUILD, None, False, RenderRequest("a dog", seed=1), member_id=MEMBER)
    shown = describe_guild(
        await policy.settings(GUILD), operator_banned_words=policy.operator_banned_word_count
    )
    assert "||cat|| (and 1 more that Easel's operator bans everywhere)" in shown
    assert "gore" not in shown


async def test_the_operators_words_hold_in_direct_messages_for_new_and_stored_pictures(
    services: Services,
) -> None:
    policy = services.guild_policy
    with pytest.raises(UserError, match="'gore' is banned"):
        await policy.admit(None, None, False, RenderRequest("gore", seed=1), member_id=MEMBER)
    # A picture made in DMs before the word was listed is not made into a new job there.
    with pytest.raises(UserError) as refused:
        await policy.check_reuse(
            None, "job-1", ConditioningTexts(("a gore scene",)), withdrawn=False
        )
    assert str(refused.value) == BANNED_SINCE
    await policy.check_reuse(None, "job-2", ConditioningTexts(("a calm scene",)), withdrawn=False)


async def test_words_typed_in_turkish_capitals_refuse_them_as_a_turkish_writer_types_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, conn: aiosqlite.Connection
) -> None:
    """Stored lower-cased, the operator's ``İSTANBUL`` is ``i̇stanbul`` (a combining dot above)
    and an admin's ``KIZ`` is ``kiz``; each still refuses the lower case a Turkish writer
    types."""
    policy = services_banning("İSTANBUL\n", tmp_path, monkeypatch, conn).guild_policy
    await policy.change_list(GUILD, ADMIN, GuildList.BANNED_WORD, "KIZ", add=True)
    for prompt in ("istanbul skyline", "İstanbul skyline", "bir kız portresi", "KIZ"):
        with pytest.raises(UserError, match="is banned") as refused:
            request = RenderRequest(prompt, seed=1, steps=2)
            await policy.admit(GUILD, None, False, request, member_id=MEMBER)
        assert refused.value.reason is Reason.BANNED_WORD, prompt
    await policy.admit(GUILD, None, False, RenderRequest("ankara", seed=1), member_id=MEMBER)
