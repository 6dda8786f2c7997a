"""An embedding installed after a job's admission is not read by it (real SQLite, real tiny
renders): the engine reads only the embeddings admission recorded, which the bot checked and
the start gate checks again, even where it shares a pipeline call with a job that reads it."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bot.jobs.queue import JobQueue, Submission
from bot.policy.guild import GuildPolicy
from bot.policy.prompt_safety import PromptPlanner
from bot.services import model_rendered_unnamed
from db.guild_settings import GuildList
from inference.engine import Engine
from inference.model_list import models_without_embeddings
from inference.registry import ModelRegistry
from inference.tiny import write_tiny_embedding, write_tiny_model
from inference.types import USED_EMBEDDINGS_OPTION, RenderedImage, RenderRequest
from inference.worker import DeviceWorker
from tests.integration.test_withdrawn_results import (
    CHANNEL,
    GUILD,
    MEMBER,
    OTHER_CHANNEL,
    OTHER_GUILD,
)
from tests.support.embedding_reads import EMBEDDING_IDS_FROM, recorded_encoder_ids
from tests.support.sinks import started_queue


async def test_an_embedding_installed_after_admission_is_read_by_no_job_admitted_before(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    write_tiny_model(models / "tiny", seed=0)
    registry = ModelRegistry(models)
    planner = PromptPlanner(
        wildcards_dir=None,
        installed_embeddings=functools.partial(registry.network_files, "embedding"),
    )
    policy = GuildPolicy(conn, prompts=planner)

    async def journaled(prompt: str) -> RenderRequest:
        request = RenderRequest(prompt, width=64, height=64, steps=2, seed=5)
        admitted = (await policy.admit(GUILD, CHANNEL, False, request, member_id=MEMBER)).request
        queued = Submission("imagine", admitted, MEMBER, GUILD, channel_id=CHANNEL)
        await JobQueue(conn, [], tmp_path / "images").submit(queued)  # journaled while stopped
        return admitted

    try:
        before = await journaled("a cat sparkle")
        write_tiny_embedding(models / "embeddings" / "sparkle.safetensors", seed=3)
        after = await journaled("a dog sparkle")
    finally:
        planner.close()
    assert before.options[USED_EMBEDDINGS_OPTION] == []
    assert after.options[USED_EMBEDDINGS_OPTION] == ["sparkle"]

    batches, read_ids = await rendered_in_batches(conn, models, tmp_path, monkeypatch, jobs=2)
    assert batches == [2]  # one pipeline call: the embedding is applied to it
    assert max(read_ids["a cat sparkle"]) < EMBEDDING_IDS_FROM  # the word, as admission saw it
    assert max(read_ids["a dog sparkle"]) >= EMBEDDING_IDS_FROM  # the embedding's vectors


async def test_jobs_of_servers_listing_other_embeddings_share_a_call_each_reading_its_own(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of each server's list in its jobs kept them out of one batch (issue 12); each
    picture reads only the embeddings its admission recorded, within its server's list."""
    models = tmp_path / "models"
    write_tiny_model(models / "tiny", seed=0)
    # Told apart by their vectors' count: 2 and 3 placeholder ids.
    write_tiny_embedding(models / "embeddings" / "sparkle.safetensors", seed=3, vectors=2)
    write_tiny_embedding(models / "embeddings" / "fuzz.safetensors", seed=4, vectors=3)
    registry = ModelRegistry(models)
    planner = PromptPlanner(
        wildcards_dir=None,
        installed_embeddings=functools.partial(registry.network_files, "embedding"),
    )
    policy = GuildPolicy(conn, prompts=planner)
    lists = ((GUILD, CHANNEL, "sparkle", "a cat"), (OTHER_GUILD, OTHER_CHANNEL, "fuzz", "a dog"))
    try:
        for guild, channel, allowed, prompt in lists:
            await policy.change_list(guild, MEMBER, GuildList.ALLOWED_EMBEDDING, allowed, add=True)
            request = RenderRequest(f"{prompt} sparkle fuzz", width=64, height=64, steps=2, seed=5)
            admitted = await policy.admit(guild, channel, False, request, member_id=MEMBER)
            assert admitted.request.options[USED_EMBEDDINGS_OPTION] == [allowed]
            queued = Submission("imagine", admitted.request, MEMBER, guild, channel_id=channel)
            await JobQueue(conn, [], tmp_path / "images").submit(queued)  # journaled, stopped
    finally:
        planner.close()

    batches, read_ids = await rendered_in_batches(conn, models, tmp_path, monkeypatch, jobs=2)
    assert batches == [2]  # one pipeline call, both embeddings applied to it
    cat = {i for i in read_ids["a cat sparkle fuzz"] if i >= EMBEDDING_IDS_FROM}
    dog = {i for i in read_ids["a dog sparkle fuzz"] if i >= EMBEDDING_IDS_FROM}
    assert (len(cat), len(dog)) == (2, 3) and not cat & dog  # sparkle's, fuzz's: each its own


async def test_a_flux_job_records_no_embedding_its_model_reads_as_words(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    write_tiny_model(tmp_path / "tiny", seed=0)
    write_tiny_model(tmp_path / "flux", family="flux")
    write_tiny_embedding(tmp_path / "embeddings" / "sparkle.safetensors")
    registry = ModelRegistry(tmp_path)
    planner = PromptPlanner(
        wildcards_dir=None,
        installed_embeddings=functools.partial(registry.network_files, "embedding"),
        models_without_embeddings=functools.partial(models_without_embeddings, registry),
        # Rendered here: a request naming no model takes the first by name, flux.
        unnamed_model=functools.partial(model_rendered_unnamed, registry, None),
    )
    policy = GuildPolicy(conn, prompts=planner)
    try:
        used = [
            (await policy.admit(GUILD, CHANNEL, False, request, member_id=MEMBER)).request.options[
                USED_EMBEDDINGS_OPTION
            ]
            for request in (
                RenderRequest("a sparkle cat", model=model, seed=1)
                for model in ("tiny", "flux", None)
            )
        ]
    finally:
        planner.close()
    assert used == [["sparkle"], [], []]


async def rendered_in_batches(
    conn: aiosqlite.Connection,
    models: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    jobs: int,
) -> tuple[list[int], defaultdict[str, set[int]]]:
    """Render the ``jobs`` journaled jobs with the models of ``models``: the size of each batch
    rendered together, and what each prompt gave the text encoder."""
    read_ids = recorded_encoder_ids(monkeypatch)
    engine = Engine(models)
    batches: list[int] = []
    render_batch = engine.render_batch

    def counted(requests: Sequence[RenderRequest], *rest: Any) -> list[list[RenderedImage]]:
        batches.append(len(requests))
        return render_batch(requests, *rest)

    monkeypatch.setattr(engine, "render_batch", counted)
    queue, sink = await started_queue(
        conn, [DeviceWorker("cpu", lambda _: engine)], tmp_path / "images"
    )
    try:
        await sink.wait_for(jobs)
    finally:
        await queue.stop()
    assert all(job.succeeded for job in sink.delivered)
    return batches, read_ids
