"""A `--relax` job asked over the fake Discord joins no batch while paid jobs of others wait
before it (AUD25 F3, ``bot.jobs.scheduler``), and still shares one with a relax job once
nothing else waits: what the scheduler's and the queue's tests hold, through /imagine's
admission (the flag read from the prompt, its free class) and the delivery of every result."""

from __future__ import annotations

import asyncio

from tests.e2e.helpers import RENDER_TIMEOUT_S, StartEasel
from tests.fake_discord import FakeDiscord, InteractionHandle
from tests.support.engines import HeldEngine
from tests.support.pictures import has_picture

MEMBERS = (7101, 7102, 7103, 7104, 7105)
WAIT_S = 30.0


async def test_a_relax_job_waits_behind_paid_jobs_and_batches_with_relax_ones(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    """While a render holds the device, member 7101 asks for a picture, members 7102 and 7103
    for pictures of other settings, then members 7104 and 7105 for 7101's settings with
    ``--relax``: 7101's renders alone, the paid ones next, and the two relax jobs last, in one
    call together."""
    fake = fake_discord
    for user in MEMBERS:
        fake.add_member(user, f"m-{user}", roles=(fake.member_role_id,))

    async def queued(prompt: str, user: int, cfg: float) -> InteractionHandle:
        options = {"prompt": prompt, "steps": 2, "size": "64x64", "cfg": cfg}
        handle = await fake.invoke_command("imagine", options, user=user)
        await handle.wait_for_original(lambda message: not message.is_loading, timeout=WAIT_S)
        return handle

    engine = HeldEngine()
    async with start_easel(lambda device: engine):
        with engine:
            handles = [await queued("a blocker", fake.user_id, cfg=9.0)]
            assert await asyncio.to_thread(engine.started.wait, RENDER_TIMEOUT_S)
            handles.append(await queued("a cat", 7101, cfg=1.0))
            handles.append(await queued("a dog", 7102, cfg=2.0))  # batched with no one
            handles.append(await queued("a fox", 7103, cfg=3.0))
            handles.append(await queued("a cat --relax", 7104, cfg=1.0))
            handles.append(await queued("a cat --relax", 7105, cfg=1.0))
        for handle in handles:
            await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
    calls, rendered = engine.batches, [request.prompt for request in engine.rendered]
    assert rendered == ["a blocker", "a cat", "a dog", "a fox", "a cat", "a cat"]
    assert calls == [1, 1, 1, 1, 2]
    assert [request.options.get("relax") for request in engine.rendered[-2:]] == [True, True]
