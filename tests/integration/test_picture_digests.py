"""Pictures known by their pixels, not their name: the queue records each stored result's
pixel digest, and the grid's a job of several is posted as (rendered here, or a broker worker's
PNG), and an upload of a copy saved again under another name without its PNG text is refused
while the job is withdrawn, or outside age-restricted channels when it was made in one, in the
job's own server only. Real SQLite, the real queue and policy."""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiosqlite
import pytest
from PIL import Image

from bot.history import History
from bot.images import pixel_digest_of, posted_file
from bot.jobs.queue import Submission
from bot.picture_work import PictureWork
from bot.policy.guild import GuildPolicy
from bot.policy.member_settings import MemberSettings
from bot.policy.moderation import (
    AGE_RESTRICTED_PICTURE,
    BANNED_SINCE,
    STORED_TOO_LONG,
    WITHDRAWN_PICTURE,
)
from bot.policy.prompt_safety import PromptPlanner
from bot.user_errors import UserError
from cogs.results.posting import result_png
from cogs.results.story import checked_upload
from db import jobs as journal
from db.guild_settings import GuildList
from inference.types import RenderedImage, RenderRequest
from inference.worker import DeviceWorker
from tests.support.discord_clock import SNOWFLAKE_CLOCK
from tests.support.engines import InstantEngine
from tests.support.sinks import started_queue

MEMBER, GUILD, CHANNEL, OTHER_GUILD = 7, 5, 50, 6


class WorkerEngine(InstantEngine):
    """Pictures as a broker worker's reach the bot: their PNGs only, no pixels."""

    @staticmethod
    def _pictures(request: RenderRequest) -> list[RenderedImage]:
        rendered = InstantEngine._pictures(request)
        return [dataclasses.replace(image, picture=None) for image in rendered]


async def rendered_job(
    conn: aiosqlite.Connection,
    images_dir: Path,
    engine: InstantEngine,
    seed: int,
    *,
    count: int = 1,
    age_restricted: bool = False,
    filesize_limit: int | None = None,
) -> tuple[str, bytes]:
    """A job of ``GUILD`` rendered, stored and posted by the queue, and the picture it was
    posted as (``result_png``: a job of several, its grid)."""
    queue, sink = await started_queue(conn, [DeviceWorker("cpu", lambda _: engine)], images_dir)
    request = RenderRequest("a lighthouse", seed=seed, steps=2, count=count)
    submission = Submission(
        "imagine",
        request,
        MEMBER,
        GUILD,
        CHANNEL,
        age_restricted=age_restricted,
        filesize_limit=filesize_limit,
    )
    job_id = await queue.submit(submission)
    await sink.wait_for(1)
    await queue.stop()
    return job_id, result_png(sink.delivered[0])


def resaved(png: bytes) -> bytes:
    """A picture as a member saves it again: a PNG without its text."""
    buffer = io.BytesIO()
    with Image.open(io.BytesIO(png)) as picture:
        picture.save(buffer, format="PNG")
    assert b"parameters" not in buffer.getvalue()
    return buffer.getvalue()


def channel(*, age_restricted: bool) -> SimpleNamespace:
    return SimpleNamespace(is_nsfw=lambda: age_restricted)


def uploading_in(
    guild_id: int,
    services: SimpleNamespace,
    *,
    here_age_restricted: bool = False,
    made_in_age_restricted_now: bool = False,
) -> Any:
    """An interaction of ``MEMBER`` in ``guild_id``, as far as ``checked_upload`` reads one:
    in a channel age-restricted or not, the jobs' ``CHANNEL`` age-restricted now or not."""
    made_in = channel(age_restricted=made_in_age_restricted_now)
    guild = SimpleNamespace(get_channel_or_thread=lambda _: made_in)
    return SimpleNamespace(
        guild_id=guild_id,
        channel=channel(age_restricted=here_age_restricted),
        user=SimpleNamespace(id=MEMBER),
        client=SimpleNamespace(services=services, get_guild=lambda _: guild),
    )


@pytest.fixture
def planner() -> PromptPlanner:
    return PromptPlanner(wildcards_dir=None)


@pytest.fixture
def policy(conn: aiosqlite.Connection, planner: PromptPlanner) -> GuildPolicy:
    return GuildPolicy(conn, prompts=planner)


@pytest.fixture
async def services(
    history: History, policy: GuildPolicy, planner: PromptPlanner
) -> AsyncIterator[SimpleNamespace]:
    """The services ``checked_upload`` reads."""
    picture_work = PictureWork()
    yield SimpleNamespace(
        history=history, guild_policy=policy, prompts=planner, picture_work=picture_work
    )
    picture_work.close()


async def withdraw(conn: aiosqlite.Connection, history: History, job_id: str) -> None:
    """A moderator deletes the job's result."""
    [posted] = await journal.first_posts_in(conn, job_id, CHANNEL, **SNOWFLAKE_CLOCK)
    assert await history.withdraw_deleted(GUILD, CHANNEL, [posted]) == [job_id]


@pytest.fixture
def history(conn: aiosqlite.Connection, tmp_path: Path) -> History:
    return History(conn, tmp_path, tmp_path, MemberSettings(conn))


async def test_each_stored_picture_is_known_by_its_pixels_in_its_server(
    conn: aiosqlite.Connection, tmp_path: Path, history: History
) -> None:
    """Rendered in process (from the engine's pixels) or by a worker (from its PNG), a
    result's copy without its text is found among its server's jobs, not another's."""
    for engine, seed in ((InstantEngine(), 1), (WorkerEngine(), 2)):
        job_id, posted = await rendered_job(conn, tmp_path / "images", engine, seed)
        digest = pixel_digest_of(resaved(posted))
        [image] = await journal.images_of(conn, job_id)
        assert image.pixel_digest == digest, type(engine).__name__
        found = await history.jobs_with_picture(GUILD, digest)
        assert [job.job_id for job in found] == [job_id]
        assert await history.jobs_with_picture(OTHER_GUILD, digest) == []


async def test_an_upload_of_a_withdrawn_pictures_pixels_is_refused_in_its_server_only(
    conn: aiosqlite.Connection, tmp_path: Path, history: History, services: SimpleNamespace
) -> None:
    withdrawn, posted = await rendered_job(conn, tmp_path / "images", InstantEngine(), 1)
    _, shown_posted = await rendered_job(conn, tmp_path / "images", InstantEngine(), 2)
    await withdraw(conn, history, withdrawn)
    copy, shown_copy = resaved(posted), resaved(shown_posted)
    here, elsewhere = (uploading_in(guild, services) for guild in (GUILD, OTHER_GUILD))

    with pytest.raises(UserError, match=re.escape(WITHDRAWN_PICTURE)):
        await checked_upload(here, "holiday.png", copy)
    # Another server's moderators withdrew nothing; a picture still shown changes nothing.
    assert (await checked_upload(elsewhere, "holiday.png", copy)).image.data == copy
    accepted = await checked_upload(here, "sunset.png", shown_copy)
    assert accepted.image.data == shown_copy
    # A picture stored before its digest was recorded (migration 0014) is not recognised.
    await conn.execute("UPDATE images SET pixel_digest = NULL WHERE job_id = ?", (withdrawn,))
    assert (await checked_upload(here, "holiday.png", copy)).image.data == copy


@pytest.mark.parametrize("engine", [InstantEngine(), WorkerEngine()], ids=["here", "worker"])
async def test_the_grid_a_job_of_several_was_posted_as_is_known_by_its_pixels(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    history: History,
    services: SimpleNamespace,
    engine: InstantEngine,
) -> None:
    """A job of two pictures is posted, deleted by a moderator and saved by a member as one
    grid: a copy of that grid without its text is refused once the job is withdrawn."""
    job_id, grid = await rendered_job(conn, tmp_path / "images", engine, 1, count=2)
    grid_copy = resaved(grid)
    here = uploading_in(GUILD, services)
    assert (await checked_upload(here, "grid.png", grid_copy)).image.data == grid_copy
    await withdraw(conn, history, job_id)
    with pytest.raises(UserError, match=re.escape(WITHDRAWN_PICTURE)):
        await checked_upload(here, "grid.png", grid_copy)


async def test_a_picture_of_an_age_restricted_channel_stays_in_those_whatever_its_name(
    conn: aiosqlite.Connection, tmp_path: Path, services: SimpleNamespace
) -> None:
    """The rule a picture named by its file follows (``check_stored_pictures_usable``): made
    in an age-restricted channel (journaled so, or its channel is one now), used only in one."""
    _, restricted = await rendered_job(
        conn, tmp_path / "images", InstantEngine(), 1, age_restricted=True
    )
    _, plain = await rendered_job(conn, tmp_path / "images", InstantEngine(), 2)
    restricted_copy, plain_copy = resaved(restricted), resaved(plain)
    plain_channel = uploading_in(GUILD, services)
    with pytest.raises(UserError, match=re.escape(AGE_RESTRICTED_PICTURE)):
        await checked_upload(plain_channel, "cat.png", restricted_copy)
    restricted_channel = uploading_in(GUILD, services, here_age_restricted=True)
    assert (await checked_upload(restricted_channel, "cat.png", restricted_copy)).image.data
    # Its channel made age-restricted since: the journaled flag (no) does not free it.
    assert (await checked_upload(plain_channel, "cat.png", plain_copy)).image.data
    flagged_since = uploading_in(GUILD, services, made_in_age_restricted_now=True)
    with pytest.raises(UserError, match=re.escape(AGE_RESTRICTED_PICTURE)):
        await checked_upload(flagged_since, "cat.png", plain_copy)


async def test_a_shown_match_is_read_once_and_a_read_not_done_in_time_is_no_match(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    policy: GuildPolicy,
    planner: PromptPlanner,
    services: SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two jobs still shown with the same pixels (same seed and prompt): only the newest's
    texts are read for words banned since; a read that cannot finish (``STORED_TOO_LONG``)
    refuses nothing, which would tell the uploader such a picture exists."""
    for _ in range(2):
        _, posted = await rendered_job(conn, tmp_path / "images", InstantEngine(), 1)
    copy = resaved(posted)
    await policy.change_list(GUILD, MEMBER, GuildList.BANNED_WORD, "lighthouse", add=True)
    here = uploading_in(GUILD, services)
    reads: list[Sequence[str]] = []

    async def clean(texts: Sequence[str], *_: object, **__: object) -> None:
        reads.append(texts)

    async def too_long(texts: Sequence[str], *_: object, **__: object) -> None:
        raise UserError(STORED_TOO_LONG)

    for read in (clean, too_long):
        # A word banned anew: the server's verdicts kept so far are read again.
        await policy.change_list(GUILD, MEMBER, GuildList.BANNED_WORD, read.__name__, add=True)
        with monkeypatch.context() as patched:
            patched.setattr(planner, "check_stored", read)
            assert (await checked_upload(here, "kite.png", copy)).image.data == copy
    assert len(reads) == 1
    with pytest.raises(UserError, match=re.escape(BANNED_SINCE)):
        await checked_upload(here, "kite.png", copy)


async def test_a_journaled_age_flag_refuses_though_discord_fails_on_another_match(
    conn: aiosqlite.Connection, tmp_path: Path, services: SimpleNamespace
) -> None:
    """Two jobs with the same pixels: the older journaled as age-restricted, the newer's
    channel not cached and Discord failing on it. The flag is read before Discord is asked."""
    await rendered_job(conn, tmp_path / "images", InstantEngine(), 1, age_restricted=True)
    _, posted = await rendered_job(conn, tmp_path / "images", InstantEngine(), 1)
    uncached = SimpleNamespace(get_channel_or_thread=lambda _: None)

    async def failing_fetch(_: int) -> None:
        raise TimeoutError

    here = uploading_in(GUILD, services)
    here.client.get_guild = lambda _: uncached
    here.client.fetch_channel = failing_fetch
    with pytest.raises(UserError, match=re.escape(AGE_RESTRICTED_PICTURE)):
        await checked_upload(here, "twin.png", resaved(posted))


# Under any PNG of the engine's (its text alone is longer): posted as a JPEG preview.
LIMIT = 100


@pytest.mark.parametrize("count", [1, 2], ids=["picture", "grid"])
async def test_the_jpeg_preview_posted_in_place_of_a_too_large_result_is_known(
    conn: aiosqlite.Connection,
    tmp_path: Path,
    history: History,
    services: SimpleNamespace,
    count: int,
) -> None:
    """A server whose upload limit is under the result's size gets a JPEG preview: the file a
    moderator deletes and a member saves, refused once the job is withdrawn."""
    job_id, png = await rendered_job(
        conn, tmp_path / "images", InstantEngine(), 1, count=count, filesize_limit=LIMIT
    )
    preview = posted_file(png, LIMIT)
    assert preview.is_preview
    here = uploading_in(GUILD, services)
    await withdraw(conn, history, job_id)
    with pytest.raises(UserError, match=re.escape(WITHDRAWN_PICTURE)):
        await checked_upload(here, "saved.jpg", preview.data)


async def test_an_upload_of_an_easel_picture_names_its_job_in_its_server_only(
    conn: aiosqlite.Connection, tmp_path: Path, services: SimpleNamespace
) -> None:
    """The job a copy's pixels are is the parent of a job made of it (withdrawn with it);
    another server's job, or a picture Easel never made, is none."""
    job_id, posted = await rendered_job(conn, tmp_path / "images", InstantEngine(), 1)
    here, elsewhere = (uploading_in(guild, services) for guild in (GUILD, OTHER_GUILD))
    assert (await checked_upload(here, "holiday.png", resaved(posted))).made_from == job_id
    assert (await checked_upload(elsewhere, "holiday.png", resaved(posted))).made_from is None
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "navy").save(buffer, format="PNG")
    assert (await checked_upload(here, "mine.png", buffer.getvalue())).made_from is None
