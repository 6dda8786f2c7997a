"""A wildcard file at fault (its { } syntax, a loop, braces too deep) is blamed on that file by
name, never on the member's prompt, and no parser's grammar message reaches a member; a
member's own unbalanced { } is said in plain words. Through the fake Discord."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import Settings
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, StartEasel, has_picture, reply_to
from tests.fake_discord import FakeDiscord

TELL = "Tell a moderator, and leave that wildcard out until it is fixed."


@pytest.fixture(autouse=True)
def wildcards(easel_settings_for_test: Settings) -> None:
    folder = Path(easel_settings_for_test.wildcards_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bad.txt").write_text("{a|\n", encoding="utf-8")
    (folder / "loop.txt").write_text("__loop__\n", encoding="utf-8")
    (folder / "deep.txt").write_text("{" * 12 + "x" + "}" * 12 + "\n", encoding="utf-8")
    (folder / "pair.txt").write_text("{a|\n{b|\n", encoding="utf-8")


async def test_a_broken_wildcard_file_is_blamed_by_name(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel() as bot:
        for wildcard, fault in (
            ("bad", "in a value, a '{' has no matching '}' (at '{a|')"),
            ("loop", "its values include wildcards without end (__loop__ -> __loop__)"),
            ("deep", "a value nests { } braces 12 deep, past the 10 levels allowed"),
        ):
            refused = await reply_to(
                fake_discord, "imagine", {"prompt": f"a __{wildcard}__", **QUICK}
            )
            assert refused.is_ephemeral
            assert refused.content == f"The wildcard `__{wildcard}__` is broken: {fault}. {TELL}"
        assert bot.queue.queued_count() == 0


async def test_a_value_drawn_by_a_count_is_blamed_on_its_wildcard_file(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """``{N$$__name__}`` (dynamic prompts' count of a wildcard's values): a value drawn that
    does not parse is that wildcard file's fault, named as ``__name__``'s is, with one value
    or a draw among several."""
    async with start_easel() as bot:
        for prompt, wildcard, value in (
            ("a {2$$__bad__}", "bad", "{a|"),
            ("a {1$$__pair__}", "pair", "{"),
            ("a {2$$__pair__}", "pair", "{"),
        ):
            refused = await reply_to(fake_discord, "imagine", {"prompt": prompt, **QUICK})
            assert refused.is_ephemeral, refused.content
            assert refused.content.startswith(
                f"The wildcard `__{wildcard}__` is broken: in a value, a '{{' has no matching "
                f"'}}' (at '{value}"
            ), (prompt, refused.content)
            assert refused.content.endswith(TELL), refused.content
        assert bot.queue.queued_count() == 0


async def test_a_prompt_s_unbalanced_brace_is_told_in_plain_words(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel():
        handle = await fake_discord.invoke_command("imagine", {"prompt": "{a|b", **QUICK})
        result = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        # Under the picture, its markdown escaped.
        assert "Note: a '{' has no matching '}' (at '{a\\|b')\n" in result.content
        assert "Expected" not in result.content and "char 0" not in result.content
