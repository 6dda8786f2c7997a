"""A member who stops their picture while it shares the device with another member's (one call
renders both) sees it end at once: Cancel answers so, and its progress message says it
stopped, then (its end written at once: ``JobQueue._stopped_in_batch``) becomes its notice,
without its preview nor a Cancel button, and shows nothing of it after, while the partner's
picture still renders; that one renders on and is posted. Over the fake Discord."""

from __future__ import annotations

from tests.e2e.helpers import RENDER_TIMEOUT_S, StartEasel
from tests.fake_discord import FakeDiscord
from tests.fake_discord.records import InteractionHandle, RestCall
from tests.support.engines import SharedBatchEngine

PARTNER = 7301
_ORIGINAL_EDIT = "/webhooks/{app}/{token}/messages/{message}"
_QUICK = {"steps": 40, "size": "64x64"}


def edits_of(fake: FakeDiscord, job: InteractionHandle) -> list[RestCall]:
    """The edits of ``job``'s response, in the order the fake took them."""
    return [call for call in fake.calls_to("PATCH", _ORIGINAL_EDIT) if job.token in call.path]


async def test_a_picture_stopped_beside_anothers_ends_at_once_and_shows_no_more(
    fake_discord: FakeDiscord, start_easel: StartEasel
) -> None:
    fake = fake_discord
    fake.add_member(PARTNER, "partner")
    with SharedBatchEngine(seconds=5.0, preview=b"\xff\xd8 a preview") as engine:
        engine.finish_lone.clear()
        async with start_easel(lambda _device: engine):
            # Renders first (another size), held: the two after it wait, then render as one
            # batch.
            first = await fake.invoke_command(
                "imagine", {"prompt": "a first", "steps": 40, "size": "128x128"}
            )
            await first.wait_for_original(
                lambda m: "Rendering" in m.content, timeout=RENDER_TIMEOUT_S
            )
            mine = await fake.invoke_command("imagine", {"prompt": "my cat", **_QUICK})
            theirs = await fake.invoke_command(
                "imagine", {"prompt": "their dog", **_QUICK}, user=PARTNER
            )
            for queued in (mine, theirs):
                await queued.wait_for_original(lambda m: "Queued" in m.content)
            engine.finish_lone.set()
            shown = await mine.wait_for_original(
                lambda m: "Rendering" in m.content and bool(m.attachments),
                timeout=RENDER_TIMEOUT_S,
            )
            click = await fake.click(shown, shown.custom_ids[0])
            answer = await click.wait_for_original(lambda m: not m.is_loading)
            assert "sharing the device with other pictures" in answer.content
            assert "you pay only for the GPU time until now" in answer.content
            # Before its batch ends (held before its last step until the test goes on).
            ended = await mine.wait_for_original(
                lambda m: "Cancelled (job" in m.content, timeout=RENDER_TIMEOUT_S
            )
            assert not ended.attachments and not ended.custom_ids
            engine.finish_batch.set()
            posted = await theirs.wait_for_original(
                lambda m: "Rendering" not in m.content and bool(m.attachments),
                timeout=RENDER_TIMEOUT_S,
            )
            assert [a.filename.endswith(".png") for a in posted.attachments] == [True]
            assert mine.original is not None and mine.original.content == ended.content
    assert engine.batches[-1] == 2
    edits = edits_of(fake, mine)
    told = next(
        i
        for i, call in enumerate(edits)
        if any(said in call.json["content"] for said in ("⏹️ Stopped", "Cancelled (job"))
    )
    assert any(("preview.jpg", len(b"\xff\xd8 a preview")) in call.files for call in edits[:told])
    # Said before its end is written (a ban meanwhile would make it free): no charge promised.
    stopped = [call.json["content"] for call in edits if "⏹️ Stopped" in call.json["content"]]
    assert stopped and all("you pay at most for the GPU time" in said for said in stopped)
    assert not any(call.files for call in edits[told:])  # no preview of it from then on
