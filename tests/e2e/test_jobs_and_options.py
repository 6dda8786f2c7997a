"""/cancel, /queue, /quota, the quota refusal, autocomplete and /imagine's style and hires
options, through the fake Discord with the real tiny model."""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any, NoReturn

import aiosqlite
import pytest
from PIL import Image

from bot.jobs.accounting import Member
from bot.jobs.queue import CancelOutcome
from bot.policy.delivery import MODERATOR_STOPPED
from bot.settings import Settings
from db import jobs as journal
from inference.engine import Engine
from inference.infotext import infotext_from_png, parse_infotext
from inference.types import RenderFailed
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    imagine,
    limit_daily_images,
    reply_to,
)
from tests.fake_discord import FakeDiscord


async def test_queue_and_cancel_your_latest_job(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The queued job's cancel is held as its end is written (minutes on a busy database).
    writing, written = asyncio.Event(), asyncio.Event()
    mark_failed = journal.mark_failed

    async def held_end(conn: aiosqlite.Connection, job_id: str, *args: Any, **kwargs: Any) -> None:
        if not written.is_set():
            writing.set()
            await written.wait()
        await mark_failed(conn, job_id, *args, **kwargs)

    monkeypatch.setattr(journal, "mark_failed", held_end)
    async with start_easel() as bot:
        nothing = await reply_to(fake_discord, "cancel")
        assert nothing.is_ephemeral and "no queued or running job" in nothing.content
        long_job = await fake_discord.invoke_command(
            "imagine", {"prompt": "a long cat", "steps": 150, "size": "256x256"}
        )
        await long_job.wait_for_original(lambda m: "Rendering" in m.content, timeout=30)
        waiting = await fake_discord.invoke_command("imagine", {"prompt": "a next cat", **QUICK})
        await waiting.wait_for_original(lambda m: "Queued" in m.content)

        listed = await reply_to(fake_discord, "queue")
        assert listed.is_ephemeral and "1 job waiting in all" in listed.content
        assert "rendering" in listed.content and "position 1" in listed.content
        assert "a long cat" in listed.content and "a next cat" in listed.content

        cancel = await fake_discord.invoke_command("cancel", {})  # the newest: the queued one
        await asyncio.wait_for(writing.wait(), RENDER_TIMEOUT_S)
        listed = await reply_to(fake_discord, "queue")
        [_rendering, stopping] = listed.content.splitlines()[1:]
        assert "stopping… (your cancel) — a next cat" in stopping
        written.set()
        latest = await cancel.wait_for_answer()
        assert "Cancelled job" in latest.content
        await waiting.wait_for_original(lambda m: "Cancelled (job" in m.content)
        fake_discord.add_member(4242, "stranger", roles=(fake_discord.member_role_id,))
        [running] = await bot.services.history.unfinished(
            fake_discord.user_id, guild_id=fake_discord.guild_id
        )
        running_id = running.job_id
        stranger = await reply_to(fake_discord, "cancel", {"job_id": running_id}, user=4242)
        assert "is not yours" in stranger.content
        admin = await reply_to(
            fake_discord, "cancel", {"job_id": running_id}, user=fake_discord.owner_id
        )
        assert f"Stopped job `{running_id}`; nothing is charged" in admin.content
        # Its maker did not stop it: told a moderator did (``journal.StoppedBy``), uncharged.
        stopped = await long_job.wait_for_original(
            lambda m: MODERATOR_STOPPED in m.content, timeout=30
        )
        assert "does not count against your quota" in stopped.content
        assert bot.queue.queued_count() == 0


async def test_a_failed_renders_post_names_its_job_once(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(*_args: object, **_kwargs: object) -> NoReturn:
        raise RenderFailed("the model file could not be read")

    monkeypatch.setattr(Engine, "render", unreadable)
    monkeypatch.setattr(Engine, "render_batch", unreadable)
    async with start_easel():
        handle = await fake_discord.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        failed = await handle.wait_for_original(
            lambda m: "❌" in m.content, timeout=RENDER_TIMEOUT_S
        )
    assert "the model file could not be read; reference " in failed.content
    [job_id] = re.findall(r"reference ([0-9a-f]{16})", failed.content)
    assert failed.content.count(job_id) == 1, failed.content


async def test_quota_report_and_ephemeral_refusal(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel() as bot:
        await limit_daily_images(fake_discord, 1)
        await imagine(fake_discord, "a counted cat")
        report = await reply_to(fake_discord, "quota")
        assert report.is_ephemeral and "**Day:** 1 of 1 images" in report.content
        assert "**Week:** 1 images (no limit)" in report.content and "resets <t:" in report.content

        over = await fake_discord.invoke_command("imagine", {"prompt": "one more cat", **QUICK})
        refusal = await over.wait_for_original(lambda m: "⛔" in m.content)
        assert refusal.is_ephemeral and "used 1 of 1 images today" in refusal.content
        assert over.response_type == 4  # answered at once: never deferred in public
        assert bot.queue.queued_count() == 0


async def test_autocomplete_lists_what_is_installed(
    fake_discord: FakeDiscord, start_easel: StartEasel, easel_settings_for_test: Settings
) -> None:
    easel_settings_for_test.data_dir.mkdir(parents=True, exist_ok=True)
    # A name over 100 characters cannot be a choice (Discord would refuse the whole list):
    # it is left out, and /imagine takes it typed in full (/presets save's style does not:
    # that option is capped at 100, cogs/choices.py).
    long_name = "Oil painting" + " in the manner of an old master" * 4
    (easel_settings_for_test.data_dir / "styles.csv").write_text(
        "name,prompt,negative_prompt\n"
        'Oil painting,"oil painting of {prompt}, brush strokes",photo\n'
        f'{long_name},"oil painting of {{prompt}}, brush strokes",photo\n'
        + "".join(f"Style {n},style {n},\n" for n in range(30))
    )
    async with start_easel():
        models = await fake_discord.autocomplete("imagine", {"prompt": "x", "model": ""}, "model")
        assert [choice["value"] for choice in models] == ["tiny"]
        samplers = await fake_discord.autocomplete(
            "imagine", {"prompt": "x", "sampler": "dpm++ 2m"}, "sampler"
        )
        names = [choice["value"] for choice in samplers]
        assert 1 <= len(names) <= 25 and "DPM++ 2M Karras" in names
        styles = await fake_discord.autocomplete("imagine", {"prompt": "x", "style": ""}, "style")
        assert len(styles) == 25  # 32 styles, capped
        oil = await fake_discord.autocomplete("imagine", {"prompt": "x", "style": "oil"}, "style")
        assert [choice["value"] for choice in oil] == ["Oil painting"]

        result = await imagine(fake_discord, "a cat --ar 1:1", style=long_name, hires=True)
        infotext = infotext_from_png(result.attachments[0].data)
        assert infotext is not None
        prompt, negative, params = parse_infotext(infotext)
        assert prompt == "oil painting of a cat, brush strokes" and negative == "photo"
        assert (params["Hires upscale"], params["Hires upscaler"]) == (2, "Lanczos")
        with Image.open(io.BytesIO(result.attachments[0].data)) as image:
            assert image.size == (128, 128)  # 64x64, then the hires pass at twice that
        # size overrides the prompt's --ar: the member is told so under the result.
        assert "Note: the size option (64x64) overrides the prompt's --ar" in result.content

        unknown = await reply_to(
            fake_discord, "imagine", {"prompt": "a cat", "style": "Nope", **QUICK}
        )
        assert unknown.is_ephemeral and "Style 'Nope' does not exist" in unknown.content


async def test_schedule_type_option_reaches_the_picture(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    async with start_easel():
        offered = await fake_discord.autocomplete(
            "imagine", {"prompt": "x", "schedule_type": "karr"}, "schedule_type"
        )
        assert [choice["value"] for choice in offered] == ["Karras"]
        # Euler a on Karras: the web UI runs it, diffusers' own ancestral Euler cannot.
        result = await imagine(fake_discord, "a cat", sampler="Euler a", schedule_type="Karras")
        infotext = infotext_from_png(result.attachments[0].data)
        assert infotext is not None
        params = parse_infotext(infotext)[2]
        assert (params["Sampler"], params["Schedule type"]) == ("Euler a", "Karras")
        refused = await reply_to(
            fake_discord,
            "imagine",
            {"prompt": "a cat", "sampler": "DDIM", "schedule_type": "Karras", **QUICK},
        )
        assert refused.is_ephemeral and "Karras" in refused.content


async def test_a_cancel_held_up_by_the_database_is_answered_first_and_told_after(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with start_easel() as bot:
        written = asyncio.Event()
        cancel = bot.queue.cancel

        async def held_cancel(job_id: str, by: Member, *, imposed: bool = False) -> CancelOutcome:
            await written.wait()  # the journal's tries: minutes, past Discord's 3 s
            return await cancel(job_id, by, imposed=imposed)

        monkeypatch.setattr(bot.queue, "cancel", held_cancel)
        handle = await fake_discord.invoke_command("cancel", {"job_id": "0" * 16})
        answered = await handle.wait_for_original()
        assert answered.is_loading and answered.is_ephemeral
        written.set()
        told = await handle.wait_for_original(lambda m: not m.is_loading)
        assert told.is_ephemeral and "There is no job `0000000000000000` here" in told.content
