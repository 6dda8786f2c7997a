"""A server's add-on lists on real SQLite: stored beside the older lists (0018 keeps every
entry of a version-17 database); a job queued before an admin left its LoRA out ends before it
renders, refunded, as the other rules of now do (bot.policy.delivery); an add-on named but not
installed is refused naming only those usable in the server."""

from __future__ import annotations

import functools
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import aiosqlite
import pytest

from bot.jobs.queue import JobQueue, Submission
from bot.policy import addons
from bot.policy.addons import installed_addons
from bot.policy.guild import GuildList, GuildPolicy
from bot.policy.prompt_safety import PromptPlanner
from bot.services import Services
from bot.user_errors import UserError
from cogs.common import check_addons_installed
from db import guild_settings as store
from db import jobs as journal
from db.database import connect, load_migrations
from inference.control_units import ControlUnit, with_control_units
from inference.registry import ModelRegistry
from inference.types import RenderRequest
from tests.integration.test_delivery_gate import (
    FakeDiscord,
    all_delivered,
    ends_before_rendering,
    results_for,
    started,
)
from tests.integration.test_withdrawn_results import CHANNEL, GUILD, MEMBER, MODERATOR, NOW
from tests.support.checkpoint_files import stand_in_checkpoint
from tests.support.engines import InstantEngine


async def test_the_add_on_lists_are_kept_beside_the_older_ones(tmp_path: Path) -> None:
    path = tmp_path / "easel.sqlite3"
    with sqlite3.connect(path) as old:  # a database of the version before 0018, with lists
        for migration in load_migrations()[:17]:
            old.executescript(migration.sql)
        old.execute("PRAGMA user_version = 17")
        old.executemany(
            "INSERT INTO guild_list_entries (guild_id, list, value) VALUES (?, ?, ?)",
            [(GUILD, "banned_word", "owl"), (GUILD, "allowed_model", "tiny")],
        )
    conn = await connect(path)
    try:
        for which in (GuildList.ALLOWED_LORA, GuildList.ALLOWED_CONTROLNET):
            assert await store.change_list(conn, GUILD, MODERATOR, which, "x", add=True, now=NOW)
        settings = await store.get(conn, GUILD)
        assert settings.entries(GuildList.ALLOWED_LORA) == {"x"}
        assert settings.entries(GuildList.BANNED_WORD) == {"owl"}
        assert settings.entries(GuildList.ALLOWED_MODEL) == {"tiny"}
    finally:
        await conn.close()
    # Opened again: nothing is migrated twice, nothing lost.
    again = await connect(path)
    try:
        assert (await store.get(again, GUILD)).entries(GuildList.ALLOWED_CONTROLNET) == {"x"}
    finally:
        await again.close()


async def test_a_queued_job_whose_lora_the_server_left_out_since_ends_before_it_renders(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    images = tmp_path / "images"
    request = RenderRequest("a dog <lora:nsfw-pose:0.8>", seed=1, steps=2)
    queued = Submission("imagine", request, MEMBER, GUILD, channel_id=CHANNEL)
    job_id = await JobQueue(conn, [], images).submit(queued)  # journaled while stopped
    policy = GuildPolicy(conn, prompts=PromptPlanner(wildcards_dir=None))
    await policy.change_list(GUILD, MODERATOR, GuildList.ALLOWED_LORA, "family-style", add=True)
    why = "it may use a LoRA, embedding, VAE, upscaler or ControlNet the server no longer allows"
    await ends_before_rendering(conn, job_id, images, why)


async def test_a_named_add_on_not_installed_is_refused_naming_only_those_usable_here(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    (tmp_path / "vae").mkdir()
    for name in ("family-vae", "secret-vae"):
        stand_in_checkpoint(tmp_path / "vae" / f"{name}.safetensors")  # listed by name only
    policy = GuildPolicy(conn, prompts=PromptPlanner(wildcards_dir=None))
    await policy.change_list(GUILD, MODERATOR, GuildList.ALLOWED_VAE, "family-vae", add=True)
    services = cast(
        Services, SimpleNamespace(registry=ModelRegistry(tmp_path), guild_policy=policy)
    )
    missing = RenderRequest("a", options={"vae": "nope", "hires_upscaler": "Lanczos"})
    with pytest.raises(UserError) as refused:
        await check_addons_installed(services, missing, GUILD, {})
    assert (
        str(refused.value)
        == "The VAE `nope` is not installed or not allowed here. You may use: family-vae."
    )
    with pytest.raises(UserError, match=r"You may use: family-vae, secret-vae\.$"):
        await check_addons_installed(services, missing, None, {})  # direct messages: no list
    # Installed (by file name too): left to the server's list, which admission applies.
    installed = RenderRequest("a", options={"vae": "secret-vae.safetensors"})
    await check_addons_installed(services, installed, GUILD, {})


async def test_an_upscale_is_given_and_told_of_only_the_listed_upscalers_still_installed(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    (tmp_path / "upscalers").mkdir()
    stand_in_checkpoint(tmp_path / "upscalers" / "4x-Kept.safetensors")  # listed by name only
    registry = ModelRegistry(tmp_path)
    policy = GuildPolicy(
        conn,
        prompts=PromptPlanner(wildcards_dir=None),
        installed_addons=functools.partial(installed_addons, registry),
    )
    services = cast(Services, SimpleNamespace(registry=registry, guild_policy=policy))
    for listed in ("4x-Gone", "4x-Kept", "Latent (bicubic)"):
        await policy.change_list(GUILD, MODERATOR, GuildList.ALLOWED_UPSCALER, listed, add=True)

    async def upscaler_given() -> object:
        upscale = RenderRequest("", mode="upscale", init_image="in.png")
        admission = await policy.admit(GUILD, CHANNEL, False, upscale)
        await check_addons_installed(services, admission.request, GUILD, admission.installed)
        return admission.request.options["upscaler"]

    assert await upscaler_given() == "4x-Kept"  # 4x-Gone, first by name, is not installed
    named = RenderRequest("", mode="upscale", init_image="in.png", options={"upscaler": "4x-X"})
    with pytest.raises(UserError, match=r"You may use: 4x-Kept, Lanczos\.$"):
        await policy.admit(GUILD, CHANNEL, False, named)  # no removed, no latent upscaler
    await policy.change_list(GUILD, MODERATOR, GuildList.ALLOWED_UPSCALER, "4x-Kept", add=False)
    assert await upscaler_given() == "Lanczos"
    with pytest.raises(UserError, match=r"You may use: Lanczos\.$"):
        await policy.admit(GUILD, CHANNEL, False, named)


async def test_a_controlnet_named_where_controlnets_are_listed_is_looked_up_once(
    conn: aiosqlite.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Admission lists the ControlNets (the server's list names one): the check that it is
    installed, before the acknowledgement, reads that listing instead of walking again."""
    stand_in_checkpoint(tmp_path / "ControlNet" / "canny-x.safetensors")
    registry = ModelRegistry(tmp_path)
    walks: list[Path] = []
    walk = addons.controlnet_files

    def counted(listed: ModelRegistry) -> dict[str, Path]:
        walks.append(listed.models_dir)
        return walk(listed)

    monkeypatch.setattr(addons, "controlnet_files", counted)
    policy = GuildPolicy(
        conn,
        prompts=PromptPlanner(wildcards_dir=None),
        installed_addons=functools.partial(installed_addons, registry),
    )
    services = cast(Services, SimpleNamespace(registry=registry, guild_policy=policy))
    await policy.change_list(GUILD, MODERATOR, GuildList.ALLOWED_CONTROLNET, "canny-x", add=True)
    unit = ControlUnit("canny", "map.png", model="canny-x")
    controlled = with_control_units(RenderRequest("a ring", seed=1), [unit])
    admission = await policy.admit(GUILD, CHANNEL, False, controlled)
    await check_addons_installed(services, admission.request, GUILD, admission.installed)
    assert walks == [tmp_path]


async def test_an_embedding_list_narrowed_ends_only_the_queued_job_that_reads_it(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    images = tmp_path / "images"
    installed = ["bad-hands", "easy-negative"]
    planner = PromptPlanner(wildcards_dir=None, installed_embeddings=lambda: installed)
    policy = GuildPolicy(conn, prompts=planner)
    for name in installed:
        await policy.change_list(GUILD, MODERATOR, GuildList.ALLOWED_EMBEDDING, name, add=True)
    job_ids = []
    for prompt in ("a dog, bad-hands", "a dog"):  # admitted, then journaled while stopped
        request = RenderRequest(prompt, seed=1, steps=2)
        admitted = await policy.admit(GUILD, CHANNEL, False, request, member_id=MEMBER)
        queued = Submission("imagine", admitted.request, MEMBER, GUILD, channel_id=CHANNEL)
        job_ids.append(await JobQueue(conn, [], images).submit(queued))
    await policy.change_list(GUILD, MODERATOR, GuildList.ALLOWED_EMBEDDING, "bad-hands", add=False)
    fake, engine = FakeDiscord(), InstantEngine()
    queue = await started(conn, engine, images, results_for(conn, fake))
    try:
        await all_delivered(conn, job_ids)
    finally:
        await queue.stop()
        planner.close()
    statuses = [(await journal.get_job(conn, job_id)) for job_id in job_ids]
    assert [job.status if job else None for job in statuses] == [
        journal.JobStatus.CANCELLED,
        journal.JobStatus.DONE,
    ]
    assert engine.batches == [1]  # only the job that reads no embedding left out rendered


async def test_refusals_name_lanczos_and_only_the_listed_models_installed(
    conn: aiosqlite.Connection, tmp_path: Path
) -> None:
    # No upscaler installed and no list: Lanczos still enlarges, so the refusal names it.
    services = cast(
        Services,
        SimpleNamespace(
            registry=ModelRegistry(tmp_path),
            guild_policy=GuildPolicy(conn, prompts=PromptPlanner(wildcards_dir=None)),
        ),
    )
    upscale = RenderRequest("", mode="upscale", options={"upscaler": "4x-Gone"})
    with pytest.raises(UserError, match=r"`4x-Gone` is not installed .* You may use: Lanczos\.$"):
        await check_addons_installed(services, upscale, GUILD, {})
    # The model list holds "removed", no longer installed: a refusal does not offer it.
    policy = GuildPolicy(
        conn, prompts=PromptPlanner(wildcards_dir=None), installed_models=lambda: ["tiny", "other"]
    )
    for listed in ("tiny", "removed"):
        await policy.change_list(GUILD, MODERATOR, GuildList.ALLOWED_MODEL, listed, add=True)
    with pytest.raises(UserError) as refused:
        await policy.admit(GUILD, CHANNEL, False, RenderRequest("a", model="other"))
    assert str(refused.value) == (
        "The model `other` is not installed or not allowed here. You may use: tiny."
    )
