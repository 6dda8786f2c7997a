"""Midjourney flags (``--repeat``, ``--relax``, ``--tile``), the clip skip option and presets,
through the fake Discord with the real tiny model."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.jobs.queue import FinishedJob
from inference.infotext import InfotextValue, infotext_from_png, parse_infotext
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    has_picture,
    imagine,
    job_id_of,
    limit_daily_images,
    reply_to,
)
from tests.fake_discord import FakeDiscord, StoredMessage


def params_of(message: StoredMessage) -> dict[str, InfotextValue]:
    infotext = infotext_from_png(message.attachments[0].data)
    assert infotext is not None
    return parse_infotext(infotext)[2]


async def imagine_unset_steps(fake: FakeDiscord, prompt: str, **options: Any) -> StoredMessage:
    """/imagine without a steps option, so a preset's steps count."""
    handle = await fake.invoke_command("imagine", {"prompt": prompt, "size": "64x64", **options})
    return await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)


async def test_repeat_is_charged_per_job_relax_is_free_and_flags_reach_the_picture(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel() as bot:
        await limit_daily_images(fake_discord, 3)
        first = await imagine(fake_discord, "a fox --repeat 2 --tile", clip_skip=2)
        repeat = await fake_discord.wait_for_channel_message(
            lambda m: has_picture(m) and m.id != first.id, timeout=RENDER_TIMEOUT_S
        )
        assert f"<@{fake_discord.user_id}>" in repeat.content
        for message in (first, repeat):
            params = params_of(message)
            assert (params["Tiling"], params["Clip skip"]) == ("True", 2)
        assert params_of(first)["Seed"] != params_of(repeat)["Seed"]
        assert "**Day:** 2 of 3 images" in (await reply_to(fake_discord, "quota")).content

        # Two more jobs do not fit the one picture left: refused together, nothing queued.
        over = await fake_discord.invoke_command("imagine", {"prompt": "a fox --repeat 2", **QUICK})
        refusal = await over.wait_for_original(lambda m: "⛔" in m.content)
        assert refusal.is_ephemeral and "needs 2 images but you have 1 of 3 left" in refusal.content
        assert bot.queue.queued_count() == 0

        relaxed = await imagine(fake_discord, "a fox --relax")
        assert params_of(relaxed)["Relax"] == "True"
        assert "**Day:** 2 of 3 images" in (await reply_to(fake_discord, "quota")).content


async def test_relax_jobs_wait_for_every_other_job(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel() as bot:
        delivered: list[str] = []
        deliver = bot.results.deliver

        async def recording_deliver(job: FinishedJob) -> int | None:
            delivered.append(job.job_id)
            return await deliver(job)

        bot.queue.set_sink(type("Recording", (), {"deliver": staticmethod(recording_deliver)})())
        owner = fake_discord.owner_id
        long_job = await fake_discord.invoke_command(
            "imagine", {"prompt": "a long cat", "steps": 150, "size": "256x256"}, user=owner
        )
        await long_job.wait_for_original(lambda m: "Rendering" in m.content, timeout=30)
        # Submitted first, by this member; then another member's ordinary job (another size,
        # so they are never batched together).
        relaxed = await fake_discord.invoke_command(
            "imagine", {"prompt": "a cat --relax --repeat 3", "steps": 2, "size": "64x64"}
        )
        await relaxed.wait_for_followup(lambda m: "2 more jobs of this prompt queued" in m.content)
        # Free jobs are bounded: three waiting, and two more would make five.
        flood = await reply_to(fake_discord, "imagine", {"prompt": "a cat --relax --repeat 2"})
        assert flood.is_ephemeral and "at most 4 jobs waiting or running" in flood.content
        other = 4343
        fake_discord.add_member(other, "other", roles=(fake_discord.member_role_id,))
        standard = await fake_discord.invoke_command(
            "imagine", {"prompt": "a dog", "steps": 2, "size": "128x64"}, user=other
        )
        await standard.wait_for_original(lambda m: "Queued" in m.content)
        await reply_to(fake_discord, "cancel", user=owner)  # the device is free again
        standard_result = await standard.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        relaxed_result = await relaxed.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        for _ in range(RENDER_TIMEOUT_S * 10):
            if len(delivered) == 5:  # the long job (cancelled), the dog, three relaxed cats
                break
            await asyncio.sleep(0.1)
        assert delivered[1] == job_id_of(standard_result)
        assert job_id_of(relaxed_result) in delivered[2:] and len(delivered) == 5


async def test_presets_round_trip_and_server_presets_are_for_admins(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    owner = fake_discord.owner_id
    async with start_easel():
        settings = await reply_to(fake_discord, "settings", {"clip_skip": 2})
        assert "clip skip: `2`" in settings.content
        saved = await reply_to(
            fake_discord, "presets save", {"name": "Quick", "steps": 3, "clip_skip": 1}
        )
        assert saved.is_ephemeral and "Saved your preset **Quick**" in saved.content
        result = await imagine_unset_steps(fake_discord, "a cat --preset quick")
        params = params_of(result)
        assert params["Steps"] == 3 and "Clip skip" not in params  # the preset beats /settings
        listed = await reply_to(fake_discord, "presets list")
        assert "**Your presets**" in listed.content and "steps: `3`" in listed.content

        refused = await reply_to(
            fake_discord, "easel-admin preset", {"action": "add", "name": "Quick"}
        )
        assert "You need the Manage Server permission" in refused.content
        await reply_to(fake_discord, "presets save", {"name": "house", "steps": 2}, user=owner)
        shared = await reply_to(
            fake_discord, "easel-admin preset", {"action": "add", "name": "house"}, user=owner
        )
        assert "Server preset saved: **house**" in shared.content
        house = await imagine_unset_steps(fake_discord, "a dog", preset="house")
        assert params_of(house)["Steps"] == 2
        choices = await fake_discord.autocomplete(
            "imagine", {"prompt": "x", "preset": ""}, "preset"
        )
        assert [choice["value"] for choice in choices] == ["Quick", "house"]

        await reply_to(fake_discord, "presets delete", {"name": "quick"})
        gone = await reply_to(fake_discord, "imagine", {"prompt": "a cat --preset quick"})
        assert gone.is_ephemeral and "No preset named 'quick'" in gone.content
        # Without the preset, the member's own clip skip applies again.
        assert params_of(await imagine(fake_discord, "a cat"))["Clip skip"] == 2
        # More layers than the tiny model's text encoder has: told as it is, not "internal".
        too_deep = await fake_discord.invoke_command(
            "imagine", {"prompt": "a cat", "clip_skip": 3, **QUICK}
        )
        failed = await too_deep.wait_for_original(
            lambda m: "❌" in m.content, timeout=RENDER_TIMEOUT_S
        )
        assert "clip skip must be in 1..2, got 3 (this model's text encoder" in failed.content
