"""What a fresh process's first burst of commands used to pay for is paid at start, before the
bot connects to the gateway (issue 12, docs/performance.md "The first burst")."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from bot.app import build
from bot.jobs.queue import Submission
from bot.policy import moderation
from bot.policy.member_settings import MemberSettings, UserSettings
from inference import model_list
from inference.metadata import FAMILY_MARKERS
from inference.prompts import default_tokenizer
from inference.registry import ModelEntry
from inference.types import RenderRequest
from inference.worker import RenderEngine
from tests.e2e.conftest import easel_settings
from tests.fake_discord import FakeDiscord
from tests.fake_discord.fixtures import running_bot
from tests.support.engines import InstantEngine


def instant_engine(_device: str) -> RenderEngine:
    return InstantEngine()


async def test_the_prompt_planner_and_the_heap_are_ready_before_the_gateway_connects(
    fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    default_tokenizer.cache_clear()
    # No model is rendered: an empty models folder will do.
    bot = build(
        easel_settings(fake_discord, tmp_path / "data", tmp_path / "models"), instant_engine
    )
    try:
        # discord.py runs setup_hook in login, before any gateway connection (so before READY).
        await bot.login(fake_discord.token)
        assert not bot.is_ready()
        # The first plan read the CLIP vocabulary; six threads of a burst once read it at once.
        assert default_tokenizer.cache_info().currsize == 1
        # What starting left is out of later collections (else the first full one falls in
        # the first burst).
        assert gc.get_freeze_count() > 0
    finally:
        await bot.close()


async def test_the_models_families_are_read_in_the_background_of_a_start(
    fake_discord: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first prompt check after a start read every checkpoint's header on the admission
    path (393 ms for 60): read at start instead, on a thread, with no command sent."""
    models = tmp_path / "models"
    models.mkdir()
    for name, (_, marker) in zip(("one", "two"), FAMILY_MARKERS, strict=False):
        save_file({marker: np.zeros(1, dtype=np.float32)}, str(models / f"{name}.safetensors"))
    read: list[str] = []
    both_read = threading.Event()
    listed_model = model_list.listed_model

    def counted(entry: ModelEntry) -> model_list.ListedModel:
        read.append(entry.name)
        if len(read) == 2:
            both_read.set()
        return listed_model(entry)

    monkeypatch.setattr(model_list, "listed_model", counted)
    bot = build(easel_settings(fake_discord, tmp_path / "data", models), instant_engine)
    try:
        await bot.login(fake_discord.token)
        assert await asyncio.to_thread(both_read.wait, 10)  # two headers read: moments
        assert sorted(read) == ["one", "two"]
        # What the first plan asks is then answered from the cache.
        planner = bot.services.prompts
        assert planner.families_read is not None
        await planner.families_read
        assert planner.models_without_embeddings() == []
        assert len(read) == 2
    finally:
        await bot.close()


async def test_a_new_members_first_checks_read_nothing_once_the_bot_has_started(
    fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    """The start reads who saved settings, who spent anything lately and which guilds store
    limits, in the background (the gateway does not wait for it): a burst of members new to
    the bot (all of them, after a restart) is then checked before its defers without reading,
    where each member's first command read their settings, their guild's limit overrides and
    their spending."""
    bot = build(
        easel_settings(fake_discord, tmp_path / "data", tmp_path / "models"), instant_engine
    )
    newcomer = Submission(
        kind="imagine",
        request=RenderRequest("a cat", seed=1, steps=2),
        user_id=12345,
        guild_id=fake_discord.guild_id,
    )
    try:
        await bot.login(fake_discord.token)
        assert bot._db is not None and bot._reading_ahead is not None
        await bot._reading_ahead
        statements: list[str] = []
        await bot._db.set_trace_callback(statements.append)
        assert await bot.services.member_settings.get(newcomer.user_id) == UserSettings()
        assert await bot.queue.quota_refusal(newcomer) is None
        # Those reads' own statements (the start's other work may run statements meanwhile).
        member_reads = ("FROM user_settings", "FROM quota_limits", "r.user_id = ")
        assert [text for text in statements if any(read in text for read in member_reads)] == []
    finally:
        await bot.close()


async def test_the_read_ahead_keeps_neither_the_gateway_nor_the_stop_waiting(
    fake_discord: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading ahead takes seconds with many members: the start does not wait for it (a
    command meanwhile reads what it needs), and a stop cancels what is left of it."""
    never_ends = asyncio.Event()

    async def slow_read_ahead(_settings: MemberSettings) -> None:
        await never_ends.wait()

    monkeypatch.setattr(MemberSettings, "read_ahead", slow_read_ahead)
    bot = build(
        easel_settings(fake_discord, tmp_path / "data", tmp_path / "models"), instant_engine
    )
    try:
        await asyncio.wait_for(bot.login(fake_discord.token), timeout=30)
        reading_ahead = bot._reading_ahead
        assert reading_ahead is not None and not reading_ahead.done()
        newcomer = Submission(
            kind="imagine",
            request=RenderRequest("a cat", seed=1, steps=2),
            user_id=12345,
            guild_id=fake_discord.guild_id,
        )
        assert await bot.queue.quota_refusal(newcomer) is None
    finally:
        await bot.close()
    assert reading_ahead.cancelled()


async def test_a_read_ahead_that_failed_leaves_the_stop_closing_everything(
    fake_discord: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read-ahead only spares reads: whatever it failed with, the stop still closes the
    broker, the database and the metrics server (a failure it kept made close() raise there)."""

    async def broken_read_ahead(_settings: MemberSettings) -> None:
        raise RuntimeError("not a database error")

    monkeypatch.setattr(MemberSettings, "read_ahead", broken_read_ahead)
    bot = build(
        easel_settings(fake_discord, tmp_path / "data", tmp_path / "models"), instant_engine
    )
    try:
        await bot.login(fake_discord.token)
        assert bot._reading_ahead is not None
        await bot._reading_ahead  # logged, not raised
    finally:
        await bot.close()
    assert bot._db is None


@pytest.fixture
def matchers_built(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[frozenset[str]]]:
    """The banned-word lists a matcher was built for, none kept from another test's."""
    built: list[frozenset[str]] = []
    matcher_init = moderation._Matcher.__init__

    def counting(matcher: moderation._Matcher, words: dict[str, str]) -> None:
        built.append(frozenset(words.values()))
        matcher_init(matcher, words)

    monkeypatch.setattr(moderation._Matcher, "__init__", counting)
    moderation._operator_matcher_for.cache_clear()
    yield built
    moderation._operator_matcher_for.cache_clear()


async def test_the_operators_banned_words_are_built_in_the_background_of_a_start(
    fake_discord: FakeDiscord, tmp_path: Path, matchers_built: list[frozenset[str]]
) -> None:
    """The first prompt after a start built the matcher of the operator's banned words on the
    admission path (20,000 words: about a second): built at start instead, on a thread; the
    first /imagine builds none, and is refused by those words."""
    words = frozenset({"gore", *(f"banned{letters}" for letters in ("one", "two", "three"))})
    settings = easel_settings(fake_discord, tmp_path / "data", tmp_path / "models")
    bot = build(settings.model_copy(update={"operator_banned_words": words}), instant_engine)
    async with running_bot(fake_discord, bot):
        built = bot.services.prompts.operator_words_built
        assert built is not None
        await built
        assert matchers_built == [words]
        refused = await fake_discord.invoke_command("imagine", {"prompt": "a gore scene"})
        answer = await refused.wait_for_original(lambda m: not m.is_loading, timeout=30)
        assert "'gore' is banned" in answer.content, answer.content
    assert matchers_built == [words]  # the first prompt's check found it built
