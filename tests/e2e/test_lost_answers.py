"""Discord acts on a request and its answer is lost (a Cloudflare 502): discord.py sends the
request again. A re-post (/show, U1-U4) is one message, the one recorded; a defer sent again
is refused as already acknowledged, and the job goes on; an interaction Discord delivers
twice is one job. Over the fake Discord."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from bot.settings import Settings
from db.database import connect
from tests.conftest import ErrorLogs
from tests.e2e.helpers import (
    QUICK,
    RENDER_TIMEOUT_S,
    StartEasel,
    images_today,
    imagine,
    job_id_of,
    reply_to,
)
from tests.fake_discord import FakeDiscord, InteractionHandle, StoredMessage, Violation
from tests.support.pictures import has_picture

CALLBACK = ("POST", "/interactions/{interaction}/{token}/callback")
FOLLOW_UP = ("POST", "/webhooks/{app}/{token}")
EDIT = ("PATCH", "/webhooks/{app}/{token}/messages/{message}")
BAD_GATEWAY = 502
# discord.py sends a request again 1 s after a 5xx: the post is recorded once that answered.
RECORDED_WAIT_S = 10


def lose_the_next_answer(fake: FakeDiscord, *routes: tuple[str, str]) -> None:
    for method, route in routes:
        fake.fail(method, route, status=BAD_GATEWAY, landed=True)


async def read(settings: Settings, sql: str, *args: object) -> list[tuple[object, ...]]:
    conn = await connect(settings.database_path)
    try:
        return [tuple(row) for row in await conn.execute_fetchall(sql, args)]
    finally:
        await conn.close()


async def posts_recorded(settings: Settings, job_id: str, count: int) -> set[object]:
    """The job's posts recorded (``job_messages``), once there are ``count`` of them."""
    async with asyncio.timeout(RECORDED_WAIT_S):
        while True:
            posts = await read(
                settings, "SELECT message_id FROM job_messages WHERE job_id = ?", job_id
            )
            if len(posts) >= count:
                return {message_id for (message_id,) in posts}
            await asyncio.sleep(0.05)


def public_posts_of(fake: FakeDiscord, job_id: str, *, besides: StoredMessage) -> list[int]:
    return [
        m.id
        for m in fake.messages.values()
        if has_picture(m) and not m.is_ephemeral and m.id != besides.id and job_id in m.content
    ]


async def show(fake: FakeDiscord, result: StoredMessage) -> InteractionHandle:
    return await fake.invoke_command("show", {"job_id": job_id_of(result)})


async def pick(fake: FakeDiscord, result: StoredMessage) -> InteractionHandle:
    return await fake.click(result, label="U2")


@pytest.mark.parametrize("post_again", [show, pick])
async def test_a_re_post_whose_answer_is_lost_is_posted_once_and_recorded(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    easel_settings_for_test: Settings,
    post_again: Callable[[FakeDiscord, StoredMessage], Awaitable[InteractionHandle]],
) -> None:
    fake = fake_discord
    async with start_easel():
        result = await imagine(fake, "a fox", count=2)
        job_id = job_id_of(result)
        # Whichever way the post goes, a follow-up or an edit, its first answer is lost.
        lose_the_next_answer(fake, FOLLOW_UP, EDIT)
        handle = await post_again(fake, result)
        await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        recorded = await posts_recorded(easel_settings_for_test, job_id, 2)
        [posted] = public_posts_of(fake, job_id, besides=result)
        assert posted in recorded
        statuses = [c.status for c in fake.calls_to(*EDIT) if handle.token in c.path]
        assert statuses == [BAD_GATEWAY, 200]


async def test_a_defer_whose_answer_is_lost_still_renders_the_job(
    fake_discord: FakeDiscord, start_easel: StartEasel, error_logs: ErrorLogs
) -> None:
    fake = fake_discord
    async with start_easel() as bot:
        lose_the_next_answer(fake, CALLBACK)
        handle = await fake.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        result = await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        assert "a cat" in result.content and not result.is_ephemeral
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 1
    # discord.py sent the defer again, which Discord refused: the one double answer.
    assert handle.error_codes == [40060]
    [violation] = fake.take_violations()
    assert violation.startswith(Violation.DOUBLE_ACK)


async def test_an_interaction_delivered_twice_is_one_job(
    fake_discord: FakeDiscord,
    start_easel: StartEasel,
    error_logs: ErrorLogs,
    easel_settings_for_test: Settings,
) -> None:
    fake = fake_discord
    async with start_easel() as bot:
        handle = await fake.invoke_command("imagine", {"prompt": "a cat", **QUICK})
        await fake._gateway.dispatch("INTERACTION_CREATE", handle.payload)
        await handle.wait_for_original(has_picture, timeout=RENDER_TIMEOUT_S)
        # Events are handled in order: a later command answered, the replay was handled too.
        await reply_to(fake, "history")
        assert await images_today(bot.services, fake.user_id, fake.guild_id) == 1
        assert await read(easel_settings_for_test, "SELECT count(*) FROM jobs") == [(1,)]
    assert handle.error_codes == []
