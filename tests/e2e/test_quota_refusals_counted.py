"""``easel_quota_refusals`` through the fake Discord and the mask editor's page: every path
that tells a member their quota refused a job counts it once (``bot.refusals.quota_refused``):
before the deferral, a button, an upload's command before its picture is read, a submit
another job beat (its --repeat too), the mask editor's submit; and /use-settings, whose
picture may make a free job, when the quota refuses the job and the queue bound its free
form."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from bot.app import build
from bot.engines import engine_factory_for
from bot.jobs.queue import JobQueue, Submission
from bot.metrics import METRICS_REGISTRY as REGISTRY
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    has_picture,
    imagine,
    limit_daily_images,
    link_of,
    reply_to,
    with_web_server,
)
from tests.e2e.test_edits import source_png
from tests.e2e.test_prompt_safety import GatedEngine
from tests.e2e.test_region import mask_form
from tests.fake_discord import FakeDiscord, StoredMessage
from tests.fake_discord.fixtures import running_bot

UPLOAD = {"image": ("fox.png", source_png())}


def quota_refusals() -> float:
    return REGISTRY.get_sample_value("easel_quota_refusals_total") or 0.0


def queue_refusals() -> float:
    return REGISTRY.get_sample_value("easel_refusals_total", {"reason": "queue"}) or 0.0


@asynccontextmanager
async def counted_once(path: str) -> AsyncIterator[None]:
    """The block tells one quota refusal: counted exactly once."""
    before = quota_refusals()
    yield
    assert quota_refusals() - before == 1, f"{path}: counted {quota_refusals() - before}"


async def memory_says_yes(queue: JobQueue, submission: Submission, jobs: int = 1) -> None:
    return None  # another job's charge has not reached the figures in memory yet


async def test_each_path_that_tells_a_quota_refusal_counts_it_once(
    fake_discord: FakeDiscord, start_easel: StartEasel, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_discord
    async with start_easel():
        result = await imagine(fake, "a lighthouse")
        await limit_daily_images(fake, 1)  # that was the member's last picture today
        start = quota_refusals()
        async with counted_once("/imagine, before the deferral"):
            refused = await reply_to(fake, "imagine", {"prompt": "a cat", **QUICK})
            assert refused.is_ephemeral and refused.content.startswith("⛔"), refused.content
        async with counted_once("a button"):
            click = await fake.click(result, label="Vary (Subtle)")
            refused = await click.wait_for_answer()
            assert refused.is_ephemeral and refused.content.startswith("⛔"), refused.content
        async with counted_once("an upload's command, before its picture is read"):
            refused = await reply_to(fake, "vary", {}, attachments=UPLOAD)
            assert refused.is_ephemeral and refused.content.startswith("⛔"), refused.content

        monkeypatch.setattr(JobQueue, "quota_refusal", memory_says_yes)
        async with counted_once("a submit another job beat"):
            handle = await fake.invoke_command("imagine", {"prompt": "a dog", **QUICK})
            refused = await handle.wait_for_followup(lambda m: "⛔" in m.content)
            assert refused.is_ephemeral, refused.content
        # Room for one more picture. The up-front check, asked for both of a --repeat 2's,
        # would refuse the whole request; it is reached only because memory_says_yes still
        # stands in for JobQueue.quota_refusal (above): the first job is admitted, and
        # "Repeat 2 of 2" is refused at its own submit.
        await limit_daily_images(fake, 2)
        async with counted_once("a --repeat's later job"):
            handle = await fake.invoke_command("imagine", {"prompt": "a fox --repeat 2", **QUICK})
            refused = await handle.wait_for_followup(lambda m: "Repeat 2 of 2" in m.content)
            assert refused.is_ephemeral and refused.content.startswith("⛔"), refused.content
        await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert quota_refusals() - start == 5


async def test_the_mask_editors_quota_refusals_are_counted_once(
    fake_discord: FakeDiscord,
    tmp_path: Path,
    region_models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = fake_discord
    settings = with_web_server(easel_settings(fake, tmp_path / "data", region_models_dir))

    async def paint(http: aiohttp.ClientSession, result: StoredMessage) -> tuple[int, str]:
        """The member's mask, painted on a fresh link's page and submitted."""
        click = await fake.click(result, label="Vary (Region)")
        offer = await click.wait_for_original(lambda m: not m.is_loading)
        async with http.post(link_of(offer), data=mask_form(painted=True)) as posted:
            return posted.status, await posted.text()

    async with running_bot(fake, build(settings)), aiohttp.ClientSession() as http:
        result = await imagine(fake, "a lighthouse at dusk")
        await limit_daily_images(fake, 1)
        async with counted_once("the mask editor's submit"):
            status, text = await paint(http, result)
            assert status == 400 and text.startswith("⛔"), (status, text)
        monkeypatch.setattr(JobQueue, "quota_refusal", memory_says_yes)
        async with counted_once("the mask editor's submit another job beat"):
            status, text = await paint(http, result)
            assert status == 400 and text.startswith("⛔"), (status, text)


async def test_use_settings_refused_by_the_quota_and_its_free_form_by_the_bound_counts_once(
    fake_discord: FakeDiscord, tmp_path: Path, tiny_models_dir: Path
) -> None:
    """Its picture's settings may ask for a free --relax job: refused up front only because
    neither fits, the member told both reasons in one sentence, recorded as the queue
    bound's (what a free job meets) and counted once as a quota refusal too."""
    fake = fake_discord
    settings = easel_settings(fake, tmp_path / "data", tiny_models_dir).model_copy(
        update={"max_queued_per_member": 1}
    )
    gate = threading.Event()  # the member's one job stays unfinished: the bound is reached
    real_engines = engine_factory_for(settings)
    bot = build(settings, lambda device: GatedEngine(real_engines(device), gate))
    async with running_bot(fake, bot):
        try:  # opened before the bot stops, else a failed assertion waits for the gated job
            await limit_daily_images(fake, 1)
            first = await fake.invoke_command("imagine", {"prompt": "a dog", **QUICK})
            await first.wait_for_original(lambda m: "Queued" in m.content or "Render" in m.content)
            queue_before = queue_refusals()
            async with counted_once("/use-settings, both forms refused"):
                refused = await reply_to(fake, "use-settings", {}, attachments=UPLOAD)
            assert refused.is_ephemeral and refused.content.startswith("⛔"), refused.content
            assert " As a --relax job: " in refused.content, refused.content
            assert queue_refusals() - queue_before == 1
        finally:
            gate.set()
        await first.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
