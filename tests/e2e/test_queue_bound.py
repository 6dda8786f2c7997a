"""EASEL_MAX_QUEUED_PER_MEMBER through the fake Discord: a member without an image limit
(here: no quota set) cannot queue more than the bound in one server; ``--repeat`` counts as the
jobs it makes; a refusal names the bound and what the member has, and charges nothing; it is
recorded and counted as the queue's (``Reason.QUEUE``), not as a quota refusal."""

from __future__ import annotations

import threading
from pathlib import Path

from bot.app import build
from bot.engines import engine_factory_for
from bot.metrics import METRICS_REGISTRY as REGISTRY
from tests.e2e.conftest import easel_settings
from tests.e2e.helpers import QUICK, RENDER_TIMEOUT_S, has_picture, images_today, reply_to
from tests.e2e.test_prompt_safety import GatedEngine
from tests.fake_discord import FakeDiscord
from tests.fake_discord.fixtures import running_bot
from tests.fake_discord.rest import RESPONSE_DEFERRED_MESSAGE


def refusals_counted() -> tuple[float, float]:
    """Refusals counted as the queue bound's, and as quota refusals."""
    queue = REGISTRY.get_sample_value("easel_refusals_total", {"reason": "queue"})
    return queue or 0.0, REGISTRY.get_sample_value("easel_quota_refusals_total") or 0.0


async def test_a_members_queue_is_bounded_repeats_counted_nothing_charged(
    fake_discord: FakeDiscord, tmp_path: Path, tiny_models_dir: Path
) -> None:
    fake = fake_discord
    settings = easel_settings(fake, tmp_path / "data", tiny_models_dir).model_copy(
        update={"max_queued_per_member": 2}
    )
    gate = threading.Event()  # every render waits: what is submitted stays unfinished
    queue_before, quota_before = refusals_counted()
    real_engines = engine_factory_for(settings)
    bot = build(settings, lambda device: GatedEngine(real_engines(device), gate))
    async with running_bot(fake, bot):
        try:  # opened before the bot stops, else a failed assertion waits for the gated jobs
            first = await fake.invoke_command("imagine", {"prompt": "a dog", **QUICK})
            await first.wait_for_original(lambda m: "Queued" in m.content or "Render" in m.content)
            charged = await images_today(bot.services, fake.user_id, fake.guild_id)
            # One waiting, and a --repeat 2 makes two more: three would pass the bound of 2.
            repeated = await reply_to(fake, "imagine", {"prompt": "a fox --repeat 2", **QUICK})
            assert repeated.is_ephemeral
            assert (
                "at most 2 jobs waiting or running here, and you have 1, "
                "and this request makes 2" in repeated.content
            ), repeated.content
            second = await fake.invoke_command("imagine", {"prompt": "a cat", **QUICK})
            await second.wait_for_original(lambda m: "Queued" in m.content)
            # At the bound: refused before the deferral, privately, with what they have.
            third = await fake.invoke_command("imagine", {"prompt": "a bird", **QUICK})
            refused = await third.wait_for_answer()
            assert refused.is_ephemeral and "you have 2." in refused.content, refused.content
            assert third.response_type != RESPONSE_DEFERRED_MESSAGE
            # Nothing charged for the refusals: only the two queued jobs reserved pictures.
            after = await images_today(bot.services, fake.user_id, fake.guild_id)
            assert after == charged + 1
        finally:
            gate.set()
        await first.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        await second.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    queue_after, quota_after = refusals_counted()
    assert (queue_after - queue_before, quota_after - quota_before) == (2, 0)
